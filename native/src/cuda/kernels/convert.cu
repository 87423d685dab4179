// bf16 <-> f32 of whole buffers (16-byte aligned: device allocations), and the in-order sum of
// column partials that every weight gradient summed over tokens ends with (deterministic: no
// atomics, fixed chunking).
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

// 8 values a thread (16-byte bf16 side, two 16-byte f32 sides), then the tail one by one.
// src: [n] bf16  dst: [n] f32
__global__ void bf16_to_f32_kernel(const __nv_bfloat16* __restrict__ src, float* __restrict__ dst, int64_t n) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x, first = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    for (int64_t v = first; v < n / 8; v += stride) {
        float f[8];
        kern::load8(src + v * 8, f);
        reinterpret_cast<float4*>(dst + v * 8)[0] = make_float4(f[0], f[1], f[2], f[3]);
        reinterpret_cast<float4*>(dst + v * 8)[1] = make_float4(f[4], f[5], f[6], f[7]);
    }
    for (int64_t i = (n / 8) * 8 + first; i < n; i += stride) dst[i] = __bfloat162float(src[i]);
}

// src: [n] f32  dst: [n] bf16
__global__ void f32_to_bf16_kernel(const float* __restrict__ src, __nv_bfloat16* __restrict__ dst, int64_t n) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x, first = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    for (int64_t v = first; v < n / 8; v += stride) {
        const float4 a = reinterpret_cast<const float4*>(src + v * 8)[0];
        const float4 b = reinterpret_cast<const float4*>(src + v * 8)[1];
        const float f[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
        kern::store8(dst + v * 8, f);
    }
    for (int64_t i = (n / 8) * 8 + first; i < n; i += stride) dst[i] = __float2bfloat16_rn(src[i]);
}

// part: [chunks, n] f32  dst: [n] f32 (+)=
__global__ void reduce_partials_kernel(const float* __restrict__ part, int64_t chunks, int64_t n, float* dst) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int64_t c = 0; c < chunks; ++c) s += part[c * n + i];
        dst[i] += s;
    }
}

}  // namespace

void bf16_to_f32(Device& d, const __nv_bfloat16* src, float* dst, int64_t n) {
    if (n <= 0) return;
    bf16_to_f32_kernel<<<kern::grid_for((n + 7) / 8, 256), 256, 0, stream(d)>>>(src, dst, n);
    check_launch("bf16_to_f32");
}

void f32_to_bf16(Device& d, const float* src, __nv_bfloat16* dst, int64_t n) {
    if (n <= 0) return;
    f32_to_bf16_kernel<<<kern::grid_for((n + 7) / 8, 256), 256, 0, stream(d)>>>(src, dst, n);
    check_launch("f32_to_bf16");
}

void reduce_partials(Device& d, const float* part, int64_t chunks, int64_t n, float* dst) {
    if (n <= 0 || chunks <= 0) return;
    reduce_partials_kernel<<<kern::grid_for(n, 256), 256, 0, stream(d)>>>(part, chunks, n, dst);
    check_launch("reduce_partials");
}

int64_t partial_rows(int64_t N) {
    // At most 256 chunks, at least 64 rows each: enough blocks to fill the device, a small partial buffer.
    int64_t r = (N + 255) / 256;
    return r < 64 ? 64 : r;
}

}  // namespace hspmn::cuda
