// Selected rows [B, C] <-> token rows [B*S]: row (b, j) is valid iff j < counts[b] and is token
// b*S + indices[b, j]. One block per selected row; columns strided over the block.
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

constexpr int kThreads = 128;

__device__ __forceinline__ int64_t token_of(const int32_t* indices, const int32_t* counts, int64_t r, int64_t S,
                                            int64_t C) {
    const int64_t b = r / C, j = r - b * C;
    return j < counts[b] ? b * S + indices[r] : -1;
}

// a: [B*S, D] bf16  a_sel: [B*C, D] bf16
__global__ void gather_selected_kernel(const __nv_bfloat16* __restrict__ a, const int32_t* __restrict__ indices,
                                       const int32_t* __restrict__ counts, int64_t S, int64_t C, int64_t D,
                                       __nv_bfloat16* __restrict__ a_sel) {
    const int64_t r = blockIdx.x, tok = token_of(indices, counts, r, S, C);
    __nv_bfloat16* dst = a_sel + r * D;
    if (tok < 0) {
        for (int64_t d = threadIdx.x; d < D; d += kThreads) dst[d] = kern::bf(0.0f);
        return;
    }
    const __nv_bfloat16* src = a + tok * D;
    if (D % 8 == 0) {
        for (int64_t d = threadIdx.x * 8; d < D; d += kThreads * 8)
            *reinterpret_cast<kern::Bf16x8*>(dst + d) = *reinterpret_cast<const kern::Bf16x8*>(src + d);
    } else {
        for (int64_t d = threadIdx.x; d < D; d += kThreads) dst[d] = src[d];
    }
}

// src: [B*C, D] bf16  dst: [B*S, D] f32 (+)=
__global__ void scatter_add_selected_kernel(const __nv_bfloat16* __restrict__ src, const int32_t* __restrict__ indices,
                                            const int32_t* __restrict__ counts, int64_t S, int64_t C, int64_t D,
                                            float* __restrict__ dst) {
    const int64_t r = blockIdx.x, tok = token_of(indices, counts, r, S, C);
    if (tok < 0) return;
    for (int64_t d = threadIdx.x; d < D; d += kThreads) dst[tok * D + d] += kern::ld(src + r * D + d);
}

// o: [B*C, D] f32  res: [B*S, D] f32 (+)=
__global__ void gate_scatter_forward_kernel(const float* __restrict__ o, const int32_t* __restrict__ indices,
                                            const int32_t* __restrict__ counts, int64_t S, int64_t C, int64_t D,
                                            float* __restrict__ res) {
    const int64_t r = blockIdx.x, tok = token_of(indices, counts, r, S, C);
    if (tok < 0) return;
    // y = 1 - sg(s) + s is exactly 1 in value; its gradient is taken in gate_scatter_backward.
    for (int64_t d = threadIdx.x; d < D; d += kThreads) res[tok * D + d] += o[r * D + d];
}

// res_sel, o: [B*C, D] f32  out: [B*S, D] bf16
__global__ void residual_out_selected_kernel(const float* __restrict__ res_sel, const float* __restrict__ o,
                                             const int32_t* __restrict__ indices, const int32_t* __restrict__ counts,
                                             int64_t S, int64_t C, int64_t D, __nv_bfloat16* __restrict__ out) {
    const int64_t r = blockIdx.x, tok = token_of(indices, counts, r, S, C);
    if (tok < 0) return;
    // (m + x) + o, rounded once: residual_out's order for a query row.
    for (int64_t d = threadIdx.x; d < D; d += kThreads) out[tok * D + d] = kern::bf(res_sel[r * D + d] + o[r * D + d]);
}

// d_out: [B*S, D] bf16  o: [B*C, D] f32  d_o: [B*C, D] bf16  dy: [B*C] f32
__global__ void gate_scatter_backward_kernel(const float* __restrict__ o, const __nv_bfloat16* __restrict__ d_out,
                                             const int32_t* __restrict__ indices, const int32_t* __restrict__ counts,
                                             int64_t S, int64_t C, int64_t D, __nv_bfloat16* __restrict__ d_o,
                                             float* __restrict__ dy) {
    __shared__ float scratch[32];
    const int64_t r = blockIdx.x, tok = token_of(indices, counts, r, S, C);
    float acc = 0.0f;
    for (int64_t d = threadIdx.x; d < D; d += kThreads) {
        if (tok < 0) {
            d_o[r * D + d] = kern::bf(0.0f);
            continue;
        }
        const __nv_bfloat16 g = d_out[tok * D + d];
        d_o[r * D + d] = g;
        acc += __bfloat162float(g) * o[r * D + d];
    }
    acc = kern::block_sum(acc, scratch);
    if (threadIdx.x == 0) dy[r] = acc;
}

__global__ void row_slots_kernel(const int32_t* __restrict__ indices, const int32_t* __restrict__ counts, int64_t BC,
                                 int64_t S, int64_t C, int32_t* __restrict__ row_slot) {
    for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < BC; r += (int64_t)gridDim.x * blockDim.x) {
        const int64_t tok = token_of(indices, counts, r, S, C);
        if (tok >= 0) row_slot[tok] = static_cast<int32_t>(r);
    }
}

// 8 values a thread when D % 8 == 0 (rows then start 16-byte aligned), else one.
template <bool kVec>
__global__ void residual_out_kernel(const float* __restrict__ m, const __nv_bfloat16* x, const float* __restrict__ o,
                                    const int32_t* __restrict__ row_slot, int64_t n, int64_t D, __nv_bfloat16* out) {
    constexpr int W = kVec ? 8 : 1;
    const int64_t units = n * D / W;
    for (int64_t u = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; u < units; u += (int64_t)gridDim.x * blockDim.x) {
        const int64_t e = u * W, row = e / D;
        const int32_t slot = row_slot ? row_slot[row] : -1;
        float mv[W], xv[W], v[W];
        if (kVec) {
            kern::load8(m + e, mv);
            kern::load8(x + e, xv);
        } else {
            mv[0] = m[e];
            xv[0] = kern::ld(x + e);
        }
#pragma unroll
        for (int k = 0; k < W; ++k) v[k] = mv[k] + xv[k];  // the GEMM epilogue's acc + C
        if (slot >= 0) {
            const float* orow = o + slot * D + (e - row * D);
            float ov[W];
            if (kVec) kern::load8(orow, ov); else ov[0] = orow[0];
#pragma unroll
            for (int k = 0; k < W; ++k) v[k] += ov[k];  // gate_scatter_forward's res += o
        }
        if (kVec) kern::store8(out + e, v); else out[e] = kern::bf(v[0]);
    }
}

}  // namespace

void row_slots(Device& d, const int32_t* indices, const int32_t* counts, int64_t B, int64_t S, int64_t C, int64_t n,
               int32_t* row_slot) {
    if (n <= 0) return;
    check(cudaMemsetAsync(row_slot, 0xff, static_cast<std::size_t>(n) * 4, stream(d)), "cudaMemsetAsync (row_slot)");
    if (B * C <= 0) return;
    row_slots_kernel<<<kern::grid_for(B * C, 256), 256, 0, stream(d)>>>(indices, counts, B * C, S, C, row_slot);
    check_launch("row_slots");
}

void residual_out(Device& d, const float* m, const __nv_bfloat16* x, const float* o, const int32_t* row_slot,
                  int64_t n, int64_t D, __nv_bfloat16* out) {
    if (n <= 0) return;
    if (D % 8 == 0)
        residual_out_kernel<true><<<kern::grid_for(n * D / 8, 256), 256, 0, stream(d)>>>(m, x, o, row_slot, n, D, out);
    else
        residual_out_kernel<false><<<kern::grid_for(n * D, 256), 256, 0, stream(d)>>>(m, x, o, row_slot, n, D, out);
    check_launch("residual_out");
}

void residual_out_selected(Device& d, const float* res_sel, const float* o, const int32_t* indices,
                           const int32_t* counts, int64_t B, int64_t S, int64_t C, int64_t D, __nv_bfloat16* out) {
    if (B * C <= 0) return;
    residual_out_selected_kernel<<<static_cast<unsigned>(B * C), kThreads, 0, stream(d)>>>(res_sel, o, indices, counts,
                                                                                          S, C, D, out);
    check_launch("residual_out_selected");
}

void gather_selected(Device& d, const __nv_bfloat16* a, const int32_t* indices, const int32_t* counts, int64_t B,
                     int64_t S, int64_t C, int64_t D, __nv_bfloat16* a_sel) {
    if (B * C <= 0) return;
    gather_selected_kernel<<<static_cast<unsigned>(B * C), kThreads, 0, stream(d)>>>(a, indices, counts, S, C, D, a_sel);
    check_launch("gather_selected");
}

void scatter_add_selected(Device& d, const __nv_bfloat16* src, const int32_t* indices, const int32_t* counts,
                          int64_t B, int64_t S, int64_t C, int64_t D, float* dst) {
    if (B * C <= 0) return;
    scatter_add_selected_kernel<<<static_cast<unsigned>(B * C), kThreads, 0, stream(d)>>>(src, indices, counts, S, C,
                                                                                         D, dst);
    check_launch("scatter_add_selected");
}

void gate_scatter_forward(Device& d, const float* o, const int32_t* indices, const int32_t* counts, int64_t B,
                          int64_t S, int64_t C, int64_t D, float* res) {
    if (B * C <= 0) return;
    gate_scatter_forward_kernel<<<static_cast<unsigned>(B * C), kThreads, 0, stream(d)>>>(o, indices, counts, S, C,
                                                                                         D, res);
    check_launch("gate_scatter_forward");
}

void gate_scatter_backward(Device& d, const float* o, const __nv_bfloat16* d_out, const int32_t* indices,
                           const int32_t* counts, int64_t B, int64_t S, int64_t C, int64_t D, __nv_bfloat16* d_o,
                           float* dy) {
    if (B * C <= 0) return;
    gate_scatter_backward_kernel<<<static_cast<unsigned>(B * C), kThreads, 0, stream(d)>>>(o, d_out, indices, counts,
                                                                                          S, C, D, d_o, dy);
    check_launch("gate_scatter_backward");
}

}  // namespace hspmn::cuda
