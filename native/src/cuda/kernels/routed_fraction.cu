// routed_fraction: the share of tokens a block's routing selected, summed from the device-side
// counts so the language model's per-layer statistic costs no host sync. noise_free_fraction: the
// share with l > 0 (what threshold routing selects without noise), the router bias controller's
// measure, from the logits a training forward keeps.
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

// l: [N] f32  out: [1] f32 = count(l > 0) / N, the quotient in double.  One block of 256: N is B * S
// router logits, a few thousand to a few hundred thousand, read once per layer and step.
__global__ void __launch_bounds__(256) noise_free_fraction_kernel(const float* __restrict__ l, int64_t N,
                                                                  float* __restrict__ out) {
    __shared__ long long scratch[32];
    long long n = 0;
    for (int64_t i = threadIdx.x; i < N; i += 256) n += l[i] > 0.0f ? 1 : 0;
    n = kern::block_sum(n, scratch);
    if (threadIdx.x == 0) out[0] = static_cast<float>(static_cast<double>(n) / static_cast<double>(N));
}

}  // namespace

void routed_fraction(Device& d, const int32_t* counts, int64_t B, int64_t S, float* out) {
    routed_fraction_kernel<<<1, 256, 0, stream(d)>>>(counts, B, S, out);
    check_launch("routed_fraction");
}

void noise_free_fraction(Device& d, const float* l, int64_t N, float* out) {
    noise_free_fraction_kernel<<<1, 256, 0, stream(d)>>>(l, N, out);
    check_launch("noise_free_fraction");
}

}  // namespace hspmn::cuda
