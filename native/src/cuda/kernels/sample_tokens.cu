// sample_tokens on the device (native/README.md "Sampling"): one CTA per row, no host sync, no
// allocation, no exception, so it can sit in a CUDA graph. Bit-identical to cpu/sample_tokens.cpp and
// the Java Sampler because (1) the float steps (x - max, * 1/T, the exp polynomial, * 2^46) are the
// same explicitly rounded operations (__fmul_rn / __fadd_rn: nothing fused), and (2) everything after
// them is integer: masses, counts and their sums are exact in any order, so atomics, warp reductions
// and scans may add them however the hardware schedules and still agree with the CPU's loops.
//
// Tiles. A row of V logits is split into W = blockDim / 32 contiguous chunks of C = ceil(V / W / 32)
// * 32 ids, one per warp, lane-strided inside (coalesced loads; a warp's chunk is in id order, which
// the draw's walk and the tie cut need). blockDim = min(1024, V rounded up to 32): V = 256 is 8 warps
// of one step each, V = 65536 is 32 warps of 64 steps. Phases, each one pass over the row (L1/L2
// resident: 256 KiB at most):
//   1. max, NaN, +Inf (block reductions); greedy ends here with the lowest id holding the max.
//   2. top-k (0 < k < V): radix select of the k-th largest 48-bit key (32 bits of order-preserving
//      logit, 16 of 0xFFFF - id) over the logit bits, 8 per pass into a shared 256-bin count
//      histogram; a tie group left at the end is cut at its r-th lowest id by an ordered count.
//   3. top-p (p < 1): the same select over the kept tokens with a mass histogram (and counts); the
//      first pass's total is the kept mass that p scales. Tied tokens have equal masses, so the tie
//      cut is a count again.
//   4. the draw: per-warp masses of the kept tokens, a warp scan over the W chunk sums locates the
//      chunk of floor(z * total / 2^64), and that warp walks its chunk 32 ids at a time.
// Histogram updates are warp-aggregated (__match_any_sync groups lanes of one bin; the leader adds
// the group's count and mass, split into 23-bit halves for __reduce_add_sync): logits crowd a few
// exponent bins in the first pass, where one shared atomic per lane would serialise 32-way.
// Status: a bad row writes its code as the token and raises a word with atomicMax(2^31 - 1 - row);
// the last CTA to finish (threadfence + ticket) turns it into *status (0, or 1 + the first bad row)
// and resets both words for the next launch or graph replay.
#include <climits>

#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

constexpr int kMaxThreads = 1024;
constexpr unsigned kFull = 0xffffffffu;
using u64 = unsigned long long;

__device__ __forceinline__ float exp_non_positive(float x) {
    const float c = x < -87.33f ? -87.33f : x;
    const float t = __fadd_rn(__fmul_rn(c, 1.44269504f), 12582912.0f);
    const float n = __fsub_rn(t, 12582912.0f);
    const float f = __fsub_rn(__fsub_rn(c, __fmul_rn(n, 0.693145752f)), __fmul_rn(n, 1.42860682e-6f));
    float p = __fmul_rn(f, 0.00138888889f);
    p = __fmul_rn(f, __fadd_rn(0.00833333333f, p));
    p = __fmul_rn(f, __fadd_rn(0.0416666667f, p));
    p = __fmul_rn(f, __fadd_rn(0.166666667f, p));
    p = __fmul_rn(f, __fadd_rn(0.5f, p));
    p = __fmul_rn(f, __fadd_rn(1.0f, p));
    p = __fadd_rn(1.0f, p);
    const float e = __fmul_rn(p, __uint_as_float((__float_as_uint(t) - 0x4B400000u + 127u) << 23));
    return x < -87.33f ? 0.0f : e;
}

__device__ __forceinline__ u64 mass_of(float v, float m, float inv_t) {
    return __float2ull_rz(__fmul_rn(exp_non_positive(__fmul_rn(__fsub_rn(v, m), inv_t)), 70368744177664.0f));
}

__device__ __forceinline__ u64 key_of(float v, int id) {
    const unsigned u = v == 0.0f ? 0u : __float_as_uint(v);
    const unsigned o = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return (static_cast<u64>(o) << 16) | static_cast<u64>(0xFFFF - id);
}

__device__ __forceinline__ u64 warp_scan_incl(u64 v, int lane) {
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const u64 t = __shfl_up_sync(kFull, v, o);
        if (lane >= o) v += t;
    }
    return v;
}

struct Shared {
    unsigned hist_c[256];
    u64 hist_m[256];
    u64 warp_u[32];
    float warp_f[32];
    int warp_i[32];
    // written by one thread between barriers, read by all after
    unsigned prefix;
    u64 above_c, above_m, want, group_c, group_m;
    int pick_warp, pick_id;
    u64 pick_base, pick_rank, target;
};

struct Row {
    const float* x;
    int V, C, steps, warp, lane, W;
    float m, inv_t;
    __device__ __forceinline__ int id(int s) const { return warp * C + s * 32 + lane; }
};

// The r-th (1-based) lowest id among tokens with logit bits `ord` and key >= lo.
__device__ int nth_lowest_id(const Row& r, Shared& sh, unsigned ord, u64 lo, u64 rank) {
    auto member = [&](int i) {  // token i has logit bits ord and key >= lo
        if (i >= r.V) return false;
        const u64 k = key_of(r.x[i], i);
        return (k >> 16) == ord && k >= lo;
    };
    unsigned cnt = 0;
    for (int s = 0; s < r.steps; ++s) {
        cnt += __popc(__ballot_sync(kFull, member(r.id(s))));
    }
    if (r.lane == 0) sh.warp_u[r.warp] = cnt;
    __syncthreads();
    if (r.warp == 0) {
        const u64 c = r.lane < r.W ? sh.warp_u[r.lane] : 0;
        const u64 incl = warp_scan_incl(c, r.lane);
        const int L = __ffs(__ballot_sync(kFull, incl >= rank)) - 1;
        if (r.lane == L) {
            sh.pick_warp = L;
            sh.pick_rank = rank - (incl - c);
        }
    }
    __syncthreads();
    if (r.warp == sh.pick_warp) {
        u64 rem = sh.pick_rank;
        for (int s = 0; s < r.steps; ++s) {
            unsigned bits = __ballot_sync(kFull, member(r.id(s)));
            const unsigned pc = __popc(bits);
            if (rem <= pc) {
                for (u64 j = 1; j < rem; ++j) bits &= bits - 1;
                if (r.lane == 0) sh.pick_id = r.warp * r.C + s * 32 + __ffs(bits) - 1;
                break;
            }
            rem -= pc;
        }
    }
    __syncthreads();
    return sh.pick_id;
}

// The threshold t such that {key >= t} among the candidates {key >= lo} is their shortest key prefix
// whose count reaches `want` (by_mass false), or whose mass reaches min(total, ceil(top_p * total))
// (by_mass true, total = the candidates' mass). Returns max(t, lo).
__device__ u64 select_threshold(const Row& r, Shared& sh, u64 lo, bool by_mass, u64 want, float top_p) {
    unsigned prefix = 0;
    for (int d = 0; d < 4; ++d) {
        const int shift = 24 - 8 * d;
        for (int b = threadIdx.x; b < 256; b += blockDim.x) {
            sh.hist_c[b] = 0;
            sh.hist_m[b] = 0;
        }
        __syncthreads();
        for (int s = 0; s < r.steps; ++s) {
            const int i = r.id(s);
            bool cand = false;
            float v = 0.0f;
            unsigned digit = 0;
            if (i < r.V) {
                v = r.x[i];
                const u64 k = key_of(v, i);
                const unsigned o = static_cast<unsigned>(k >> 16);
                cand = k >= lo && (d == 0 || (o >> (shift + 8)) == (prefix >> (shift + 8)));
                digit = (o >> shift) & 0xFFu;
            }
            if (!__any_sync(kFull, cand)) continue;
            const unsigned peers = __match_any_sync(kFull, cand ? digit : 256u);
            const bool leader = cand && __ffs(peers) - 1 == r.lane;
            if (by_mass) {
                const u64 q = cand ? mass_of(v, r.m, r.inv_t) : 0;
                const unsigned hi = __reduce_add_sync(peers, static_cast<unsigned>(q >> 23));
                const unsigned lo23 = __reduce_add_sync(peers, static_cast<unsigned>(q & 0x7FFFFFu));
                if (leader) atomicAdd(&sh.hist_m[digit], (static_cast<u64>(hi) << 23) + lo23);
            }
            if (leader) atomicAdd(&sh.hist_c[digit], static_cast<unsigned>(__popc(peers)));
        }
        __syncthreads();
        if (r.warp == 0) {
            // lane l holds bins 255 - 8l down to 248 - 8l: lane order is descending key order
            u64 c8 = 0, m8 = 0;
            for (int j = 0; j < 8; ++j) {
                c8 += sh.hist_c[255 - 8 * r.lane - j];
                m8 += sh.hist_m[255 - 8 * r.lane - j];
            }
            const u64 ac = d == 0 ? 0 : sh.above_c, am = d == 0 ? 0 : sh.above_m;
            if (by_mass && d == 0) {
                u64 total = m8;
                for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(kFull, total, o);
                const double p_total = __dmul_rn(static_cast<double>(top_p), __ull2double_rn(total));
                const u64 need = __double2ull_rz(ceil(p_total));
                want = need < total ? need : total;
            } else if (d > 0) {
                want = sh.want;
            }
            const u64 ic = warp_scan_incl(c8, r.lane), im = warp_scan_incl(m8, r.lane);
            const bool reached = by_mass ? am + im >= want : ac + ic >= want;
            const int L = __ffs(__ballot_sync(kFull, reached)) - 1;
            if (r.lane == L) {
                u64 ec = ic - c8, em = im - m8;
                int digit = 255 - 8 * L - 7;
                for (int j = 0; j < 8; ++j) {
                    const int b = 255 - 8 * L - j;
                    const u64 nc = ec + sh.hist_c[b], nm = em + sh.hist_m[b];
                    if (by_mass ? am + nm >= want : ac + nc >= want) {
                        digit = b;
                        break;
                    }
                    ec = nc;
                    em = nm;
                }
                sh.above_c = ac + ec;
                sh.above_m = am + em;
                sh.want = want;
                sh.group_c = sh.hist_c[digit];
                sh.group_m = sh.hist_m[digit];
                sh.prefix = prefix | (static_cast<unsigned>(digit) << shift);
            }
        }
        __syncthreads();
        prefix = sh.prefix;
    }
    // The tie group: candidates whose logit bits are `prefix`, all of equal mass.
    const u64 g = sh.group_c, need = sh.want;
    const u64 take = by_mass ? (need - sh.above_m + sh.group_m / g - 1) / (sh.group_m / g) : need - sh.above_c;
    __syncthreads();  // the shared words above are rewritten by the next select or the tie cut
    u64 t = static_cast<u64>(prefix) << 16;
    if (take < g) t |= static_cast<u64>(0xFFFF - nth_lowest_id(r, sh, prefix, lo, take));
    return t > lo ? t : lo;
}

// logits: [n, V] f32  params: [n]  tokens: [n] i32  status: [1] i32  state: [2] u32 {tickets, bad word}
__global__ void __launch_bounds__(kMaxThreads) sample_tokens_kernel(const float* __restrict__ logits, int V, int C,
                                                                   const hspmn_sampling_params* __restrict__ params,
                                                                   int32_t* __restrict__ tokens,
                                                                   int32_t* __restrict__ status,
                                                                   unsigned* __restrict__ state) {
    __shared__ Shared sh;
    const int row = blockIdx.x;
    Row r;
    r.x = logits + static_cast<int64_t>(row) * V;
    r.V = V;
    r.C = C;
    r.steps = C / 32;
    r.warp = threadIdx.x >> 5;
    r.lane = threadIdx.x & 31;
    r.W = blockDim.x >> 5;
    const hspmn_sampling_params p = params[row];

    // 1. max, NaN, +Inf
    float mx = -INFINITY;
    bool nan = false, pos_inf = false;
    for (int s = 0; s < r.steps; ++s) {
        const int i = r.id(s);
        if (i < V) {
            const float v = r.x[i];
            nan |= v != v;
            pos_inf |= v == INFINITY;
            mx = fmaxf(mx, v);  // NaN is flagged above; fmaxf skips it
        }
    }
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, o));
    if (r.lane == 0) sh.warp_f[r.warp] = mx;
    nan = __syncthreads_or(nan);
    pos_inf = __syncthreads_or(pos_inf);
    mx = -INFINITY;
    for (int w = 0; w < r.W; ++w) mx = fmaxf(mx, sh.warp_f[w]);
    r.m = mx;

    int32_t token = nan ? -1 : pos_inf ? -2 : mx == -INFINITY ? -3 : 0;
    if (token == 0 && p.temperature == 0.0f) {
        int first = INT_MAX;
        for (int s = 0; s < r.steps && first == INT_MAX; ++s) {
            const int i = r.id(s);
            if (i < V && r.x[i] == mx) first = i;
        }
        for (int o = 16; o > 0; o >>= 1) first = min(first, __shfl_xor_sync(kFull, first, o));
        if (r.lane == 0) sh.warp_i[r.warp] = first;
        __syncthreads();
        for (int w = 0; w < r.W; ++w) first = min(first, sh.warp_i[w]);
        token = first;
    } else if (token == 0) {
        r.inv_t = __fdiv_rn(1.0f, p.temperature);
        const bool cut_k = p.top_k > 0 && p.top_k < V, cut_p = p.top_p < 1.0f;
        u64 thr = 0;
        if (cut_k) thr = select_threshold(r, sh, 0, false, static_cast<u64>(p.top_k), 1.0f);
        if (cut_p) thr = select_threshold(r, sh, thr, true, 0, p.top_p);

        // 4. the draw: chunk sums, the chunk holding the target, a walk through it
        u64 part = 0;
        for (int s = 0; s < r.steps; ++s) {
            const int i = r.id(s);
            if (i < V) {
                const float v = r.x[i];
                if (key_of(v, i) >= thr) part += mass_of(v, r.m, r.inv_t);
            }
        }
        for (int o = 16; o > 0; o >>= 1) part += __shfl_xor_sync(kFull, part, o);
        if (r.lane == 0) sh.warp_u[r.warp] = part;
        __syncthreads();
        if (r.warp == 0) {
            const u64 c = r.lane < r.W ? sh.warp_u[r.lane] : 0;
            const u64 incl = warp_scan_incl(c, r.lane);
            const u64 total = __shfl_sync(kFull, incl, 31);
            u64 z = p.seed + static_cast<u64>(p.draw) * 0x9E3779B97F4A7C15ull;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
            z ^= z >> 31;
            const u64 target = __umul64hi(z, total);
            const int L = __ffs(__ballot_sync(kFull, incl > target)) - 1;
            if (r.lane == L) {
                sh.pick_warp = L;
                sh.pick_base = incl - c;
                sh.target = target;
            }
        }
        __syncthreads();
        if (r.warp == sh.pick_warp) {
            u64 acc = sh.pick_base;
            const u64 target = sh.target;
            for (int s = 0; s < r.steps; ++s) {
                const int i = r.id(s);
                u64 q = 0;
                if (i < V) {
                    const float v = r.x[i];
                    if (key_of(v, i) >= thr) q = mass_of(v, r.m, r.inv_t);
                }
                const u64 incl = warp_scan_incl(q, r.lane);
                const unsigned hit = __ballot_sync(kFull, acc + incl > target);
                if (hit) {
                    if (r.lane == 0) sh.pick_id = r.warp * C + s * 32 + __ffs(hit) - 1;
                    break;
                }
                acc += __shfl_sync(kFull, incl, 31);
            }
        }
        __syncthreads();
        token = sh.pick_id;
    }

    if (threadIdx.x == 0) {
        tokens[row] = token;
        if (token < 0) atomicMax(&state[1], 0x7FFFFFFFu - static_cast<unsigned>(row));
        __threadfence();
        if (atomicAdd(&state[0], 1u) == gridDim.x - 1) {
            __threadfence();  // every other CTA's bad word is in before its ticket
            const unsigned bad = atomicExch(&state[1], 0u);
            *status = bad ? static_cast<int32_t>(0x7FFFFFFFu - bad) + 1 : 0;
            atomicExch(&state[0], 0u);
        }
    }
}

}  // namespace

void sample_tokens(Device& d, const float* logits, int64_t n, int64_t V, const hspmn_sampling_params* params,
                   int32_t* tokens, int32_t* status, unsigned* state) {
    if (n <= 0) {  // no CTA would write the status
        check(cudaMemsetAsync(status, 0, sizeof(int32_t), stream(d)), "cudaMemsetAsync (sample_tokens)");
        return;
    }
    const int threads = static_cast<int>(V >= kMaxThreads ? kMaxThreads : (V + 31) / 32 * 32);
    const int64_t per_warp = (V + threads / 32 - 1) / (threads / 32);
    const int chunk = static_cast<int>((per_warp + 31) / 32 * 32);
    sample_tokens_kernel<<<static_cast<unsigned>(n), threads, 0, stream(d)>>>(logits, static_cast<int>(V), chunk,
                                                                             params, tokens, status, state);
    check_launch("sample_tokens");
}

}  // namespace hspmn::cuda
