// find_non_finite: every thread scans a strided range and the first NaN/Inf index wins by atomicMin
// (the result is the minimum whatever the scheduling).
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

// data: [numel] bf16 or f32  first: [1] u64, numel when none (set by the launcher)
template <bool kBf16>
__global__ void non_finite_kernel(const void* __restrict__ data, int64_t numel, unsigned long long* first) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < numel; i += (int64_t)gridDim.x * blockDim.x) {
        bool bad;
        if (kBf16) {
            const uint16_t h = static_cast<const uint16_t*>(data)[i];
            bad = (h & 0x7f80u) == 0x7f80u;
        } else {
            const uint32_t u = static_cast<const uint32_t*>(data)[i];
            bad = (u & 0x7f800000u) == 0x7f800000u;
        }
        if (bad) {
            atomicMin(first, static_cast<unsigned long long>(i));
            return;  // later indices of this thread are larger
        }
    }
}

__global__ void fill_u64_kernel(unsigned long long* p, unsigned long long v) { *p = v; }

}  // namespace

void non_finite_scan(Device& d, const void* data, bool is_bf16, int64_t numel, unsigned long long* first) {
    fill_u64_kernel<<<1, 1, 0, stream(d)>>>(first, static_cast<unsigned long long>(numel));
    check_launch("non_finite_fill");
    if (numel <= 0) return;
    const unsigned grid = kern::grid_for(numel, 256, 4096);
    if (is_bf16)
        non_finite_kernel<true><<<grid, 256, 0, stream(d)>>>(data, numel, first);
    else
        non_finite_kernel<false><<<grid, 256, 0, stream(d)>>>(data, numel, first);
    check_launch("non_finite");
}

}  // namespace hspmn::cuda
