# The CUDA backend of libhspmn (included after add_library(hspmn) when HSPMN_WITH_CUDA).
#
#  - CUDA runtime linked statically (libcudart_static loads the driver lazily), driver API through
#    cudaGetDriverEntryPoint, cuBLASLt through dlopen: libhspmn.so still loads on a machine with no
#    CUDA driver, no CUDA runtime and no cuBLAS; a CUDA context there answers NO_DEVICE.
#  - The Triton kernels (attention: native/kernels/triton/aot_compile.py; swiglu_gemm, sm_90+:
#    aot_compile_swiglu_gemm.py) are AOT-compiled here and embedded into the library as byte arrays
#    plus launch metadata.
#  - hspmn_cuda_runtime: the runtime pieces (device, cuBLASLt gemm, Triton launcher) as a static
#    library, so the hspmn_cuda test program can call them without exporting anything.

# cublasLt.h and Triton were found by HspmnCudaPrereqs.cmake (HSPMN_CUBLASLT_INCLUDE_DIR, HSPMN_PYTHON).

# ---- Triton: AOT compile + embed ----
set(_hspmn_triton_dir "${HSPMN_REPO_ROOT}/native/kernels/triton")
file(GLOB _hspmn_triton_inputs CONFIGURE_DEPENDS "${_hspmn_triton_dir}/*.py")
set(_hspmn_triton_out "${CMAKE_CURRENT_BINARY_DIR}/triton")
set(_hspmn_triton_cpp "${CMAKE_CURRENT_BINARY_DIR}/generated/triton_kernels.cpp")
set(_hspmn_aot_commands)
set(_hspmn_aot_dirs)
foreach(arch IN LISTS HSPMN_CUDA_ARCHS)
  list(APPEND _hspmn_aot_commands
    COMMAND "${HSPMN_PYTHON}" "${_hspmn_triton_dir}/aot_compile.py" --arch ${arch} --out "${_hspmn_triton_out}/sm${arch}")
  if(arch GREATER_EQUAL 90)  # swiglu_gemm needs TMA
    list(APPEND _hspmn_aot_commands COMMAND "${HSPMN_PYTHON}" "${_hspmn_triton_dir}/aot_compile_swiglu_gemm.py"
      --arch ${arch} --out "${_hspmn_triton_out}/sm${arch}")
  endif()
  list(APPEND _hspmn_aot_dirs "${_hspmn_triton_out}/sm${arch}")
endforeach()
add_custom_command(
  OUTPUT "${_hspmn_triton_cpp}"
  COMMAND ${CMAKE_COMMAND} -E rm -rf "${_hspmn_triton_out}"
  ${_hspmn_aot_commands}
  COMMAND "${HSPMN_PYTHON}" "${CMAKE_CURRENT_SOURCE_DIR}/cmake/embed_triton.py" --out "${_hspmn_triton_cpp}" ${_hspmn_aot_dirs}
  DEPENDS ${_hspmn_triton_inputs} "${CMAKE_CURRENT_SOURCE_DIR}/cmake/embed_triton.py"
  COMMENT "Triton: AOT-compiling sqdk_attention and swiglu_gemm for sm ${HSPMN_CUDA_ARCHS} and embedding the cubins"
  VERBATIM)

# ---- the runtime pieces ----
add_library(hspmn_cuda_runtime STATIC
  src/cuda/runtime.cpp
  src/cuda/side_stream.cpp
  src/cuda/driver_api.cpp
  src/cuda/cublaslt.cpp
  src/cuda/gemm.cpp
  src/cuda/gemm_memo.cpp
  src/cuda/gemm_search.cpp
  src/cuda/triton_loader.cpp
  src/cuda/attention.cpp
  src/cuda/swiglu_gemm.cpp
  src/cuda/down_residual.cpp
  src/core/env_choice.cpp
  "${_hspmn_triton_cpp}")
target_include_directories(hspmn_cuda_runtime
  PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda
  SYSTEM PUBLIC ${CUDAToolkit_INCLUDE_DIRS} ${HSPMN_CUBLASLT_INCLUDE_DIR})
target_compile_options(hspmn_cuda_runtime PRIVATE -Wall -Wextra -ffunction-sections -fdata-sections $<$<CONFIG:Release>:-O3>)
set_target_properties(hspmn_cuda_runtime PROPERTIES POSITION_INDEPENDENT_CODE ON
  CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
# Static runtime (no libcudart.so dependency); dl for dlopen of cuBLASLt.
target_link_libraries(hspmn_cuda_runtime PUBLIC CUDA::cudart_static ${CMAKE_DL_LIBS} Threads::Threads)

# The hand-written Hopper kernels (wgmma, setmaxnreg: sm_90a only, so no other -gencode on them),
# built when the list holds 90; swiglu_gemm.cpp and down_residual.cpp reach them under HSPMN_SM90A.
if("90" IN_LIST HSPMN_CUDA_ARCHS)
  add_library(hspmn_sm90a OBJECT src/cuda/sm90a/swiglu_gemm_wgmma.cu src/cuda/sm90a/down_residual_wgmma.cu)
  target_include_directories(hspmn_sm90a SYSTEM PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_options(hspmn_sm90a PRIVATE -gencode=arch=compute_90a,code=sm_90a
    -Xcompiler=-ffunction-sections,-fdata-sections $<$<CONFIG:Release>:-O3>)
  set_target_properties(hspmn_sm90a PROPERTIES POSITION_INDEPENDENT_CODE ON CUDA_ARCHITECTURES OFF
    CUDA_RUNTIME_LIBRARY Static CUDA_VISIBILITY_PRESET hidden)
  target_sources(hspmn_cuda_runtime PRIVATE $<TARGET_OBJECTS:hspmn_sm90a>)
  target_compile_definitions(hspmn_cuda_runtime PRIVATE HSPMN_SM90A=1)
else()
  target_compile_definitions(hspmn_cuda_runtime PRIVATE HSPMN_SM90A=0)
endif()

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
