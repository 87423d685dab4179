// Loading and launching the embedded Triton cubins (triton_kernels.h) with the driver API, for
// every kernel family: attention.cpp (sqdk_attention) and swiglu_gemm.cpp bind their own arguments.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "device.h"
#include "driver_api.h"
#include "triton_kernels.h"

namespace hspmn::cuda {

struct TritonLoaded {
    const TritonKernel* meta;
    CUmodule module;
    CUfunction fn;
};

// The embedded kernel `name` for `arch` (any when < 0) serving head_dim, or null. Of two serving
// it, the one serving fewest (an exact head-dim variant over the padded one). Kernels that take no
// head dim serve head_dim 0 alone.
const TritonKernel* triton_find(const char* name, int64_t head_dim, int arch);

// "sm_90, ..." for the error messages: the architectures the library carries cubins for.
std::string triton_built_archs();

// The same, loaded on d: every cubin built for d's architecture is loaded on the first call (a
// failure leaves nothing loaded, so the next call retries). Null when none serves.
const TritonLoaded* triton_loaded(Device& d, const char* name, int64_t head_dim);

// Launches l on d's stream over (gx, gy, 1) programs (nothing when either is 0). slot(name, size)
// returns the address of the value of each listed argument (throwing for one it does not know);
// Triton's scratch pointers are bound here, from the device's shared scratch buffer.
void triton_launch(Device& d, const TritonLoaded& l, int64_t gx, int64_t gy,
                   const std::function<void*(const char* name, int size)>& slot, const char* what);

}  // namespace hspmn::cuda
