# The CUDA backend of libhspmn (included after add_library(hspmn) when HSPMN_WITH_CUDA).
#
#  - CUDA runtime linked statically (libcudart_static loads the driver lazily), driver API through
#    cudaGetDriverEntryPoint, cuBLASLt through dlopen: libhspmn.so still loads on a machine with no
#    CUDA driver, no CUDA runtime and no cuBLAS; a CUDA context there answers NO_DEVICE.
#  - The Triton attention kernels are AOT-compiled here (native/kernels/triton/aot_compile.py) and
#    embedded into the library as byte arrays plus launch metadata.
#  - hspmn_cuda_runtime: the runtime pieces (device, cuBLASLt gemm, Triton launcher) as a static
#    library, so the hspmn_cuda test program can call them without exporting anything.

# ---- cuBLASLt headers (only headers: the library is opened at run time) ----
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
if(NOT HSPMN_CUBLASLT_INCLUDE_DIR)
  message(FATAL_ERROR "CUDA backend: cublasLt.h not found (looked in: ${_hspmn_cublas_hints}). "
                      "Run ci/venv.sh (installs the nvidia-cublas wheel into .venv), or pass "
                      "-DHSPMN_CUBLAS_ROOT=<dir with include/cublasLt.h>, or build with -DHSPMN_CUDA=OFF")
endif()
message(STATUS "hspmn: cublasLt.h from ${HSPMN_CUBLASLT_INCLUDE_DIR}")

# ---- Triton: AOT compile + embed ----
if(NOT HSPMN_PYTHON)
  if(EXISTS "${HSPMN_REPO_ROOT}/.venv/bin/python")
    set(_hspmn_python_default "${HSPMN_REPO_ROOT}/.venv/bin/python")
  else()
    set(_hspmn_python_default python3)
  endif()
  set(HSPMN_PYTHON "${_hspmn_python_default}" CACHE STRING "Python with Triton 3.6 (compiles the attention kernels)")
endif()
execute_process(COMMAND "${HSPMN_PYTHON}" -c "import triton; print(triton.__version__)"
  RESULT_VARIABLE _hspmn_triton_rc OUTPUT_VARIABLE _hspmn_triton_version ERROR_VARIABLE _hspmn_triton_err
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _hspmn_triton_rc EQUAL 0)
  message(FATAL_ERROR "CUDA backend: Triton is not importable by HSPMN_PYTHON=${HSPMN_PYTHON}; it compiles the "
                      "attention kernels at build time. Run ci/venv.sh (makes .venv with triton==3.6.0), or "
                      "`pip install triton==3.6.0` and pass -DHSPMN_PYTHON=<that python>, or build without CUDA: "
                      "-DHSPMN_CUDA=OFF.\n${_hspmn_triton_err}")
endif()
message(STATUS "hspmn: Triton ${_hspmn_triton_version} from ${HSPMN_PYTHON}")

set(_hspmn_triton_dir "${HSPMN_REPO_ROOT}/native/kernels/triton")
file(GLOB _hspmn_triton_inputs CONFIGURE_DEPENDS "${_hspmn_triton_dir}/*.py")
set(_hspmn_triton_out "${CMAKE_CURRENT_BINARY_DIR}/triton")
set(_hspmn_triton_cpp "${CMAKE_CURRENT_BINARY_DIR}/generated/triton_kernels.cpp")
set(_hspmn_aot_commands)
set(_hspmn_aot_dirs)
foreach(arch IN LISTS HSPMN_CUDA_ARCHS)
  list(APPEND _hspmn_aot_commands
    COMMAND "${HSPMN_PYTHON}" "${_hspmn_triton_dir}/aot_compile.py" --arch ${arch} --out "${_hspmn_triton_out}/sm${arch}")
  list(APPEND _hspmn_aot_dirs "${_hspmn_triton_out}/sm${arch}")
endforeach()
add_custom_command(
  OUTPUT "${_hspmn_triton_cpp}"
  COMMAND ${CMAKE_COMMAND} -E rm -rf "${_hspmn_triton_out}"
  ${_hspmn_aot_commands}
  COMMAND "${HSPMN_PYTHON}" "${CMAKE_CURRENT_SOURCE_DIR}/cmake/embed_triton.py" --out "${_hspmn_triton_cpp}" ${_hspmn_aot_dirs}
  DEPENDS ${_hspmn_triton_inputs} "${CMAKE_CURRENT_SOURCE_DIR}/cmake/embed_triton.py"
  COMMENT "Triton: AOT-compiling sqdk_attention for sm ${HSPMN_CUDA_ARCHS} and embedding the cubins"
  VERBATIM)

# ---- the runtime pieces ----
add_library(hspmn_cuda_runtime STATIC
  src/cuda/runtime.cpp
  src/cuda/driver_api.cpp
  src/cuda/cublaslt.cpp
  src/cuda/gemm.cpp
  src/cuda/attention.cpp
  "${_hspmn_triton_cpp}")
target_include_directories(hspmn_cuda_runtime
  PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda
  SYSTEM PUBLIC ${CUDAToolkit_INCLUDE_DIRS} ${HSPMN_CUBLASLT_INCLUDE_DIR})
target_compile_options(hspmn_cuda_runtime PRIVATE -Wall -Wextra -ffunction-sections -fdata-sections $<$<CONFIG:Release>:-O3>)
set_target_properties(hspmn_cuda_runtime PROPERTIES POSITION_INDEPENDENT_CODE ON
  CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
# Static runtime (no libcudart.so dependency); dl for dlopen of cuBLASLt.
target_link_libraries(hspmn_cuda_runtime PUBLIC CUDA::cudart_static ${CMAKE_DL_LIBS} Threads::Threads)

# ---- the backend inside libhspmn ----
set(_hspmn_gencode)
foreach(arch IN LISTS HSPMN_CUDA_ARCHS)
  list(APPEND _hspmn_gencode "-gencode=arch=compute_${arch},code=sm_${arch}")
endforeach()
# One file per op under kernels/: globbed so a new op file needs no edit here.
file(GLOB _hspmn_cuda_kernels CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/kernels/*.cu")
target_sources(hspmn PRIVATE src/cuda/cuda_backend.cpp src/cuda/cuda_block.cu src/cuda/cuda_block_rows.cu
  src/cuda/cuda_block_chunked.cu src/cuda/cuda_block_decode.cu src/cuda/cuda_block_step.cu src/cuda/stream_graph.cpp
  ${_hspmn_cuda_kernels})
# sample_tokens must match the CPU bit for bit: it rounds every float step explicitly, and no other
# multiply-add of the file may be fused either.
set_source_files_properties(src/cuda/kernels/sample_tokens.cu PROPERTIES COMPILE_OPTIONS "--fmad=false")
target_compile_definitions(hspmn PRIVATE HSPMN_WITH_CUDA=1)
list(APPEND _hspmn_gencode -Xcompiler=-ffunction-sections,-fdata-sections --expt-relaxed-constexpr)
target_compile_options(hspmn PRIVATE
  "$<$<COMPILE_LANGUAGE:CUDA>:${_hspmn_gencode}>"
  "$<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<CONFIG:Release>>:-O3>")
set_target_properties(hspmn PROPERTIES CUDA_ARCHITECTURES OFF CUDA_RUNTIME_LIBRARY Static
  CUDA_SEPARABLE_COMPILATION OFF CUDA_VISIBILITY_PRESET hidden)
target_link_libraries(hspmn PRIVATE hspmn_cuda_runtime)
