# Resolves HSPMN_CUDA (AUTO|ON|OFF) into HSPMN_WITH_CUDA and enables the CUDA language when on.
# AUTO builds the backend when CMake finds nvcc, cublasLt.h and Triton (HspmnCudaPrereqs.cmake), and
# otherwise builds CPU-only with a warning that says what is missing; ON requires them; OFF never looks.
include(CheckLanguage)

set(HSPMN_CUDA_ARCHS "90" CACHE STRING "CUDA compute capabilities to build for (list of 80, 89, 90, 100, 120)")

set(HSPMN_WITH_CUDA OFF)
if(NOT HSPMN_CUDA STREQUAL "OFF")
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    find_package(CUDAToolkit QUIET) # its include folder is one place cublasLt.h may be
    include(${CMAKE_CURRENT_LIST_DIR}/HspmnCudaPrereqs.cmake)
    if(NOT _hspmn_cuda_missing)
      set(HSPMN_WITH_CUDA ON)
    elseif(HSPMN_CUDA STREQUAL "ON")
      message(FATAL_ERROR "HSPMN_CUDA=ON but the CUDA backend cannot be built: ${_hspmn_cuda_missing}"
                          "Or build without it: -DHSPMN_CUDA=OFF.")
    else()
      message(WARNING "HSPMN_CUDA=AUTO: nvcc found, but building CPU-only (no CUDA backend): ${_hspmn_cuda_missing}"
                      "Then configure again (or pass -DHSPMN_CUDA=ON to make this an error).")
    endif()
  elseif(HSPMN_CUDA STREQUAL "ON")
    message(FATAL_ERROR "HSPMN_CUDA=ON but CMake found no CUDA compiler (nvcc): install the CUDA toolkit, "
                        "pass -DCMAKE_CUDA_COMPILER=/path/to/nvcc, or use -DHSPMN_CUDA=OFF")
  endif()
endif()

if(HSPMN_WITH_CUDA)
  foreach(arch IN LISTS HSPMN_CUDA_ARCHS)
    if(NOT arch MATCHES "^(80|89|90|100|120)$")
      message(FATAL_ERROR "HSPMN_CUDA_ARCHS: '${arch}' is not one of 80, 89, 90, 100, 120")
    endif()
  endforeach()
  # We pass -gencode ourselves (one per HSPMN_CUDA_ARCHS entry); keep CMake from adding its own.
  set(CMAKE_CUDA_ARCHITECTURES OFF)
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  find_package(CUDAToolkit REQUIRED)
endif()
