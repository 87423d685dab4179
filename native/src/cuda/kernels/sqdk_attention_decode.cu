// sqdk_attention_decode: sqdk_attention for decode steps, one query per slot, split along the keys.
//
// The Triton kernel gives each (query tile, head) one program: at one query per slot that is H
// programs per slot walking the whole cache, a few percent of the machine at B = 1. Here a block
// takes one (slot, KV head, chunk of keys) for every query head of its GQA group, so each K/V row is
// read once per step, and a 32k cache spreads over hundreds of blocks (flash-decoding). The last block
// of a (slot, KV head) to finish (a counter) merges the chunks in chunk order, so results do not
// depend on scheduling.
//
// Arithmetic as the Triton forward: scores in base 2 (q . k / sqrt(Dh) * log2 e), an online softmax,
// p rounded to bf16 before it weights V (its tl.dot takes p as bf16), l summed from unrounded p.
#include <algorithm>
#include <cmath>

#include "../../core/error.h"
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

using bf16 = __nv_bfloat16;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kSub = 256;       // keys scored per round (the scores' shared-memory tile)
constexpr int kMaxGroup = 8;    // query heads per KV head

struct Args {
    const bf16* q;              // [seqs, H * Dh]
    const int32_t* qpos;        // [seqs]
    const int32_t* qcnt;        // [seqs]: 1 when the slot has a query this step
    const bf16* k;              // [seqs, max_len, Hkv * Dh]
    const bf16* v;
    bf16* o;                    // [seqs, H * Dh]
    float* lse;                 // [seqs, H] (natural log)
    float* partials;            // [seqs, Hkv, splits, G, Dh + 2]: unnormalised o, then m, l
    unsigned* counters;         // [seqs, Hkv], zero between launches
    int64_t max_len;
    int H, Hkv, G, chunk, splits;
    float scale_log2;           // 1/sqrt(Dh) * log2(e)
};

// DPL consecutive bf16 in one load (8 bytes for DPL = 4).
template <int DPL>
__device__ __forceinline__ void load_dims(const bf16* p, float* f) {
    if constexpr (DPL == 4) {
        const uint2 u = *reinterpret_cast<const uint2*>(p);
        const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
        const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
        f[0] = a.x, f[1] = a.y, f[2] = b.x, f[3] = b.y;
    } else if constexpr (DPL == 2) {
        const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
        f[0] = a.x, f[1] = a.y;
    } else {
        f[0] = __bfloat162float(*p);
    }
}

// DPL: head dims per lane in the scoring (Dh = 32 DPL).
template <int DPL>
__global__ void __launch_bounds__(kThreads) sqdk_attention_decode_kernel(Args a) {
    constexpr int Dh = 32 * DPL;
    const int split = blockIdx.x, kvh = blockIdx.y, slot = blockIdx.z;
    if (a.qcnt[slot] == 0) return;
    const int64_t p = a.qpos[slot];
    const int64_t keys = std::min<int64_t>(p, a.max_len - 1) + 1;  // 0 .. min(p, S-1), as row_limit
    const int nsplit = static_cast<int>((keys + a.chunk - 1) / a.chunk);
    if (split >= nsplit) return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, G = a.G;
    const int64_t KV = static_cast<int64_t>(a.Hkv) * Dh, D = static_cast<int64_t>(a.H) * Dh;
    const bf16* kbase = a.k + static_cast<int64_t>(slot) * a.max_len * KV + kvh * Dh;
    const bf16* vbase = a.v + static_cast<int64_t>(slot) * a.max_len * KV + kvh * Dh;
    const int64_t k0 = static_cast<int64_t>(split) * a.chunk, k1 = std::min<int64_t>(k0 + a.chunk, keys);

    __shared__ float s[kMaxGroup][kSub];       // scores, then p
    __shared__ float alpha_s[kMaxGroup], m_s[kMaxGroup], l_s[kMaxGroup];

    // This lane's dims of each query head of the group, scaled into base 2.
    float qr[kMaxGroup][DPL];
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g)
#pragma unroll
        for (int i = 0; i < DPL; ++i)
            qr[g][i] = g < G ? __bfloat162float(a.q[static_cast<int64_t>(slot) * D + (kvh * G + g) * Dh + lane * DPL + i]) *
                                   a.scale_log2
                             : 0.0f;

    // V accumulation layout: thread t owns dim pair t % (Dh/2) for keys of group t / (Dh/2).
    constexpr int kPairs = Dh / 2, kGroups = kThreads / kPairs;
    const int pair = threadIdx.x % kPairs, kgroup = threadIdx.x / kPairs;
    float acc[kMaxGroup][2];
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) acc[g][0] = acc[g][1] = 0.0f;
    if (threadIdx.x < kMaxGroup) {
        m_s[threadIdx.x] = -INFINITY;
        l_s[threadIdx.x] = 0.0f;
    }

    for (int64_t kb = k0; kb < k1; kb += kSub) {
        const int n = static_cast<int>(std::min<int64_t>(kSub, k1 - kb));
        // 1. scores: a warp per key, each lane DPL dims, one warp sum per query head
        for (int j = warp; j < n; j += kWarps) {
            float kf[DPL];
            load_dims<DPL>(kbase + (kb + j) * KV + lane * DPL, kf);
#pragma unroll
            for (int g = 0; g < kMaxGroup; ++g) {
                if (g >= G) break;
                float dot = 0.0f;
#pragma unroll
                for (int i = 0; i < DPL; ++i) dot += qr[g][i] * kf[i];
                dot = kern::warp_sum(dot);
                if (lane == 0) s[g][j] = dot;
            }
        }
        __syncthreads();
        // 2. per head: the round's maximum, p = 2^(s - m), l; warp g takes head g (and g + 4)
        for (int g = warp; g < G; g += kWarps) {
            float mx = -INFINITY;
            for (int j = lane; j < n; j += 32) mx = fmaxf(mx, s[g][j]);
            for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            const float m_new = fmaxf(m_s[g], mx);
            float sum = 0.0f;
            for (int j = lane; j < n; j += 32) {
                const float pj = exp2f(s[g][j] - m_new);
                s[g][j] = pj;
                sum += pj;
            }
            sum = kern::warp_sum(sum);
            if (lane == 0) {
                const float alpha = exp2f(m_s[g] - m_new);  // 0 in the first round (m_s = -inf)
                alpha_s[g] = alpha;
                l_s[g] = l_s[g] * alpha + sum;
                m_s[g] = m_new;
            }
        }
        __syncthreads();
        // 3. o = o alpha + sum_j bf16(p_j) v_j over this thread's keys
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g) {
            if (g >= G) break;
            acc[g][0] *= alpha_s[g];
            acc[g][1] *= alpha_s[g];
        }
        for (int j = kgroup; j < n; j += kGroups) {
            const float2 vv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(vbase + (kb + j) * KV + 2 * pair));
#pragma unroll
            for (int g = 0; g < kMaxGroup; ++g) {
                if (g >= G) break;
                const float pj = __bfloat162float(__float2bfloat16_rn(s[g][j]));
                acc[g][0] += pj * vv.x;
                acc[g][1] += pj * vv.y;
            }
        }
        __syncthreads();  // s is rewritten by the next round
    }

    // The key groups' partial o, summed in group order, into this split's partial.
    const int64_t frag = Dh + 2;
    const int64_t sh = (static_cast<int64_t>(slot) * a.Hkv + kvh) * a.splits;
    float* mine = a.partials + (sh + split) * G * frag;
    for (int r = 0; r < kGroups; ++r) {
        if (kgroup == r) {
#pragma unroll
            for (int g = 0; g < kMaxGroup; ++g) {
                if (g >= G) break;
                float* dst = mine + g * frag + 2 * pair;
                if (r == 0) {
                    dst[0] = acc[g][0];
                    dst[1] = acc[g][1];
                } else {
                    dst[0] += acc[g][0];
                    dst[1] += acc[g][1];
                }
            }
        }
        __syncthreads();
    }
    if (threadIdx.x < G) {
        mine[threadIdx.x * frag + Dh] = m_s[threadIdx.x];
        mine[threadIdx.x * frag + Dh + 1] = l_s[threadIdx.x];
    }
    __threadfence();
    __syncthreads();
    __shared__ unsigned done;
    if (threadIdx.x == 0) done = atomicAdd(&a.counters[slot * a.Hkv + kvh], 1u);
    __syncthreads();
    if (done != static_cast<unsigned>(nsplit - 1)) return;
    __threadfence();
    // The last block merges the splits in order: o = sum 2^(m_s - M) o_s / sum 2^(m_s - M) l_s.
    const float* all = a.partials + sh * G * frag;
    for (int e = threadIdx.x; e < G * Dh; e += kThreads) {
        const int g = e / Dh, dcol = e - g * Dh;
        float M = -INFINITY;
        for (int sp = 0; sp < nsplit; ++sp) M = fmaxf(M, __ldcg(all + (sp * G + g) * frag + Dh));
        float num = 0.0f, den = 0.0f;
        for (int sp = 0; sp < nsplit; ++sp) {
            const float* part = all + (sp * G + g) * frag;
            const float w = exp2f(__ldcg(part + Dh) - M);
            num += w * __ldcg(part + dcol);
            den += w * __ldcg(part + Dh + 1);
        }
        const int h = kvh * G + g;
        a.o[static_cast<int64_t>(slot) * D + h * Dh + dcol] = __float2bfloat16_rn(num / den);
        if (dcol == 0) a.lse[static_cast<int64_t>(slot) * a.H + h] = (M + log2f(den)) * 0.6931471805599453f;
    }
    if (threadIdx.x == 0) a.counters[slot * a.Hkv + kvh] = 0;
}

}  // namespace

bool sqdk_attention_decode_fits(int64_t H, int64_t Hkv, int64_t Dh) {
    return (Dh == 32 || Dh == 64 || Dh == 128) && Hkv >= 1 && H % Hkv == 0 && H / Hkv <= kMaxGroup;
}

int64_t sqdk_attention_decode_chunk(int64_t max_len) {
    // 512 keys per block up to 128k (a 32k cache is 64 blocks per KV head); longer caches keep about
    // 256 blocks per KV head, so a launch never has more than that many blocks per slot and head.
    const int64_t c = std::max<int64_t>(512, (max_len + 255) / 256);
    return (c + kSub - 1) / kSub * kSub;
}

void sqdk_attention_decode_scratch(Device& d, DecodeAttentionScratch& s, int64_t seqs, int64_t max_len, int64_t H,
                                   int64_t Hkv, int64_t Dh) {
    const int64_t splits = (max_len + sqdk_attention_decode_chunk(max_len) - 1) / sqdk_attention_decode_chunk(max_len);
    const std::size_t part = static_cast<std::size_t>(seqs * Hkv * splits * (H / Hkv) * (Dh + 2)) * sizeof(float);
    const std::size_t cnt = static_cast<std::size_t>(seqs * Hkv) * sizeof(unsigned);
    if (s.partials.bytes() < part) s.partials.ensure(d, part);
    if (s.counters.bytes() < cnt) {
        s.counters.ensure(d, cnt);
        s.counters.zero(d);
    }
}

void sqdk_attention_decode(Device& d, int64_t seqs, int64_t max_len, int64_t H, int64_t Hkv, int64_t Dh,
                           const __nv_bfloat16* q, const int32_t* qpos, const int32_t* qcnt, const __nv_bfloat16* k,
                           const __nv_bfloat16* v, __nv_bfloat16* o, float* lse, DecodeAttentionScratch& s) {
    if (!sqdk_attention_decode_fits(H, Hkv, Dh))
        fail(HSPMN_ERR_INTERNAL, "sqdk_attention_decode: H %lld, Hkv %lld, Dh %lld outside its shapes",
             static_cast<long long>(H), static_cast<long long>(Hkv), static_cast<long long>(Dh));
    const int64_t chunk = sqdk_attention_decode_chunk(max_len), splits = (max_len + chunk - 1) / chunk;
    const std::size_t part = static_cast<std::size_t>(seqs * Hkv * splits * (H / Hkv) * (Dh + 2)) * sizeof(float);
    if (s.partials.bytes() < part || s.counters.bytes() < static_cast<std::size_t>(seqs * Hkv) * sizeof(unsigned))
        fail(HSPMN_ERR_INTERNAL, "sqdk_attention_decode: scratch not sized for %lld slots of %lld",
             static_cast<long long>(seqs), static_cast<long long>(max_len));
    if (seqs > 65535 || Hkv > 65535 || splits > 0x7fffffff)
        fail(HSPMN_ERR_SHAPE, "sqdk_attention_decode: grid (%lld, %lld, %lld) exceeds CUDA's limits",
             static_cast<long long>(splits), static_cast<long long>(Hkv), static_cast<long long>(seqs));
    Args a{q, qpos, qcnt, k, v, o, lse, s.partials.as<float>(), s.counters.as<unsigned>(), max_len,
           static_cast<int>(H), static_cast<int>(Hkv), static_cast<int>(H / Hkv), static_cast<int>(chunk),
           static_cast<int>(splits), static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dh)) * 1.4426950408889634)};
    const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(Hkv), static_cast<unsigned>(seqs));
    switch (Dh) {
        case 32: sqdk_attention_decode_kernel<1><<<grid, kThreads, 0, stream(d)>>>(a); break;
        case 64: sqdk_attention_decode_kernel<2><<<grid, kThreads, 0, stream(d)>>>(a); break;
        default: sqdk_attention_decode_kernel<4><<<grid, kThreads, 0, stream(d)>>>(a); break;
    }
    check_launch("sqdk_attention_decode");
}

}  // namespace hspmn::cuda
