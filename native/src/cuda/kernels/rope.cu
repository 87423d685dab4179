// rope: the cos/sin table in f64 (as the CPU's rope_table), then one thread per rotated pair.
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

// cos, sin: [S, half] f32
__global__ void rope_table_kernel(int64_t S, int64_t Dh, double base, float* __restrict__ cos_t,
                                  float* __restrict__ sin_t) {
    const int64_t half = Dh / 2;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < S * half; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t p = e / half, i = e - p * half;
        kern::rope_entry(p, i, Dh, base, cos_t + e, sin_t + e);
    }
}

// One thread per (row, head, i < half) pair. sign +1 forward, -1 backward.
// src, dst: [R, heads*Dh] row stride ld  pos: [B, C] or null (position r % S)  counts: [B]
template <class T>
__global__ void rope_kernel(const T* src, __nv_bfloat16* dst, int64_t R, int64_t heads, int64_t Dh, int64_t ld,
                            const int32_t* __restrict__ pos, const int32_t* __restrict__ counts, int64_t C, int64_t S,
                            const float* __restrict__ cos_t, const float* __restrict__ sin_t, float sign) {
    const int64_t half = Dh / 2, per_row = heads * half;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < R * per_row;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = e / per_row, rem = e - r * per_row, h = rem / half, i = rem - h * half;
        const int64_t off = r * ld + h * Dh + i;
        int64_t p;
        if (pos) {
            const int64_t b = r / C, j = r - b * C;
            if (j >= counts[b]) {
                dst[off] = kern::bf(0.0f);
                dst[off + half] = kern::bf(0.0f);
                continue;
            }
            p = pos[r];
        } else {
            p = r % S;
        }
        const float a = kern::ld(src + off), bb = kern::ld(src + off + half);
        const float c = cos_t[p * half + i], s = sign * sin_t[p * half + i];
        dst[off] = kern::bf(a * c - bb * s);
        dst[off + half] = kern::bf(bb * c + a * s);
    }
}

// rope_kernel's arithmetic for 4 neighbouring pairs a thread (half % 4 == 0, 16-byte aligned f32 rows,
// 8-byte aligned bf16 rows): vector loads and stores, one index computation per 4 pairs. The
// one-pair-a-thread kernel spent more time on its 64-bit index divisions and 2-byte stores than on
// memory. Same expressions per element, so the same bits.
__device__ __forceinline__ void load4(const float* p, float* f) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    f[0] = v.x, f[1] = v.y, f[2] = v.z, f[3] = v.w;
}
__device__ __forceinline__ void load4(const __nv_bfloat16* p, float* f) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v.x));
    const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v.y));
    f[0] = lo.x, f[1] = lo.y, f[2] = hi.x, f[3] = hi.y;
}
__device__ __forceinline__ void store4(__nv_bfloat16* p, const float* f) {
    uint2 v;
    *reinterpret_cast<__nv_bfloat162*>(&v.x) = __floats2bfloat162_rn(f[0], f[1]);
    *reinterpret_cast<__nv_bfloat162*>(&v.y) = __floats2bfloat162_rn(f[2], f[3]);
    *reinterpret_cast<uint2*>(p) = v;
}

template <class T>
__global__ void rope_vec4_kernel(const T* src, __nv_bfloat16* dst, int64_t R, int64_t heads, int64_t Dh, int64_t ld,
                                 const int32_t* __restrict__ pos, const int32_t* __restrict__ counts, int64_t C,
                                 int64_t S, const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                                 float sign) {
    const int64_t half = Dh / 2, quads = half / 4, per_row = heads * quads;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < R * per_row;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = e / per_row, rem = e - r * per_row, h = rem / quads, i = (rem - h * quads) * 4;
        const int64_t off = r * ld + h * Dh + i;
        int64_t p;
        if (pos) {
            const int64_t b = r / C, j = r - b * C;
            if (j >= counts[b]) {
                const float z[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                store4(dst + off, z);
                store4(dst + off + half, z);
                continue;
            }
            p = pos[r];
        } else {
            p = r % S;
        }
        float a[4], bb[4], c[4], sn[4], lo[4], hi[4];
        load4(src + off, a);
        load4(src + off + half, bb);
        load4(cos_t + p * half + i, c);
        load4(sin_t + p * half + i, sn);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const float s = sign * sn[k];
            lo[k] = a[k] * c[k] - bb[k] * s;
            hi[k] = bb[k] * c[k] + a[k] * s;
        }
        store4(dst + off, lo);
        store4(dst + off + half, hi);
    }
}

// rope_kernel over R rows of `heads` heads: sign 1 rotates (forward), -1 rotates back (backward).
template <class T>
void launch_rope(Device& d, const char* what, const T* src, __nv_bfloat16* dst, int64_t R, int64_t heads, int64_t Dh,
                 int64_t ld, const int32_t* pos, const int32_t* counts, int64_t C, int64_t S, const float* cos_t,
                 const float* sin_t, float sign) {
    if (R <= 0) return;
    const bool vec = (Dh / 2) % 4 == 0 && ld % 4 == 0 && kern::all_aligned(4 * sizeof(T), {src}) &&
                     kern::all_aligned(8, {dst});
    if (vec) {
        rope_vec4_kernel<T><<<kern::grid_for(R * heads * (Dh / 8), 256), 256, 0, stream(d)>>>(
            src, dst, R, heads, Dh, ld, pos, counts, C, S, cos_t, sin_t, sign);
        check_launch(what);
        return;
    }
    rope_kernel<T><<<kern::grid_for(R * heads * (Dh / 2), 256), 256, 0, stream(d)>>>(src, dst, R, heads, Dh, ld,
                                                                                     pos, counts, C, S, cos_t, sin_t,
                                                                                     sign);
    check_launch(what);
}

}  // namespace

void rope_table(Device& d, int64_t S, int64_t Dh, float base, float* cos_t, float* sin_t) {
    if (S <= 0) return;
    rope_table_kernel<<<kern::grid_for(S * (Dh / 2), 256), 256, 0, stream(d)>>>(S, Dh, static_cast<double>(base),
                                                                                 cos_t, sin_t);
    check_launch("rope_table");
}

void rope_forward(Device& d, const float* src, __nv_bfloat16* dst, int64_t R, int64_t heads, int64_t Dh,
                  const int32_t* pos, const int32_t* counts, int64_t C, int64_t S, const float* cos_t,
                  const float* sin_t) {
    launch_rope(d, "rope_forward", src, dst, R, heads, Dh, heads * Dh, pos, counts, C, S, cos_t, sin_t, 1.0f);
}

void rope_backward(Device& d, const __nv_bfloat16* src, __nv_bfloat16* dst, int64_t R, int64_t heads, int64_t Dh,
                   int64_t ld, const int32_t* pos, const int32_t* counts, int64_t C, int64_t S, const float* cos_t,
                   const float* sin_t) {
    launch_rope(d, "rope_backward", src, dst, R, heads, Dh, ld, pos, counts, C, S, cos_t, sin_t, -1.0f);
}

}  // namespace hspmn::cuda
