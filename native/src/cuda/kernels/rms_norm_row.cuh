// One row's rms_norm statistic, shared by every kernel that normalises x (rms_norm.cu's single and
// pair forwards, rms_norm_conv.cu's fused entry): one function, so all of them get the same rstd bit
// for bit.
#pragma once

#include "common.cuh"

namespace hspmn::cuda::kern {

// rstd of row xr ([D] bf16) for the lanes of one warp: lane sums (8-wide loads when kVec), then the warp
// sum. The loads are unrolled so several are in flight; the sum's order (d ascending) is unchanged.
template <bool kVec>
__device__ __forceinline__ float row_rstd(const __nv_bfloat16* xr, int64_t D, float eps, int lane) {
    float ss = 0.0f;
    if (kVec) {
#pragma unroll 4
        for (int64_t d = lane * 8; d < D; d += 256) {
            float f[8];
            load8(xr + d, f);
#pragma unroll
            for (int i = 0; i < 8; ++i) ss += f[i] * f[i];
        }
    } else {
        for (int64_t d = lane; d < D; d += 32) {
            const float f = ld(xr + d);
            ss += f * f;
        }
    }
    ss = warp_sum(ss);
    return 1.0f / sqrtf(ss / static_cast<float>(D) + eps);
}

}  // namespace hspmn::cuda::kern
