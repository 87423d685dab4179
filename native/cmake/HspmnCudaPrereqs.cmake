# The CUDA backend's build prerequisites besides nvcc: cublasLt.h (headers only: the library is opened
# at run time) and a Python with Triton (it compiles the attention kernels at build time). Sets
# HSPMN_CUBLASLT_INCLUDE_DIR and _hspmn_cuda_missing (why the backend cannot be built,
# empty when it can). Checked before enable_language(CUDA) so that HSPMN_CUDA=AUTO can fall back to a
# CPU-only build (a fresh clone before ci/venv.sh has nvcc but neither) instead of failing to configure.
set(_hspmn_cuda_missing "")

# ---- cuBLASLt headers ----
set(HSPMN_CUBLAS_ROOT "" CACHE PATH "Folder whose include/ has cublasLt.h (default: the CUDA toolkit, then the venv's nvidia-cublas wheel)")
set(_hspmn_cublas_hints)
if(HSPMN_CUBLAS_ROOT)
  list(APPEND _hspmn_cublas_hints "${HSPMN_CUBLAS_ROOT}/include" "${HSPMN_CUBLAS_ROOT}")
endif()
list(APPEND _hspmn_cublas_hints ${CUDAToolkit_INCLUDE_DIRS})
file(GLOB _hspmn_venv_cublas
  "${HSPMN_REPO_ROOT}/.venv/lib/python3*/site-packages/nvidia/cu*/include"
  "${HSPMN_REPO_ROOT}/.venv/lib/python3*/site-packages/nvidia/cublas/include")
list(APPEND _hspmn_cublas_hints ${_hspmn_venv_cublas})
find_path(HSPMN_CUBLASLT_INCLUDE_DIR cublasLt.h HINTS ${_hspmn_cublas_hints} NO_DEFAULT_PATH)
# a value given with -D skips the search: check it still holds the header
if(NOT HSPMN_CUBLASLT_INCLUDE_DIR OR NOT EXISTS "${HSPMN_CUBLASLT_INCLUDE_DIR}/cublasLt.h")
  string(APPEND _hspmn_cuda_missing "cublasLt.h not found (HSPMN_CUBLASLT_INCLUDE_DIR=${HSPMN_CUBLASLT_INCLUDE_DIR}; "
                                    "looked in: ${_hspmn_cublas_hints}). Run ci/venv.sh (installs the nvidia-cublas wheel "
                                    "into .venv), or pass -DHSPMN_CUBLAS_ROOT=<dir with include/cublasLt.h>. ")
else()
  message(STATUS "hspmn: cublasLt.h from ${HSPMN_CUBLASLT_INCLUDE_DIR}")
endif()

# ---- Triton (HSPMN_PYTHON: see CMakeLists.txt) ----
execute_process(COMMAND "${HSPMN_PYTHON}" -c "import triton; print(triton.__version__)"
  RESULT_VARIABLE _hspmn_triton_rc OUTPUT_VARIABLE _hspmn_triton_version ERROR_VARIABLE _hspmn_triton_err
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _hspmn_triton_rc EQUAL 0)
  string(REGEX REPLACE ".*\n([^\n]+)\n*$" "\\1" _hspmn_triton_err "\n${_hspmn_triton_err}") # its last line
  string(APPEND _hspmn_cuda_missing "Triton is not importable by HSPMN_PYTHON=${HSPMN_PYTHON} (${_hspmn_triton_err}); "
                                    "it compiles the attention kernels at build time. Run ci/venv.sh (makes .venv with "
                                    "triton==3.6.0), or `pip install triton==3.6.0` and pass -DHSPMN_PYTHON=<that python>. ")
else()
  message(STATUS "hspmn: Triton ${_hspmn_triton_version} from ${HSPMN_PYTHON}")
endif()
