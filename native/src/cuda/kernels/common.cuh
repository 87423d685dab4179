// What every kernel file shares: bf16 <-> f32 in registers, warp/block sums, grid sizes.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "../runtime.h"

namespace hspmn::cuda::kern {

__device__ __forceinline__ float ld(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ __nv_bfloat16 bf(float f) { return __float2bfloat16_rn(f); }

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
__device__ __forceinline__ void store8(__nv_bfloat16* p, const float* f) {
    Bf16x8 v;
#pragma unroll
    for (int i = 0; i < 4; ++i) v.h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    *reinterpret_cast<Bf16x8*>(p) = v;
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

inline unsigned grid_for(int64_t n, int threads, int64_t cap = 65535LL * 16) {
    int64_t g = (n + threads - 1) / threads;
    if (g < 1) g = 1;
    return static_cast<unsigned>(g < cap ? g : cap);
}

}  // namespace hspmn::cuda::kern
