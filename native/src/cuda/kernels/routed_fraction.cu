// routed_fraction: the share of tokens a block's routing selected, summed from the device-side
// counts so the language model's per-layer statistic costs no host sync.
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

// counts: [B] i32  out: [1] f32 = sum(counts) / (B * S), the quotient in double.  One block of 256.
__global__ void __launch_bounds__(256) routed_fraction_kernel(const int32_t* __restrict__ counts, int64_t B,
                                                              int64_t S, float* __restrict__ out) {
    __shared__ long long scratch[32];
    long long n = 0;
    for (int64_t b = threadIdx.x; b < B; b += 256) n += counts[b];
    n = kern::block_sum(n, scratch);
    if (threadIdx.x == 0) out[0] = static_cast<float>(static_cast<double>(n) / static_cast<double>(B * S));
}

}  // namespace

void routed_fraction(Device& d, const int32_t* counts, int64_t B, int64_t S, float* out) {
    routed_fraction_kernel<<<1, 256, 0, stream(d)>>>(counts, B, S, out);
    check_launch("routed_fraction");
}

}  // namespace hspmn::cuda
