// route_select on the device, no host sync, two ways to the same result.
// The block way (many sequences): one 1024-thread block per sequence. top-k: every token gets a
// distinct 64-bit key (order-preserving bits of n, NaN as -inf, -0 as +0; then ~position so equal
// scores rank the lower position higher); an 8-pass radix select (8 bits a pass, shared histogram)
// finds the k-th largest key T, and the selected tokens are key >= T: exactly k. Both modes then
// compact the flagged positions in increasing order with a block scan and pad with -1 up to C.
// The wide way (few long sequences, where one block a sequence leaves all SMs but one idle: BENCHMARKS.md,
// 2026-12-07): many blocks a sequence, a few launches (below).
#include <algorithm>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

constexpr int kThreads = 1024;

// The key's upper half: n's order as unsigned bits.
__device__ __forceinline__ unsigned route_hi(float v) {
    if (isnan(v)) v = -INFINITY;  // NaN ranks lowest (the CPU's strict weak order)
    // -0 == +0 as the CPU compares them: the position decides (bits, so no flag can fold it away).
    const unsigned u = v == 0.0f ? 0u : __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ unsigned long long route_key(float v, int64_t s) {
    return (static_cast<unsigned long long>(route_hi(v)) << 32) |
           static_cast<unsigned long long>(0xffffffffu - static_cast<unsigned>(s));
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

// ---- The wide way. top-k runs the radix select on the keys' upper halves only (n's order): 4 passes,
// each a histogram over many blocks (route_select_wide_hist) and a pick of the digit
// (route_select_wide_pick), give the threshold's upper half T and rem, how many of the tokens whose upper
// half equals T are taken. Those ties go to the lowest positions, which is what the lower half
// (~position) decides in the block way: the same k tokens. Then route_select_wide_count counts each
// chunk's sure tokens (upper half > T; in threshold mode n > 0) and ties, and route_select_wide_write
// writes each chunk's selected positions at their offsets from the chunks before it.

constexpr int kWideThreads = 256;
constexpr int kWideItems = 16;                                  // consecutive scores a thread
constexpr int64_t kWideChunk = int64_t{kWideThreads} * kWideItems;  // 4096 scores a block

struct WideState {
    unsigned prefix;  // T's digits found so far
    long long rem;    // how many of the keys still matching the prefix are taken
};

int64_t wide_chunks(int64_t S) { return (S + kWideChunk - 1) / kWideChunk; }

// The scratch: hist [B, 256] u32 | state [B] | chunk counts [B, chunks] uint2 {sure, ties}.
struct WideScratch {
    unsigned* hist;
    WideState* state;
    uint2* counts;
};

std::size_t align16(std::size_t b) { return (b + 15) / 16 * 16; }

WideScratch wide_scratch(void* base, int64_t B, int64_t S) {
    char* p = static_cast<char*>(base);
    WideScratch w;
    w.hist = reinterpret_cast<unsigned*>(p);
    p += align16(static_cast<std::size_t>(B) * 256 * sizeof(unsigned));
    w.state = reinterpret_cast<WideState*>(p);
    p += align16(static_cast<std::size_t>(B) * sizeof(WideState));
    w.counts = reinterpret_cast<uint2*>(p);
    return w;
}

// grid: B blocks of 256
__global__ void route_select_wide_init(unsigned* __restrict__ hist, WideState* __restrict__ state, int64_t k) {
    hist[blockIdx.x * 256 + threadIdx.x] = 0;
    if (threadIdx.x == 0) state[blockIdx.x] = WideState{0u, static_cast<long long>(k)};
}

// The pass's histogram of digit (hi >> shift) & 255 over the keys whose digits above it match the prefix.
// grid: (chunks, B) of kWideThreads
__global__ void __launch_bounds__(kWideThreads) route_select_wide_hist(const float* __restrict__ n, int64_t S,
                                                                       int shift,
                                                                const WideState* __restrict__ state,
                                                                unsigned* __restrict__ hist) {
    __shared__ unsigned h[256];
    const int64_t b = blockIdx.y;
    h[threadIdx.x] = 0;
    __syncthreads();
    const unsigned prefix = state[b].prefix;
    const unsigned mask = shift == 24 ? 0u : 0xffffffffu << (shift + 8);
    const float* nb = n + b * S;
    const int64_t s1 = std::min(S, (blockIdx.x + 1) * kWideChunk);
    for (int64_t s = blockIdx.x * kWideChunk + threadIdx.x; s < s1; s += kWideThreads) {
        const unsigned hi = route_hi(nb[s]);
        if ((hi & mask) == prefix) atomicAdd(&h[(hi >> shift) & 0xffu], 1u);
    }
    __syncthreads();
    if (h[threadIdx.x]) atomicAdd(&hist[b * 256 + threadIdx.x], h[threadIdx.x]);
}

// The digit holding the rem-th largest matching key (the block way's loop), then the histogram zeroed
// for the next pass.  grid: B blocks of 256
__global__ void route_select_wide_pick(unsigned* __restrict__ hist, WideState* __restrict__ state, int shift) {
    unsigned* hb = hist + blockIdx.x * 256;
    if (threadIdx.x == 0) {
        WideState st = state[blockIdx.x];
        long long rem = st.rem;
        int digit = 255;
        for (; digit > 0; --digit) {
            if (static_cast<long long>(hb[digit]) >= rem) break;
            rem -= hb[digit];
        }
        st.rem = rem;
        st.prefix |= static_cast<unsigned>(digit) << shift;
        state[blockIdx.x] = st;
    }
    __syncthreads();
    hb[threadIdx.x] = 0;
}

// Whether score v (at any position) is sure (taken whatever its position) or a tie (taken by position).
struct WideRule {
    int topk;
    bool all;
    __device__ __forceinline__ void classify(float v, unsigned T, int& sure, int& tie) const {
        if (!topk) {
            sure = v > 0.0f;
            tie = 0;
        } else if (all) {
            sure = 1;
            tie = 0;
        } else {
            const unsigned hi = route_hi(v);
            sure = hi > T;
            tie = hi == T;
        }
    }
};

// counts[b, chunk] = {sure, ties} of the chunk.  grid: (chunks, B) of kWideThreads
__global__ void __launch_bounds__(kWideThreads) route_select_wide_count(const float* __restrict__ n, int64_t S,
                                                                        WideRule rule,
                                                                        const WideState* __restrict__ state,
                                                                        int64_t chunks, uint2* __restrict__ counts) {
    using Reduce = cub::BlockReduce<int, kWideThreads>;
    __shared__ typename Reduce::TempStorage tmp;
    const int64_t b = blockIdx.y;
    const unsigned T = state[b].prefix;
    const float* nb = n + b * S;
    const int64_t s1 = std::min(S, (blockIdx.x + 1) * kWideChunk);
    int packed = 0;  // ties << 16 | sure: at most 4096 each
    for (int64_t s = blockIdx.x * kWideChunk + threadIdx.x; s < s1; s += kWideThreads) {
        int sure, tie;
        rule.classify(nb[s], T, sure, tie);
        packed += (tie << 16) | sure;
    }
    packed = Reduce(tmp).Sum(packed);
    if (threadIdx.x == 0)
        counts[b * chunks + blockIdx.x] =
            make_uint2(static_cast<unsigned>(packed & 0xffff), static_cast<unsigned>(packed >> 16));
}

// Each chunk's selected positions in increasing order at sure_before + min(ties_before, rem) + the
// chunk's own offsets; chunk 0 also pads with -1 up to C and writes the count.
// grid: (chunks, B) of kWideThreads; a thread takes kWideItems consecutive scores
__global__ void __launch_bounds__(kWideThreads) route_select_wide_write(const float* __restrict__ n, int64_t S,
                                                                        WideRule rule,
                                                                        const WideState* __restrict__ state,
                                                                        int64_t chunks,
                                                                        const uint2* __restrict__ counts, int64_t C,
                                                                        int32_t* __restrict__ indices,
                                                                        int32_t* __restrict__ out_counts) {
    using Reduce = cub::BlockReduce<long long, kWideThreads>;
    using Scan = cub::BlockScan<int, kWideThreads>;
    __shared__ union {
        typename Reduce::TempStorage reduce;
        typename Scan::TempStorage scan;
    } tmp;
    __shared__ long long s_sure, s_ties;
    const int64_t b = blockIdx.y, chunk = blockIdx.x;
    const WideState st = state[b];
    const long long rem = rule.topk && !rule.all ? st.rem : 0;
    const uint2* cb = counts + b * chunks;
    // Sure tokens and ties of the chunks before this one (chunk 0: of all chunks, for the count).
    const int64_t upto = chunk == 0 ? chunks : chunk;
    long long sure_part = 0, tie_part = 0;
    for (int64_t c = threadIdx.x; c < upto; c += kWideThreads) {
        sure_part += cb[c].x;
        tie_part += cb[c].y;
    }
    const long long sure_sum = Reduce(tmp.reduce).Sum(sure_part);
    __syncthreads();
    const long long tie_sum = Reduce(tmp.reduce).Sum(tie_part);
    if (threadIdx.x == 0) {
        s_sure = sure_sum;
        s_ties = tie_sum;
    }
    __syncthreads();
    int32_t* ib = indices + b * C;
    long long sure_before = s_sure, ties_before = s_ties;
    if (chunk == 0) {
        const long long total = sure_before + std::min(ties_before, rem);
        for (long long j = total + threadIdx.x; j < C; j += kWideThreads) ib[j] = -1;
        if (threadIdx.x == 0) out_counts[b] = static_cast<int32_t>(total);
        sure_before = ties_before = 0;
    }
    const float* nb = n + b * S;
    const int64_t s0 = chunk * kWideChunk + static_cast<int64_t>(threadIdx.x) * kWideItems;
    int sure[kWideItems], tie[kWideItems];
    const unsigned T = st.prefix;
    int packed = 0;
#pragma unroll
    for (int j = 0; j < kWideItems; ++j) {
        sure[j] = tie[j] = 0;
        if (s0 + j < S) rule.classify(nb[s0 + j], T, sure[j], tie[j]);
        packed += (tie[j] << 16) | sure[j];
    }
    int before;
    Scan(tmp.scan).ExclusiveSum(packed, before);
    int sure_ex = before & 0xffff, tie_ex = before >> 16;
    const long long out0 = sure_before + std::min(ties_before, rem);
    const long long tie_room = std::max(rem - ties_before, 0LL);  // ties this chunk may still take
#pragma unroll
    for (int j = 0; j < kWideItems; ++j) {
        const bool take = sure[j] || (tie[j] && tie_ex < tie_room);
        if (take) {
            const long long at = out0 + sure_ex + std::min(static_cast<long long>(tie_ex), tie_room);
            if (at < C) ib[at] = static_cast<int32_t>(s0 + j);
        }
        sure_ex += sure[j];
        tie_ex += tie[j];
    }
}

}  // namespace

bool route_select_wide(int64_t B, int64_t S) { return B <= kRouteWideMaxSeqs && S >= kRouteWideMinSeq; }

int64_t route_select_scratch_bytes(int64_t B, int64_t S) {
    return static_cast<int64_t>(align16(static_cast<std::size_t>(B) * 256 * sizeof(unsigned)) +
                                align16(static_cast<std::size_t>(B) * sizeof(WideState)) +
                                static_cast<std::size_t>(B * wide_chunks(S)) * sizeof(uint2));
}

void route_select(Device& d, const float* n, int64_t B, int64_t S, int32_t routing, int64_t k, int64_t C,
                  int32_t* indices, int32_t* counts, void* scratch, RouteSelectWay way) {
    if (B <= 0) return;
    const int topk = routing == HSPMN_ROUTING_TOPK ? 1 : 0;
    const bool wide = way == RouteSelectWay::kWide || (way == RouteSelectWay::kAuto && route_select_wide(B, S));
    if (!wide || S <= 0) {
        route_select_kernel<<<static_cast<unsigned>(B), kThreads, 0, stream(d)>>>(n, S, topk, k, C, indices, counts);
        check_launch("route_select");
        return;
    }
    const WideScratch w = wide_scratch(scratch, B, S);
    const int64_t chunks = wide_chunks(S);
    const WideRule rule{topk, topk && k >= S};
    const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(B));
    route_select_wide_init<<<static_cast<unsigned>(B), 256, 0, stream(d)>>>(w.hist, w.state, k);
    check_launch("route_select (init)");
    if (topk && !rule.all) {
        for (int shift = 24; shift >= 0; shift -= 8) {
            route_select_wide_hist<<<grid, kWideThreads, 0, stream(d)>>>(n, S, shift, w.state, w.hist);
            check_launch("route_select (histogram)");
            route_select_wide_pick<<<static_cast<unsigned>(B), 256, 0, stream(d)>>>(w.hist, w.state, shift);
            check_launch("route_select (pick)");
        }
    }
    route_select_wide_count<<<grid, kWideThreads, 0, stream(d)>>>(n, S, rule, w.state, chunks, w.counts);
    check_launch("route_select (count)");
    route_select_wide_write<<<grid, kWideThreads, 0, stream(d)>>>(n, S, rule, w.state, chunks, w.counts, C, indices,
                                                                  counts);
    check_launch("route_select (write)");
}

}  // namespace hspmn::cuda
