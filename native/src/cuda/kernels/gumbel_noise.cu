// gumbel_noise: a device copy of core/philox.h (kept host-only so its host behaviour cannot move);
// same counter layout (s, b, layer, step), key = seed halves, u from the top 24 bits, -ln(-ln u) in f64.
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

__device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint32_t k0, uint32_t k1) {
    constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += W0;
            k1 += W1;
        }
        const uint32_t hi0 = __umulhi(M0, c.x), lo0 = M0 * c.x;
        const uint32_t hi1 = __umulhi(M1, c.z), lo1 = M1 * c.z;
        c = make_uint4(hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0);
    }
    return c;
}

// out: [B, S] f32
__global__ void gumbel_noise_kernel(uint64_t seed, int64_t step, int32_t layer, int64_t B, int64_t S,
                                    float* __restrict__ out) {
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < B * S; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t b = e / S, s = e - b * S;
        const uint4 ctr = make_uint4(static_cast<uint32_t>(s), static_cast<uint32_t>(b), static_cast<uint32_t>(layer),
                                     static_cast<uint32_t>(static_cast<uint64_t>(step) & 0xffffffffu));
        const uint4 r = philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
        const double u = (static_cast<double>(r.x >> 8) + 0.5) * (1.0 / 16777216.0);
        out[e] = static_cast<float>(-log(-log(u)));
    }
}

}  // namespace

void gumbel_noise_kernel_launch(Device& d, uint64_t seed, int64_t step, int32_t layer, int64_t B, int64_t S,
                                float* out) {
    if (B * S <= 0) return;
    gumbel_noise_kernel<<<kern::grid_for(B * S, 256), 256, 0, stream(d)>>>(seed, step, layer, B, S, out);
    check_launch("gumbel_noise");
}

}  // namespace hspmn::cuda
