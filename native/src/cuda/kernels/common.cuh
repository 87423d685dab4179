// What every kernel file shares: bf16 <-> f32 in registers, warp/block sums, grid sizes.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "../runtime.h"

namespace hspmn::cuda::kern {

__device__ __forceinline__ float ld(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ float ld(const float* p) { return *p; }
__device__ __forceinline__ __nv_bfloat16 bf(float f) { return __float2bfloat16_rn(f); }
// v stored in the element type (bf16: round to nearest even).
__device__ __forceinline__ void st(__nv_bfloat16* p, float v) { *p = bf(v); }
__device__ __forceinline__ void st(float* p, float v) { *p = v; }

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the block; every thread gets the result. scratch: >= 32 T of shared memory.
template <class T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    T r = lane < nwarps ? scratch[lane] : T(0);
    return warp_sum(r);
}

// 8 bf16 in one 16-byte load.
struct alignas(16) Bf16x8 {
    __nv_bfloat162 h[4];
};
__device__ __forceinline__ void load8(const __nv_bfloat16* p, float* f) {
    const Bf16x8 v = *reinterpret_cast<const Bf16x8*>(p);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 t = __bfloat1622float2(v.h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}
// load8's conversion of 8 bf16 already in registers.
__device__ __forceinline__ void unpack8(const Bf16x8& v, float* f) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 t = __bfloat1622float2(v.h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}
__device__ __forceinline__ void store8(__nv_bfloat16* p, const float* f) {
    Bf16x8 v;
#pragma unroll
    for (int i = 0; i < 4; ++i) v.h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    *reinterpret_cast<Bf16x8*>(p) = v;
}

// 8 f32 in two 16-byte loads / stores.
__device__ __forceinline__ void load8(const float* p, float* f) {
    const float4* v = reinterpret_cast<const float4*>(p);
    const float4 a = v[0], b = v[1];
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}
__device__ __forceinline__ void store8(float* p, const float* f) {
    float4* v = reinterpret_cast<float4*>(p);
    v[0] = make_float4(f[0], f[1], f[2], f[3]);
    v[1] = make_float4(f[4], f[5], f[6], f[7]);
}

// The causal conv's vector kernels (causal_conv.cu, decode.cu: D % 8 == 0, K <= kConvVecK): a thread
// owns 8 channels with their K taps in registers.
constexpr int kConvVecK = 8;

// wr[j][e] = w[d0 + e, j], zero for j >= K.  w: [D, K] bf16
__device__ __forceinline__ void conv_taps8(const __nv_bfloat16* w, int64_t d0, int K, float (&wr)[kConvVecK][8]) {
#pragma unroll
    for (int j = 0; j < kConvVecK; ++j)
#pragma unroll
        for (int e = 0; e < 8; ++e) wr[j][e] = j < K ? ld(w + (d0 + e) * K + j) : 0.0f;
}

// The conv walking rows with a window in registers (causal_conv.cu's walk, rms_norm_conv.cu), K a
// template parameter so the window stays in registers. ConvWindow<K>::Hist[k] is the input row k + 1
// away (back for the forward, ahead for the backward's dh).
template <int K>
struct ConvWindow {
    using Hist = float[K > 1 ? K - 1 : 1][8];
    // wr[j][e] = w[d0 + e, j].  w: [D, K] bf16
    __device__ __forceinline__ static void load_taps(const __nv_bfloat16* w, int64_t d0, float (&wr)[K][8]) {
#pragma unroll
        for (int j = 0; j < K; ++j)
#pragma unroll
            for (int e = 0; e < 8; ++e) wr[j][e] = ld(w + (d0 + e) * K + j);
    }
    // acc = sum over j ascending of wr[j] * (the row K-1-j away: cur at 0, else hist), leaving out the
    // taps for which outside(K-1-j) (rows before position 0 or past the sequence's end).
    template <class Outside>
    __device__ __forceinline__ static void taps(const float (&wr)[K][8], const float* cur, const Hist& hist,
                                                Outside outside, float* acc) {
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[e] = 0.0f;
#pragma unroll
        for (int j = 0; j < K; ++j) {
            const int away = (K - 1) - j;
            if (outside(away)) continue;
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[e] += wr[j][e] * (away == 0 ? cur[e] : hist[away > 0 ? away - 1 : 0][e]);
        }
    }
    // The window moves one row on: cur becomes the row 1 away.
    __device__ __forceinline__ static void push(Hist& hist, const float* cur) {
#pragma unroll
        for (int k = K - 2; k > 0; --k)
#pragma unroll
            for (int e = 0; e < 8; ++e) hist[k][e] = hist[k - 1][e];
        if (K > 1)
#pragma unroll
            for (int e = 0; e < 8; ++e) hist[0][e] = cur[e];
    }
};

// Calls f(std::integral_constant<int, K>{}) for the conv width K in 1..kConvVecK (the register window's
// K is a template parameter): the one place a runtime K picks an instantiation.
template <class F>
inline void with_conv_k(int64_t K, F&& f) {
    switch (K) {
        case 1: f(std::integral_constant<int, 1>{}); break;
        case 2: f(std::integral_constant<int, 2>{}); break;
        case 3: f(std::integral_constant<int, 3>{}); break;
        case 4: f(std::integral_constant<int, 4>{}); break;
        case 5: f(std::integral_constant<int, 5>{}); break;
        case 6: f(std::integral_constant<int, 6>{}); break;
        case 7: f(std::integral_constant<int, 7>{}); break;
        default: f(std::integral_constant<int, kConvVecK>{}); break;
    }
}

// The rotary table's entry (position p, pair i): rope_table and decode_rows both call this, so a row
// table built for a call's positions holds the full table's values bit for bit.
__device__ __forceinline__ void rope_entry(int64_t p, int64_t i, int64_t Dh, double base, float* c, float* s) {
    const double inv_freq = pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(Dh));
    const double angle = static_cast<double>(p) * inv_freq;
    *c = static_cast<float>(cos(angle));
    *s = static_cast<float>(sin(angle));
}

// The router's clamped temperature exp(log_temp) in [0.1, 2] and, when inside is not null, whether
// log_temp gets a gradient (exp strictly inside (0.1, 2)): router_forward and decode_step_pre.
__device__ __forceinline__ float router_temperature(const __nv_bfloat16* log_temp, bool* inside) {
    const double t_raw = exp(static_cast<double>(__bfloat162float(*log_temp)));
    if (inside) *inside = t_raw > 0.1 && t_raw < 2.0;
    return static_cast<float>(fmin(fmax(t_raw, 0.1), 2.0));
}

// The router's dot product x . w of row xr in f64 over a warp; every lane gets it (router_forward and
// decode_step_pre, so a step routes as the forward does: the same order in both).  xr, w: [D] bf16.
// With D % 8 == 0 lane l sums the 8-element groups l, l + 32, ... element by element, in one 16-byte load
// per row and group where both rows are 16-byte aligned (the lane-strided 2-byte loads reached ~60 % of
// an H200's bandwidth) and in scalar loads otherwise: the same order, so the same bits either way. Else lane l
// sums elements l, l + 32, ... Each product of two bf16 is exact in f64.
__device__ __forceinline__ double router_dot(const __nv_bfloat16* xr, const __nv_bfloat16* w, int64_t D, int lane) {
    double acc = 0.0;
    if (D % 8 == 0) {
        const bool vec = ((reinterpret_cast<uintptr_t>(xr) | reinterpret_cast<uintptr_t>(w)) & 15) == 0;
        float xv[8], wv[8];
        for (int64_t g = lane; g < D / 8; g += 32) {
            if (vec) {
                load8(xr + g * 8, xv);
                load8(w + g * 8, wv);
            } else {
#pragma unroll
                for (int j = 0; j < 8; ++j) xv[j] = ld(xr + g * 8 + j), wv[j] = ld(w + g * 8 + j);
            }
#pragma unroll
            for (int j = 0; j < 8; ++j) acc += static_cast<double>(xv[j]) * static_cast<double>(wv[j]);
        }
    } else {
        for (int64_t d = lane; d < D; d += 32) acc += static_cast<double>(ld(xr + d)) * static_cast<double>(ld(w + d));
    }
    return warp_sum(acc);
}

// Programmatic dependent launch (decode steps): a kernel launched with launch_pdl may start while the
// kernel before it on the stream drains. Before pdl_wait() it may only read what no kernel writes
// (weights) and write its own shared memory; pdl_wait() returns once the previous kernel has finished
// and its writes are visible. pdl_launch_dependents() lets the next kernel start its own prologue; it is
// called after pdl_wait(), so at most two kernels overlap. Both are no-ops in an ordinary launch.
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void pdl_launch_dependents() { asm volatile("griddepcontrol.launch_dependents;" :::); }

template <typename... KArgs, typename... Args>
void launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t s, Args&&... args) {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    check(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), "cudaLaunchKernelEx (programmatic)");
}

// Philox4x32-10: a device copy of core/philox.h (kept host-only so its host behaviour cannot move),
// for gumbel_noise.cu and dropout.cu.
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

// Whether every pointer is a multiple of `bytes`: the vector kernels' precondition (device allocations
// are 256-byte aligned; views and offsets may not be).
inline bool all_aligned(std::size_t bytes, std::initializer_list<const void*> ptrs) {
    for (const void* p : ptrs)
        if (reinterpret_cast<std::uintptr_t>(p) % bytes != 0) return false;
    return true;
}

inline unsigned grid_for(int64_t n, int threads, int64_t cap = 65535LL * 16) {
    int64_t g = (n + threads - 1) / threads;
    if (g < 1) g = 1;
    return static_cast<unsigned>(g < cap ? g : cap);
}

}  // namespace hspmn::cuda::kern
