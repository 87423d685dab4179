// The per-row ops of a decode step (CudaBlock::decode_step), fused: what decode runs as seven
// launches before its GEMMs (router, select, rows, two norms, conv, conv-cache shift) is one block per
// row here, and RoPE plus the K cache write one more. Each keeps the arithmetic of the kernel it
// replaces (router.cu, rms_norm.cu, decode.cu, rope.cu), so a step computes what decode computes.
#include "../../core/error.h"
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

using bf16 = __nv_bfloat16;

constexpr int kPreThreads = 256;
constexpr int kMaxConvK = kern::kConvVecK;  // as decode.cu's vector conv

__global__ void __launch_bounds__(kPreThreads) decode_step_pre_kernel(
    const bf16* __restrict__ x, const bf16* __restrict__ router_w, const bf16* __restrict__ router_b,
    const bf16* __restrict__ log_temp, const bf16* __restrict__ reflex_norm_w, const bf16* __restrict__ attn_norm_w,
    float eps, const bf16* __restrict__ conv_w, int K, bf16* __restrict__ conv_cache, const int32_t* __restrict__ slot,
    const int32_t* __restrict__ pos, int64_t D, int64_t max_len, bf16* __restrict__ c, bf16* __restrict__ a,
    int32_t* __restrict__ routed, int32_t* __restrict__ qpos, int32_t* __restrict__ qcnt,
    int64_t* __restrict__ row_cache) {
    kern::pdl_wait();  // x is the previous layer's output
    kern::pdl_launch_dependents();
    const int64_t r = blockIdx.x;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int32_t s = slot[r];
    const int64_t p = pos[r];
    const bf16* xr = x + r * D;
    __shared__ float rstd_s, score_s;
    if (warp == 0) {
        // rms_norm_forward_kernel's vector path: lane sums of 8-wide loads, then the warp sum
        float ss = 0.0f;
        for (int64_t d = lane * 8; d < D; d += 256) {
            float f[8];
            kern::load8(xr + d, f);
#pragma unroll
            for (int i = 0; i < 8; ++i) ss += f[i] * f[i];
        }
        ss = kern::warp_sum(ss);
        if (lane == 0) rstd_s = 1.0f / sqrtf(ss / static_cast<float>(D) + eps);
    } else if (warp == 1) {
        // router_forward_kernel's logit
        const double acc = kern::router_dot(xr, router_w, D, lane);
        if (lane == 0) {
            const float li = static_cast<float>(acc + static_cast<double>(kern::ld(router_b)));
            score_s = li / kern::router_temperature(log_temp, nullptr);
        }
    }
    __syncthreads();
    const float rs = rstd_s;
    if (threadIdx.x == 0) {
        // route_select's threshold rule: n > 0 (NaN never selected)
        const int flag = s >= 0 && score_s > 0.0f;
        routed[r] = flag;
        row_cache[r] = s >= 0 ? static_cast<int64_t>(s) * max_len + p : -1;
        if (s >= 0) {
            qpos[s] = flag ? static_cast<int32_t>(p) : -1;
            qcnt[s] = flag;
        }
    }
    bf16* cache = s >= 0 ? conv_cache + static_cast<int64_t>(s) * (K - 1) * D : nullptr;
    for (int64_t d0 = threadIdx.x * 8; d0 < D; d0 += kPreThreads * 8) {
        float f[8], g[8], h[8], av[8];
        kern::load8(xr + d0, f);
        kern::load8(reflex_norm_w + d0, g);
#pragma unroll
        for (int i = 0; i < 8; ++i) h[i] = __bfloat162float(kern::bf(f[i] * rs * g[i]));  // h is stored bf16
        kern::load8(attn_norm_w + d0, g);
#pragma unroll
        for (int i = 0; i < 8; ++i) av[i] = f[i] * rs * g[i];
        kern::store8(a + r * D + d0, av);
        // decode_causal_conv_vec_kernel: taps ascending; tap j reads the input `back` = K-1-j rows
        // before this one (cache row K-1-back), skipped before position 0 as the forward's padding.
        float old[kMaxConvK][8];
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
#pragma unroll
        for (int j = 0; j < kMaxConvK; ++j) {
            if (j >= K) continue;
            const int back = K - 1 - j;  // cache row j holds the input `back` rows before this one
            if (back > 0) {
                if (cache) kern::load8(cache + j * D + d0, old[j]);
                if (!cache || p < back) continue;
            }
            float w[8];
#pragma unroll
            for (int e = 0; e < 8; ++e) w[e] = kern::ld(conv_w + (d0 + e) * K + j);
            const float* src = back > 0 ? old[j] : h;
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[e] += w[e] * src[e];
        }
        kern::store8(c + r * D + d0, acc);
        if (cache && K > 1) {
            // decode_conv_cache_update_kernel for one new row: shift by one, this row's h last
#pragma unroll
            for (int q = 0; q < kMaxConvK - 1; ++q) {
                if (q >= K - 1) continue;
                kern::store8(cache + q * D + d0, q == K - 2 ? h : old[q + 1]);
            }
        }
    }
}

// One block per row: the K heads' pairs into the cache row, then (routed rows) the Q heads' pairs
// into the slot's query row. rope_kernel's arithmetic with rope_table_kernel's cos/sin.
__global__ void rope_step_kernel(const float* __restrict__ kf, const float* __restrict__ qf,
                                 const int32_t* __restrict__ slot, const int32_t* __restrict__ pos,
                                 const int32_t* __restrict__ routed, const int64_t* __restrict__ row_cache, int64_t H,
                                 int64_t Hkv, int64_t Dh, double base, bf16* __restrict__ k_cache, bf16* __restrict__ q) {
    kern::pdl_wait();
    kern::pdl_launch_dependents();
    const int64_t r = blockIdx.x;
    const int32_t s = slot[r];
    if (s < 0) return;
    const int64_t p = pos[r], half = Dh / 2, KV = Hkv * Dh, D = H * Dh;
    const bool with_q = routed[r] != 0;
    const int64_t work = (Hkv + (with_q ? H : 0)) * half;
    for (int64_t e = threadIdx.x; e < work; e += blockDim.x) {
        const bool is_k = e < Hkv * half;
        const int64_t pe = is_k ? e : e - Hkv * half, h = pe / half, i = pe - h * half;
        float cs, sn;
        kern::rope_entry(p, i, Dh, base, &cs, &sn);
        const int64_t off = h * Dh + i;
        const float* src = is_k ? kf + r * KV : qf + r * D;
        bf16* dst = is_k ? k_cache + row_cache[r] * KV : q + static_cast<int64_t>(s) * D;
        const float av = src[off], bv = src[off + half];
        dst[off] = kern::bf(av * cs - bv * sn);
        dst[off + half] = kern::bf(bv * cs + av * sn);
    }
}

}  // namespace

void decode_step_pre(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* router_w, const __nv_bfloat16* router_b,
                     const __nv_bfloat16* log_temp, const __nv_bfloat16* reflex_norm_w,
                     const __nv_bfloat16* attn_norm_w, float eps, const __nv_bfloat16* conv_w, int64_t K,
                     __nv_bfloat16* conv_cache, const int32_t* slot, const int32_t* pos, int64_t n, int64_t D,
                     int64_t max_len, __nv_bfloat16* c, __nv_bfloat16* a, int32_t* routed, int32_t* qpos,
                     int32_t* qcnt, int64_t* row_cache) {
    if (n <= 0) return;
    if (D % 8 != 0 || K < 1 || K > kMaxConvK)
        fail(HSPMN_ERR_INTERNAL, "decode_step_pre: D %lld, conv kernel %lld outside its shapes", static_cast<long long>(D),
             static_cast<long long>(K));
    kern::launch_pdl(decode_step_pre_kernel, dim3(static_cast<unsigned>(n)), dim3(kPreThreads), 0, stream(d), x, router_w,
               router_b, log_temp, reflex_norm_w, attn_norm_w, eps, conv_w, static_cast<int>(K), conv_cache, slot, pos, D,
               max_len, c, a, routed, qpos, qcnt, row_cache);
    check_launch("decode_step_pre");
}

void rope_step(Device& d, const float* kf, const float* qf, const int32_t* slot, const int32_t* pos,
               const int32_t* routed, const int64_t* row_cache, int64_t n, int64_t H, int64_t Hkv, int64_t Dh,
               float base, __nv_bfloat16* k_cache, __nv_bfloat16* q) {
    if (n <= 0) return;
    kern::launch_pdl(rope_step_kernel, dim3(static_cast<unsigned>(n)), dim3(128), 0, stream(d), kf, qf, slot, pos, routed,
               row_cache, H, Hkv, Dh, static_cast<double>(base), k_cache, q);
    check_launch("rope_step");
}

}  // namespace hspmn::cuda
