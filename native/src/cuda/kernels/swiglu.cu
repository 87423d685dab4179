// swiglu forward/backward, elementwise over rows of F; 8 values per thread with 16-byte loads when
// F, the row stride and every pointer allow. g and u (and dg, du) are usually the two halves of one
// [rows, 2F] buffer (the block's gate|up GEMM output), so they are addressed as rows of stride ldg.
#include <initializer_list>

#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Threads of x walk a row's columns (8 at a time when kVec), blocks of y its rows: no index division.
// g, u: [rows, F] bf16 row stride ldg  a: [rows, F] bf16
template <bool kVec>
__global__ void swiglu_forward_kernel(const __nv_bfloat16* __restrict__ g, const __nv_bfloat16* __restrict__ u,
                                      int64_t rows, int64_t F, int64_t ldg, __nv_bfloat16* __restrict__ a) {
    const int64_t cols = kVec ? F / 8 : F, step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const __nv_bfloat16* gr = g + r * ldg;
        const __nv_bfloat16* ur = u + r * ldg;
        __nv_bfloat16* ar = a + r * F;
        for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < cols; c += step) {
            if (kVec) {
                float fg[8], fu[8];
                kern::load8(gr + c * 8, fg);
                kern::load8(ur + c * 8, fu);
#pragma unroll
                for (int i = 0; i < 8; ++i) fg[i] = fg[i] * sigmoid(fg[i]) * fu[i];
                kern::store8(ar + c * 8, fg);
            } else {
                const float x = kern::ld(gr + c);
                ar[c] = kern::bf(x * sigmoid(x) * kern::ld(ur + c));
            }
        }
    }
}

// da: [rows, F] bf16; dg, du: [rows, F] bf16 row stride ldg (g, u likewise)
template <bool kVec>
__global__ void swiglu_backward_kernel(const __nv_bfloat16* __restrict__ g, const __nv_bfloat16* __restrict__ u,
                                       const __nv_bfloat16* __restrict__ da, int64_t rows, int64_t F, int64_t ldg,
                                       __nv_bfloat16* __restrict__ dg, __nv_bfloat16* __restrict__ du) {
    const int64_t cols = kVec ? F / 8 : F, step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const __nv_bfloat16* gr = g + r * ldg;
        const __nv_bfloat16* ur = u + r * ldg;
        const __nv_bfloat16* dar = da + r * F;
        __nv_bfloat16* dgr = dg + r * ldg;
        __nv_bfloat16* dur = du + r * ldg;
        for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < cols; c += step) {
            if (kVec) {
                float fg[8], fu[8], fa[8];
                kern::load8(gr + c * 8, fg);
                kern::load8(ur + c * 8, fu);
                kern::load8(dar + c * 8, fa);
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    const float s = sigmoid(fg[i]), silu = fg[i] * s;
                    fg[i] = fa[i] * fu[i] * (s + silu * (1.0f - s));
                    fu[i] = fa[i] * silu;
                }
                kern::store8(dgr + c * 8, fg);
                kern::store8(dur + c * 8, fu);
            } else {
                const float x = kern::ld(gr + c), s = sigmoid(x), silu = x * s, dai = kern::ld(dar + c);
                dur[c] = kern::bf(dai * silu);
                dgr[c] = kern::bf(dai * kern::ld(ur + c) * (s + silu * (1.0f - s)));
            }
        }
    }
}

bool vec8(int64_t F, int64_t ldg, std::initializer_list<const void*> ptrs) {
    return F % 8 == 0 && ldg % 8 == 0 && kern::all_aligned(16, ptrs);
}

dim3 grid_rows(int64_t rows, int64_t cols) {
    return dim3(kern::grid_for(cols, 256, 65535), static_cast<unsigned>(rows < 65535 ? rows : 65535));
}

}  // namespace

void swiglu_forward(Device& d, const __nv_bfloat16* g, const __nv_bfloat16* u, int64_t rows, int64_t F, int64_t ldg,
                    __nv_bfloat16* a) {
    if (rows <= 0 || F <= 0) return;
    if (vec8(F, ldg, {g, u, a}))
        swiglu_forward_kernel<true><<<grid_rows(rows, F / 8), 256, 0, stream(d)>>>(g, u, rows, F, ldg, a);
    else
        swiglu_forward_kernel<false><<<grid_rows(rows, F), 256, 0, stream(d)>>>(g, u, rows, F, ldg, a);
    check_launch("swiglu_forward");
}

void swiglu_backward(Device& d, const __nv_bfloat16* g, const __nv_bfloat16* u, const __nv_bfloat16* da, int64_t rows,
                     int64_t F, int64_t ldg, __nv_bfloat16* dg, __nv_bfloat16* du) {
    if (rows <= 0 || F <= 0) return;
    if (vec8(F, ldg, {g, u, da, dg, du}))
        swiglu_backward_kernel<true><<<grid_rows(rows, F / 8), 256, 0, stream(d)>>>(g, u, da, rows, F, ldg, dg, du);
    else
        swiglu_backward_kernel<false><<<grid_rows(rows, F), 256, 0, stream(d)>>>(g, u, da, rows, F, ldg, dg, du);
    check_launch("swiglu_backward");
}

}  // namespace hspmn::cuda
