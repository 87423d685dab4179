// rms_norm_pair_conv_forward: a block's entry over whole sequences in one kernel: both norms of x
// (h for the reflexive stream, a for the attention) and the reflex conv of h. The values of
// rms_norm_pair_forward then causal_conv_forward bit for bit: kern::row_rstd's sum, h rounded to bf16
// as the conv would read it back, the taps in ascending j with the same skips before position 0.
// What it saves is h's round trip through memory (written only when the caller keeps it: training)
// and the conv's K reads of every row.
//
// A block owns kTileRows consecutive rows of one sequence and recomputes the K-1 rows before them
// (the conv's history: (K-1)/kTileRows more reads of x, which the previous tile brought into L2).
// Phase 1: a warp per row, rstd into shared memory. Phase 2: a thread per 8 channels walks the rows
// in order with the last K-1 rows of h in registers (K is a template parameter, so they stay there).
#include "../../core/error.h"
#include "common.cuh"
#include "kernels.h"
#include "rms_norm_row.cuh"

namespace hspmn::cuda {

namespace {

constexpr int kTileRows = 16;
constexpr int kThreads = 256;

// x: [B, S, D] bf16  w_h, w_a: [D]  w_c: [D, K]  h (or null), a, c: [B, S, D] bf16  rstd: [B*S] f32
// grid: B * ceil(S / kTileRows) blocks of kThreads.
template <int K>
__global__ void __launch_bounds__(kThreads) rms_norm_pair_conv_kernel(
    const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w_h, const __nv_bfloat16* __restrict__ w_a,
    const __nv_bfloat16* __restrict__ w_c, float eps, int64_t S, int64_t D, __nv_bfloat16* __restrict__ h,
    __nv_bfloat16* __restrict__ a, __nv_bfloat16* __restrict__ c, float* __restrict__ rstd) {
    __shared__ float rs[kTileRows + K - 1];
    const int64_t tiles = (S + kTileRows - 1) / kTileRows;
    const int64_t seq = blockIdx.x / tiles, t0 = (blockIdx.x - seq * tiles) * kTileRows;
    const int64_t t1 = t0 + kTileRows < S ? t0 + kTileRows : S;
    const int64_t lo = t0 - (K - 1) > 0 ? t0 - (K - 1) : 0;  // first row computed: the history's
    const int64_t row0 = seq * S;                            // the sequence's position 0
    const int rows = static_cast<int>(t1 - lo);

    // Phase 1: rstd of every row the tile reads; the tile's own rows also go to rstd.
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int i = warp; i < rows; i += kThreads / 32) {
        const float r = kern::row_rstd<true>(x + (row0 + lo + i) * D, D, eps, lane);
        if (lane == 0) {
            rs[i] = r;
            if (lo + i >= t0) rstd[row0 + lo + i] = r;
        }
    }
    __syncthreads();

    // Phase 2: 8 channels a thread, rows in order; hist[k] holds h of the row k + 1 back.
    for (int64_t d0 = threadIdx.x * 8; d0 < D; d0 += kThreads * 8) {
        using W = kern::ConvWindow<K>;
        float gh[8], ga[8], wr[K][8];
        typename W::Hist hist = {};
        kern::load8(w_h + d0, gh);
        kern::load8(w_a + d0, ga);
        W::load_taps(w_c, d0, wr);
        float next[8];
        kern::load8(x + (row0 + lo) * D + d0, next);
        for (int64_t t = lo; t < t1; ++t) {
            float f[8];
#pragma unroll
            for (int e = 0; e < 8; ++e) f[e] = next[e];
            // The next row's load is issued before this row's arithmetic and stores.
            if (t + 1 < t1) kern::load8(x + (row0 + t + 1) * D + d0, next);
            const float r = rs[t - lo];
            float hv[8], av[8];
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                // rms_norm_pair_forward_kernel's products; h as the conv reads it: rounded to bf16
                hv[e] = __bfloat162float(__float2bfloat16_rn(f[e] * r * gh[e]));
                av[e] = f[e] * r * ga[e];
            }
            if (t >= t0) {
                const int64_t o = (row0 + t) * D + d0;
                kern::store8(a + o, av);
                if (h) kern::store8(h + o, hv);
                // causal_conv_walk_kernel's taps: j ascending, tap j reads the row K-1-j back, left out
                // before position 0 (t is the position in the sequence).
                float acc[8];
                W::taps(wr, hv, hist, [&](int away) { return t < away; }, acc);
                kern::store8(c + o, acc);
            }
            W::push(hist, hv);
        }
    }
}

}  // namespace

bool rms_norm_pair_conv_fits(int64_t D, int64_t K) {
    return D % 8 == 0 && K >= 1 && K <= kern::kConvVecK;
}

void rms_norm_pair_conv_forward(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* w_h,
                                const __nv_bfloat16* w_a, const __nv_bfloat16* w_c, float eps, int64_t B, int64_t S,
                                int64_t D, int64_t K, __nv_bfloat16* h, __nv_bfloat16* a, __nv_bfloat16* c,
                                float* rstd) {
    if (B <= 0 || S <= 0) return;
    if (!rms_norm_pair_conv_fits(D, K))
        fail(HSPMN_ERR_INTERNAL,
             "rms_norm_pair_conv_forward: D %lld, conv kernel %lld outside its shapes (D %% 8, K <= %d)",
             static_cast<long long>(D), static_cast<long long>(K), kern::kConvVecK);
    const int64_t blocks = B * ((S + kTileRows - 1) / kTileRows);
    kern::with_conv_k(K, [&](auto k) {
        rms_norm_pair_conv_kernel<decltype(k)::value>
            <<<static_cast<unsigned>(blocks), kThreads, 0, stream(d)>>>(x, w_h, w_a, w_c, eps, S, D, h, a, c, rstd);
    });
    check_launch("rms_norm_pair_conv_forward");
}

}  // namespace hspmn::cuda
