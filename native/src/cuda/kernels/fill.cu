// fill_f32: a float32 buffer set to one value (the language model's d_loss seeds and resets).
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

// dst: [n] f32
__global__ void fill_f32_kernel(float* __restrict__ dst, int64_t n, float value) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = value;
}

}  // namespace

void fill_f32(Device& d, float* dst, int64_t n, float value) {
    if (n <= 0) return;
    fill_f32_kernel<<<kern::grid_for(n, 256), 256, 0, stream(d)>>>(dst, n, value);
    check_launch("fill_f32");
}

}  // namespace hspmn::cuda
