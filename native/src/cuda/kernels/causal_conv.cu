// causal_conv forward/backward: one thread per (token, channel), channels contiguous so a warp
// reads 32 neighbouring channels of one token; the weight gradient as per-chunk column partials.
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

// h, c: [B, S, D] bf16  w: [D, K] bf16
__global__ void causal_conv_forward_kernel(const __nv_bfloat16* __restrict__ h, const __nv_bfloat16* __restrict__ w,
                                           int64_t N, int64_t S, int64_t D, int64_t K, __nv_bfloat16* __restrict__ c) {
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < N * D; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = e / D, d = e - i * D, t = i % S;
        float acc = 0.0f;
        for (int64_t j = 0; j < K; ++j) {
            const int64_t back = (K - 1) - j;  // h[t - back] of the same sequence
            if (t - back < 0) continue;
            acc += kern::ld(w + d * K + j) * kern::ld(h + (i - back) * D + d);
        }
        c[e] = kern::bf(acc);
    }
}

// dh[s] = sum_j w[:, j] dc[s + (K-1) - j] within the sequence.  dc, dh: [B, S, D] f32
__global__ void causal_conv_backward_dh_kernel(const __nv_bfloat16* __restrict__ w, const float* __restrict__ dc,
                                               int64_t N, int64_t S, int64_t D, int64_t K, float* __restrict__ dh) {
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < N * D; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = e / D, d = e - i * D, s = i % S;
        float acc = 0.0f;
        for (int64_t j = 0; j < K; ++j) {
            const int64_t ahead = (K - 1) - j;
            if (s + ahead >= S) continue;
            acc += kern::ld(w + d * K + j) * dc[(i + ahead) * D + d];
        }
        dh[e] = acc;
    }
}

// part[chunk, d*K + j] = sum over the chunk's rows t of dc[t, d] h[t - (K-1) + j, d].  grid: (ceil(D/256), chunks, K)
__global__ void causal_conv_backward_dw_kernel(const __nv_bfloat16* __restrict__ h, const float* __restrict__ dc,
                                               int64_t N, int64_t S, int64_t D, int64_t K, int64_t rows,
                                               float* __restrict__ part) {
    const int64_t d = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (d >= D) return;
    const int64_t j = blockIdx.z, back = (K - 1) - j;
    const int64_t r0 = blockIdx.y * rows, r1 = r0 + rows < N ? r0 + rows : N;
    float acc = 0.0f;
    for (int64_t i = r0; i < r1; ++i) {
        if (i % S < back) continue;
        acc += dc[i * D + d] * kern::ld(h + (i - back) * D + d);
    }
    part[blockIdx.y * D * K + d * K + j] = acc;
}

}  // namespace

void causal_conv_forward(Device& d, const __nv_bfloat16* h, const __nv_bfloat16* w, int64_t B, int64_t S,
                         int64_t D, int64_t K, __nv_bfloat16* c) {
    const int64_t N = B * S;
    if (N <= 0) return;
    causal_conv_forward_kernel<<<kern::grid_for(N * D, 256), 256, 0, stream(d)>>>(h, w, N, S, D, K, c);
    check_launch("causal_conv_forward");
}

void causal_conv_backward(Device& d, const __nv_bfloat16* h, const __nv_bfloat16* w, const float* dc, int64_t B,
                          int64_t S, int64_t D, int64_t K, float* dh, float* dw, DeviceBuffer& scratch) {
    const int64_t N = B * S;
    if (N <= 0) return;
    causal_conv_backward_dh_kernel<<<kern::grid_for(N * D, 256), 256, 0, stream(d)>>>(w, dc, N, S, D, K, dh);
    check_launch("causal_conv_backward_dh");
    const int64_t rows = partial_rows(N), chunks = (N + rows - 1) / rows;
    scratch.ensure(d, static_cast<std::size_t>(chunks * D * K) * sizeof(float));
    const dim3 g(static_cast<unsigned>((D + 255) / 256), static_cast<unsigned>(chunks), static_cast<unsigned>(K));
    causal_conv_backward_dw_kernel<<<g, 256, 0, stream(d)>>>(h, dc, N, S, D, K, rows, scratch.as<float>());
    check_launch("causal_conv_backward_dw");
    reduce_partials(d, scratch.as<float>(), chunks, D * K, dw);
}

}  // namespace hspmn::cuda
