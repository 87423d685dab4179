// gumbel_noise: core/philox.h's draw with the device Philox of common.cuh; same counter layout
// (s, row_offset + b, layer, step), key = seed halves, u from the top 24 bits, -ln(-ln u) in f64.
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

using kern::philox4x32_10;

// out: [B, S] f32
__global__ void gumbel_noise_kernel(uint64_t seed, int64_t step, int32_t layer, int64_t B, int64_t S,
                                    int64_t row_offset, float* __restrict__ out) {
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < B * S; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t b = e / S, s = e - b * S;
        const uint4 ctr = make_uint4(static_cast<uint32_t>(s), static_cast<uint32_t>(row_offset + b),
                                     static_cast<uint32_t>(layer),
                                     static_cast<uint32_t>(static_cast<uint64_t>(step) & 0xffffffffu));
        const uint4 r = philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
        const double u = (static_cast<double>(r.x >> 8) + 0.5) * (1.0 / 16777216.0);
        out[e] = static_cast<float>(-log(-log(u)));
    }
}

}  // namespace

void gumbel_noise_kernel_launch(Device& d, uint64_t seed, int64_t step, int32_t layer, int64_t B, int64_t S,
                                float* out, int64_t row_offset) {
    if (B * S <= 0) return;
    gumbel_noise_kernel<<<kern::grid_for(B * S, 256), 256, 0, stream(d)>>>(seed, step, layer, B, S, row_offset, out);
    check_launch("gumbel_noise");
}

}  // namespace hspmn::cuda
