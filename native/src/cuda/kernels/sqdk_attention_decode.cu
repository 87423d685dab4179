// sqdk_attention_decode: sqdk_attention for decode steps, one query per slot, split along the keys.
//
// The Triton kernel gives each (query tile, head) one program: at one query per slot that is H
// programs per slot walking the whole cache, a few percent of the machine at B = 1. Here a block
// takes one (slot, KV head, chunk of keys) for every query head of its GQA group, so each K/V row is
// read once per step, and a 32k cache spreads over hundreds of blocks (flash-decoding). A second
// launch merges each (slot, head)'s chunks in chunk order, so results do not depend on scheduling. Its p are relative to its own running maximum, not the Triton kernel's
// sequential one, so their bf16 roundings differ: the step path agrees with the forward to bf16
// accuracy, not to f32 order (check_decode.py says how that is checked).
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

// The 8 bf16 of one 16-byte load as f32.
__device__ __forceinline__ void unpack8(const uint4& v, float* f) {
    const __nv_bfloat162* h2 = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 t = __bfloat1622float2(h2[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

struct Args {
    const bf16* q;              // [seqs, H * Dh]
    const int32_t* qpos;        // [seqs]
    const int32_t* qcnt;        // [seqs]: 1 when the slot has a query this step
    const bf16* k;              // [seqs, max_len, Hkv * Dh]
    const bf16* v;
    bf16* o;                    // [seqs, H * Dh]
    float* lse;                 // [seqs, H] (natural log)
    float* partials;            // [seqs, Hkv, splits, G, Dh + 2]: unnormalised o, then m, l
    int64_t max_len;
    int H, Hkv, G, chunk, splits;
    float scale_log2;           // 1/sqrt(Dh) * log2(e)
};

// One (slot, KV head, chunk of keys) per block, every query head of the GQA group at once.
//   scores: a thread per key, the whole K row in 16-byte loads against the group's queries in shared
//           memory (read by every lane at once: broadcasts), so no shuffles and many loads in flight;
//   softmax: a warp per head over the round's scores (online across rounds);
//   values:  Dh/8 threads per V row (one 16-byte load each), kThreads*8/Dh rows at a time, each
//            thread summing its rows into G x 8 accumulators, summed across rows at the end.
template <int Dh>
__global__ void __launch_bounds__(kThreads) sqdk_attention_decode_kernel(Args a) {
    constexpr int kVec = Dh / 8;                 // 16-byte pieces of a row
    constexpr int kRowsAtOnce = kThreads / kVec;  // V rows one pass of the block covers
    kern::pdl_wait();
    kern::pdl_launch_dependents();
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

    __shared__ __align__(16) float q_s[kMaxGroup][Dh];
    __shared__ float s[kMaxGroup][kSub];  // scores, then p
    __shared__ float alpha_s[kMaxGroup], m_s[kMaxGroup], l_s[kMaxGroup];
    __shared__ __align__(16) float red[kRowsAtOnce][kMaxGroup][8 * kVec];

    for (int e = threadIdx.x; e < G * Dh; e += kThreads)
        q_s[e / Dh][e % Dh] = __bfloat162float(a.q[static_cast<int64_t>(slot) * D + (kvh * G) * Dh + e]);
    if (threadIdx.x < kMaxGroup) {
        m_s[threadIdx.x] = -INFINITY;
        l_s[threadIdx.x] = 0.0f;
    }
    const int piece = threadIdx.x % kVec, row0 = threadIdx.x / kVec;
    float acc[kMaxGroup][8];
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g)
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g][i] = 0.0f;
    __syncthreads();

    for (int64_t kb = k0; kb < k1; kb += kSub) {
        const int n = static_cast<int>(std::min<int64_t>(kSub, k1 - kb));
        // 1. scores
        for (int j = threadIdx.x; j < n; j += kThreads) {
            const uint4* kr = reinterpret_cast<const uint4*>(kbase + (kb + j) * KV);
            uint4 kv[kVec];
#pragma unroll
            for (int c = 0; c < kVec; ++c) kv[c] = __ldg(kr + c);
            float dot[kMaxGroup];
#pragma unroll
            for (int g = 0; g < kMaxGroup; ++g) dot[g] = 0.0f;
#pragma unroll
            for (int c = 0; c < kVec; ++c) {
                float kf[8];
                unpack8(kv[c], kf);
#pragma unroll
                for (int g = 0; g < kMaxGroup; ++g) {
                    if (g >= G) break;
                    const float4 qa = *reinterpret_cast<const float4*>(&q_s[g][c * 8]);
                    const float4 qb = *reinterpret_cast<const float4*>(&q_s[g][c * 8 + 4]);
                    dot[g] += qa.x * kf[0] + qa.y * kf[1] + qa.z * kf[2] + qa.w * kf[3] + qb.x * kf[4] +
                              qb.y * kf[5] + qb.z * kf[6] + qb.w * kf[7];
                }
            }
#pragma unroll
            for (int g = 0; g < kMaxGroup; ++g)
                if (g < G) s[g][j] = dot[g] * a.scale_log2;
        }
        __syncthreads();
        // 2. per head: the round's maximum, p = 2^(s - m), l
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
        // 3. o = o alpha + sum_j bf16(p_j) v_j: this thread's 8 dims of rows row0, row0 + kRowsAtOnce, ...
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g) {
            if (g >= G) break;
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[g][i] *= alpha_s[g];
        }
#pragma unroll 4
        for (int j = row0; j < n; j += kRowsAtOnce) {
            float vf[8];
            unpack8(__ldg(reinterpret_cast<const uint4*>(vbase + (kb + j) * KV) + piece), vf);
#pragma unroll
            for (int g = 0; g < kMaxGroup; ++g) {
                if (g >= G) break;
                const float pj = __bfloat162float(__float2bfloat16_rn(s[g][j]));
#pragma unroll
                for (int i = 0; i < 8; ++i) acc[g][i] += pj * vf[i];
            }
        }
        __syncthreads();  // s is rewritten by the next round
    }

    // The rows' partial o summed in row order, then this split's partial out.
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
        if (g >= G) break;
#pragma unroll
        for (int i = 0; i < 8; ++i) red[row0][g][piece * 8 + i] = acc[g][i];
    }
    __syncthreads();
    const int64_t frag = Dh + 2;
    const int64_t sh = (static_cast<int64_t>(slot) * a.Hkv + kvh) * a.splits;
    float* mine = a.partials + (sh + split) * G * frag;
    for (int e = threadIdx.x; e < G * Dh; e += kThreads) {
        const int g = e / Dh, dcol = e - g * Dh;
        float sum = 0.0f;
        for (int r = 0; r < kRowsAtOnce; ++r) sum += red[r][g][dcol];
        mine[g * frag + dcol] = sum;
    }
    if (threadIdx.x < G) {
        mine[threadIdx.x * frag + Dh] = m_s[threadIdx.x];
        mine[threadIdx.x * frag + Dh + 1] = l_s[threadIdx.x];
    }
}

// Merges a (slot, head)'s splits in split order: o = sum 2^(m_s - M) o_s / sum 2^(m_s - M) l_s.
// Thread t takes dim t % Dh of the splits s = t / Dh (mod kSubsets); the subsets' sums are added in
// subset order, so the result does not depend on scheduling.
template <int Dh>
__global__ void __launch_bounds__(kThreads * 2) sqdk_attention_decode_combine_kernel(Args a) {
    constexpr int kSubsets = kThreads * 2 / Dh;
    kern::pdl_wait();
    kern::pdl_launch_dependents();
    const int h = blockIdx.x, slot = blockIdx.y, G = a.G, kvh = h / G, g = h - kvh * G;
    if (a.qcnt[slot] == 0) return;
    const int64_t keys = std::min<int64_t>(a.qpos[slot], a.max_len - 1) + 1;
    const int nsplit = static_cast<int>((keys + a.chunk - 1) / a.chunk);
    const int64_t frag = Dh + 2, D = static_cast<int64_t>(a.H) * Dh;
    const float* all = a.partials + (static_cast<int64_t>(slot) * a.Hkv + kvh) * a.splits * G * frag + g * frag;
    const int d = threadIdx.x % Dh, sub = threadIdx.x / Dh;
    float M = -INFINITY;
    for (int sp = 0; sp < nsplit; ++sp) M = fmaxf(M, all[sp * G * frag + Dh]);
    float num = 0.0f, den = 0.0f;
#pragma unroll 8
    for (int sp = sub; sp < nsplit; sp += kSubsets) {
        const float* part = all + sp * G * frag;
        const float w = exp2f(part[Dh] - M);
        num += w * part[d];
        den += w * part[Dh + 1];
    }
    __shared__ float red[kSubsets][Dh][2];
    red[sub][d][0] = num;
    red[sub][d][1] = den;
    __syncthreads();
    if (sub != 0) return;
    for (int r = 1; r < kSubsets; ++r) {
        num += red[r][d][0];
        den += red[r][d][1];
    }
    a.o[static_cast<int64_t>(slot) * D + h * Dh + d] = __float2bfloat16_rn(num / den);
    if (d == 0) a.lse[static_cast<int64_t>(slot) * a.H + h] = (M + log2f(den)) * 0.6931471805599453f;
}

}  // namespace

bool sqdk_attention_decode_fits(int64_t H, int64_t Hkv, int64_t Dh) {
    return (Dh == 32 || Dh == 64 || Dh == 128) && Hkv >= 1 && H % Hkv == 0 && H / Hkv <= kMaxGroup;
}

int64_t sqdk_attention_decode_chunk(int64_t max_len) {
    // One round of kSub keys per block up to 64k keys (a 32k cache is 128 blocks per KV head); longer
    // caches keep about 256 blocks per KV head and loop over rounds.
    const int64_t c = std::max<int64_t>(kSub, (max_len + 255) / 256);
    return (c + kSub - 1) / kSub * kSub;
}

// The splits' partials: [seqs, Hkv, splits, G, Dh + 2] f32.
static std::size_t partials_bytes(int64_t seqs, int64_t max_len, int64_t H, int64_t Hkv, int64_t Dh) {
    const int64_t chunk = sqdk_attention_decode_chunk(max_len), splits = (max_len + chunk - 1) / chunk;
    return static_cast<std::size_t>(seqs * Hkv * splits * (H / Hkv) * (Dh + 2)) * sizeof(float);
}

void sqdk_attention_decode_scratch(Device& d, DecodeAttentionScratch& s, int64_t seqs, int64_t max_len, int64_t H,
                                   int64_t Hkv, int64_t Dh) {
    const std::size_t part = partials_bytes(seqs, max_len, H, Hkv, Dh);
    if (s.partials.bytes() < part) s.partials.ensure(d, part);
}

void sqdk_attention_decode(Device& d, int64_t seqs, int64_t max_len, int64_t H, int64_t Hkv, int64_t Dh,
                           const __nv_bfloat16* q, const int32_t* qpos, const int32_t* qcnt, const __nv_bfloat16* k,
                           const __nv_bfloat16* v, __nv_bfloat16* o, float* lse, DecodeAttentionScratch& s) {
    if (!sqdk_attention_decode_fits(H, Hkv, Dh))
        fail(HSPMN_ERR_INTERNAL, "sqdk_attention_decode: H %lld, Hkv %lld, Dh %lld outside its shapes",
             static_cast<long long>(H), static_cast<long long>(Hkv), static_cast<long long>(Dh));
    const int64_t chunk = sqdk_attention_decode_chunk(max_len), splits = (max_len + chunk - 1) / chunk;
    if (s.partials.bytes() < partials_bytes(seqs, max_len, H, Hkv, Dh))
        fail(HSPMN_ERR_INTERNAL, "sqdk_attention_decode: scratch not sized for %lld slots of %lld",
             static_cast<long long>(seqs), static_cast<long long>(max_len));
    if (seqs > 65535 || H > 65535 || splits > 0x7fffffff)
        fail(HSPMN_ERR_SHAPE, "sqdk_attention_decode: grid (%lld, %lld, %lld) exceeds CUDA's limits",
             static_cast<long long>(splits), static_cast<long long>(Hkv), static_cast<long long>(seqs));
    Args a{q, qpos, qcnt, k, v, o, lse, s.partials.as<float>(), max_len,
           static_cast<int>(H), static_cast<int>(Hkv), static_cast<int>(H / Hkv), static_cast<int>(chunk),
           static_cast<int>(splits), static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dh)) * 1.4426950408889634)};
    const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(Hkv), static_cast<unsigned>(seqs));
    const dim3 heads(static_cast<unsigned>(H), static_cast<unsigned>(seqs));
    switch (Dh) {
        case 32:
            kern::launch_pdl(sqdk_attention_decode_kernel<32>, grid, dim3(kThreads), 0, stream(d), a);
            kern::launch_pdl(sqdk_attention_decode_combine_kernel<32>, heads, dim3(kThreads * 2), 0, stream(d), a);
            break;
        case 64:
            kern::launch_pdl(sqdk_attention_decode_kernel<64>, grid, dim3(kThreads), 0, stream(d), a);
            kern::launch_pdl(sqdk_attention_decode_combine_kernel<64>, heads, dim3(kThreads * 2), 0, stream(d), a);
            break;
        default:
            kern::launch_pdl(sqdk_attention_decode_kernel<128>, grid, dim3(kThreads), 0, stream(d), a);
            kern::launch_pdl(sqdk_attention_decode_combine_kernel<128>, heads, dim3(kThreads * 2), 0, stream(d), a);
            break;
    }
    check_launch("sqdk_attention_decode");
}

}  // namespace hspmn::cuda
