// swiglu forward/backward, elementwise; 8 values per thread with 16-byte loads when n % 8 == 0.
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// g, u, a: [n] bf16
template <bool kVec>
__global__ void swiglu_forward_kernel(const __nv_bfloat16* __restrict__ g, const __nv_bfloat16* __restrict__ u,
                                      int64_t n, __nv_bfloat16* __restrict__ a) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    if (kVec) {
        for (int64_t v = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; v < n / 8; v += stride) {
            float fg[8], fu[8];
            kern::load8(g + v * 8, fg);
            kern::load8(u + v * 8, fu);
#pragma unroll
            for (int i = 0; i < 8; ++i) fg[i] = fg[i] * sigmoid(fg[i]) * fu[i];
            kern::store8(a + v * 8, fg);
        }
    } else {
        for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride) {
            const float x = kern::ld(g + i);
            a[i] = kern::bf(x * sigmoid(x) * kern::ld(u + i));
        }
    }
}

// da: [n] bf16; dg, du: [n] bf16
template <bool kVec>
__global__ void swiglu_backward_kernel(const __nv_bfloat16* __restrict__ g, const __nv_bfloat16* __restrict__ u,
                                       const __nv_bfloat16* __restrict__ da, int64_t n, __nv_bfloat16* __restrict__ dg,
                                       __nv_bfloat16* __restrict__ du) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    if (kVec) {
        for (int64_t v = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; v < n / 8; v += stride) {
            float fg[8], fu[8], fa[8];
            kern::load8(g + v * 8, fg);
            kern::load8(u + v * 8, fu);
            kern::load8(da + v * 8, fa);
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const float s = sigmoid(fg[i]), silu = fg[i] * s;
                fg[i] = fa[i] * fu[i] * (s + silu * (1.0f - s));
                fu[i] = fa[i] * silu;
            }
            kern::store8(dg + v * 8, fg);
            kern::store8(du + v * 8, fu);
        }
    } else {
        for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride) {
            const float x = kern::ld(g + i), s = sigmoid(x), silu = x * s, dai = kern::ld(da + i);
            du[i] = kern::bf(dai * silu);
            dg[i] = kern::bf(dai * kern::ld(u + i) * (s + silu * (1.0f - s)));
        }
    }
}

}  // namespace

void swiglu_forward(Device& d, const __nv_bfloat16* g, const __nv_bfloat16* u, int64_t n, __nv_bfloat16* a) {
    if (n <= 0) return;
    if (n % 8 == 0)
        swiglu_forward_kernel<true><<<kern::grid_for(n / 8, 256), 256, 0, stream(d)>>>(g, u, n, a);
    else
        swiglu_forward_kernel<false><<<kern::grid_for(n, 256), 256, 0, stream(d)>>>(g, u, n, a);
    check_launch("swiglu_forward");
}

void swiglu_backward(Device& d, const __nv_bfloat16* g, const __nv_bfloat16* u, const __nv_bfloat16* da, int64_t n,
                     __nv_bfloat16* dg, __nv_bfloat16* du) {
    if (n <= 0) return;
    if (n % 8 == 0)
        swiglu_backward_kernel<true><<<kern::grid_for(n / 8, 256), 256, 0, stream(d)>>>(g, u, da, n, dg, du);
    else
        swiglu_backward_kernel<false><<<kern::grid_for(n, 256), 256, 0, stream(d)>>>(g, u, da, n, dg, du);
    check_launch("swiglu_backward");
}

}  // namespace hspmn::cuda
