// find_non_finite: every thread scans a strided range and the first NaN/Inf index wins by atomicMin
// (the result is the minimum whatever the scheduling).
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

__device__ __forceinline__ bool bad_bf16(uint32_t h) { return (h & 0x7f80u) == 0x7f80u; }
__device__ __forceinline__ bool bad_f32(uint32_t u) { return (u & 0x7f800000u) == 0x7f800000u; }

// 16-byte loads (8 bf16 or 4 f32) while whole vectors last, then the tail one by one.
// data: [numel] bf16 or f32 (vec: 16-byte aligned)  first: [1] u64, numel when none (set by the launcher)
template <bool kBf16>
__global__ void non_finite_kernel(const void* __restrict__ data, int64_t numel, bool vec, unsigned long long* first) {
    constexpr int kPer = kBf16 ? 8 : 4;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x, start = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    const int64_t nvec = vec ? numel / kPer : 0;
    for (int64_t v = start; v < nvec; v += stride) {
        const uint4 q = static_cast<const uint4*>(data)[v];
        const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int e = 0; e < kPer; ++e) {
            const bool bad = kBf16 ? bad_bf16(e & 1 ? w[e >> 1] >> 16 : w[e >> 1] & 0xffffu) : bad_f32(w[e]);
            if (bad) {
                atomicMin(first, static_cast<unsigned long long>(v * kPer + e));
                return;  // later indices of this thread are larger
            }
        }
    }
    for (int64_t i = nvec * kPer + start; i < numel; i += stride) {
        const bool bad = kBf16 ? bad_bf16(static_cast<const uint16_t*>(data)[i])
                               : bad_f32(static_cast<const uint32_t*>(data)[i]);
        if (bad) {
            atomicMin(first, static_cast<unsigned long long>(i));
            return;
        }
    }
}

__global__ void fill_u64_kernel(unsigned long long* p, unsigned long long v) { *p = v; }

}  // namespace

void non_finite_scan(Device& d, const void* data, bool is_bf16, int64_t numel, unsigned long long* first) {
    fill_u64_kernel<<<1, 1, 0, stream(d)>>>(first, static_cast<unsigned long long>(numel));
    check_launch("non_finite_fill");
    if (numel <= 0) return;
    const bool vec = reinterpret_cast<uintptr_t>(data) % 16 == 0;  // device allocations are; views may not be
    const unsigned grid = kern::grid_for((numel + 7) / 8, 256, 4096);
    if (is_bf16)
        non_finite_kernel<true><<<grid, 256, 0, stream(d)>>>(data, numel, vec, first);
    else
        non_finite_kernel<false><<<grid, 256, 0, stream(d)>>>(data, numel, vec, first);
    check_launch("non_finite");
}

}  // namespace hspmn::cuda
