// The few CUDA driver API functions libhspmn needs (loading and launching the embedded Triton
// cubins, encoding TMA descriptors), reached through the runtime's cudaGetDriverEntryPointByVersion:
// the library never links libcuda, so it still loads on a machine without a CUDA driver.
#pragma once

#include <cuda.h>

#include <cstdint>

namespace hspmn::cuda {

struct DriverApi {
    CUresult (*module_load_data)(CUmodule*, const void*);
    CUresult (*module_get_function)(CUfunction*, CUmodule, const char*);
    CUresult (*module_unload)(CUmodule);
    CUresult (*func_set_attribute)(CUfunction, CUfunction_attribute, int);
    CUresult (*launch_kernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                              CUstream, void**, void**);
    CUresult (*get_error_string)(CUresult, const char**);
    // The TMA descriptors of the sm_90a kernels (CUDA 12.0+).
    CUresult (*tensor_map_encode_tiled)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                        const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                        CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
};

// Resolved on first use, after the runtime has found a device (it loads the driver); throws
// Error{HSPMN_ERR_BACKEND} naming the missing entry point.
const DriverApi& driver_api();

// Throws Error{HSPMN_ERR_BACKEND} naming `what` when r is not CUDA_SUCCESS.
void check_cu(CUresult r, const char* what);

// The TMA descriptor of a [rows, cols] row-major bf16 matrix read in boxes of box_rows x box_cols
// (box_cols * 2 = 128 bytes: the 128-byte swizzle's row), zeros outside it; cols a multiple of 8 (16-byte
// row stride). Throws Error{HSPMN_ERR_BACKEND} naming `what` if the driver refuses it.
CUtensorMap bf16_tensor_map(const void* base, int64_t rows, int64_t cols, int box_rows, int box_cols, const char* what);

}  // namespace hspmn::cuda
