// route_select on the device, no host sync: one 1024-thread block per sequence.
// top-k: every token gets a distinct 64-bit key (order-preserving bits of n, NaN as -inf, -0 as +0;
// then ~position so equal scores rank the lower position higher); an 8-pass radix select (8 bits a
// pass, shared histogram) finds the k-th largest key T, and the selected tokens are key >= T:
// exactly k. Both modes then compact the flagged positions in increasing order with a block scan
// and pad with -1 up to C.
#include <cub/block/block_scan.cuh>

#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ unsigned long long route_key(float v, int64_t s) {
    if (isnan(v)) v = -INFINITY;  // NaN ranks lowest (the CPU's strict weak order)
    // -0 == +0 as the CPU compares them: the position decides (bits, so no flag can fold it away).
    const unsigned u = v == 0.0f ? 0u : __float_as_uint(v);
    const unsigned k = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return (static_cast<unsigned long long>(k) << 32) | static_cast<unsigned long long>(0xffffffffu - static_cast<unsigned>(s));
}

// n: [B, S] f32  indices: [B, C] i32  counts: [B] i32.  grid: B blocks of kThreads
__global__ void __launch_bounds__(kThreads) route_select_kernel(const float* __restrict__ n, int64_t S, int32_t topk,
                                                                int64_t k, int64_t C, int32_t* __restrict__ indices,
                                                                int32_t* __restrict__ counts) {
    using Scan = cub::BlockScan<int, kThreads>;
    __shared__ typename Scan::TempStorage scan_storage;
    __shared__ unsigned hist[256];
    __shared__ unsigned long long s_prefix, s_mask;
    __shared__ long long s_remaining;
    const int64_t b = blockIdx.x;
    const float* nb = n + b * S;
    int32_t* ib = indices + b * C;

    bool all = !topk ? false : k >= S;
    unsigned long long threshold = 0;
    if (topk && !all) {
        if (threadIdx.x == 0) {
            s_prefix = 0;
            s_mask = 0;
            s_remaining = k;
        }
        for (int pass = 7; pass >= 0; --pass) {
            const int shift = pass * 8;
            for (int i = threadIdx.x; i < 256; i += kThreads) hist[i] = 0;
            __syncthreads();
            const unsigned long long prefix = s_prefix, mask = s_mask;
            for (int64_t s = threadIdx.x; s < S; s += kThreads) {
                const unsigned long long key = route_key(nb[s], s);
                if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 0xffu], 1u);
            }
            __syncthreads();
            if (threadIdx.x == 0) {
                // The digit holding the remaining-th largest key among those matching the prefix.
                long long rem = s_remaining;
                int digit = 255;
                for (; digit > 0; --digit) {
                    if (static_cast<long long>(hist[digit]) >= rem) break;
                    rem -= hist[digit];
                }
                s_remaining = rem;
                s_prefix = prefix | (static_cast<unsigned long long>(digit) << shift);
                s_mask = mask | (0xffull << shift);
            }
            __syncthreads();
        }
        threshold = s_prefix;
    }

    int base = 0;
    for (int64_t s0 = 0; s0 < S; s0 += kThreads) {
        const int64_t s = s0 + threadIdx.x;
        int flag = 0;
        if (s < S) {
            const float v = nb[s];
            flag = topk ? (all || route_key(v, s) >= threshold) : (v > 0.0f);
        }
        int offset, total;
        Scan(scan_storage).ExclusiveSum(flag, offset, total);
        if (flag) ib[base + offset] = static_cast<int32_t>(s);
        base += total;
        __syncthreads();  // scan_storage is reused by the next chunk
    }
    for (int64_t j = base + threadIdx.x; j < C; j += kThreads) ib[j] = -1;
    if (threadIdx.x == 0) counts[b] = base;
}

}  // namespace

void route_select(Device& d, const float* n, int64_t B, int64_t S, int32_t routing, int64_t k, int64_t C,
                  int32_t* indices, int32_t* counts) {
    if (B <= 0) return;
    route_select_kernel<<<static_cast<unsigned>(B), kThreads, 0, stream(d)>>>(
        n, S, routing == HSPMN_ROUTING_TOPK ? 1 : 0, k, C, indices, counts);
    check_launch("route_select");
}

}  // namespace hspmn::cuda
