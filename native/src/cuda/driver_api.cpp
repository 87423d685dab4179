#include "driver_api.h"
#include "runtime.h"

#include <cuda_runtime.h>

#include "../core/error.h"

namespace hspmn::cuda {
namespace {

// The driver ABI version the prototypes above are written against (all exist since CUDA 11).
constexpr unsigned kDriverApiVersion = 12000;

template <class Fn>
void resolve(Fn& fn, const char* symbol) {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    cudaError_t e = cudaGetDriverEntryPointByVersion(symbol, &p, kDriverApiVersion, cudaEnableDefault, &found);
    if (e != cudaSuccess || found != cudaDriverEntryPointSuccess || !p) {
        (void)cudaGetLastError();
        fail(HSPMN_ERR_BACKEND, "driver entry point %s not found (%s, query result %d)", symbol,
             cudaGetErrorString(e), static_cast<int>(found));
    }
    fn = reinterpret_cast<Fn>(p);
}

DriverApi load() {
    DriverApi api{};
    resolve(api.module_load_data, "cuModuleLoadData");
    resolve(api.module_get_function, "cuModuleGetFunction");
    resolve(api.module_unload, "cuModuleUnload");
    resolve(api.func_set_attribute, "cuFuncSetAttribute");
    resolve(api.launch_kernel, "cuLaunchKernel");
    resolve(api.get_error_string, "cuGetErrorString");
    resolve(api.tensor_map_encode_tiled, "cuTensorMapEncodeTiled");
    return api;
}

}  // namespace

const DriverApi& driver_api() { return load_once(load); }

void check_cu(CUresult r, const char* what) {
    if (r == CUDA_SUCCESS) return;
    const char* msg = nullptr;
    if (driver_api().get_error_string(r, &msg) != CUDA_SUCCESS || !msg) msg = "unknown driver error";
    fail_status(is_sticky_error(static_cast<int>(r)), r == CUDA_ERROR_OUT_OF_MEMORY,
                format("%s: %s (CUresult %d)", what, msg, static_cast<int>(r)).c_str());
}

CUtensorMap bf16_tensor_map(const void* base, int64_t rows, int64_t cols, int box_rows, int box_cols,
                            const char* what) {
    CUtensorMap map;
    const cuuint64_t dims[2] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(rows)};
    const cuuint64_t strides[1] = {static_cast<cuuint64_t>(cols) * 2};
    const cuuint32_t box[2] = {static_cast<cuuint32_t>(box_cols), static_cast<cuuint32_t>(box_rows)};
    const cuuint32_t elem_strides[2] = {1, 1};
    check_cu(driver_api().tensor_map_encode_tiled(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(base),
                                                  dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                                  CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
             what);
    return map;
}

}  // namespace hspmn::cuda
