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

}  // namespace hspmn::cuda
