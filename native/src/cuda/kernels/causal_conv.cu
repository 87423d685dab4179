// causal_conv forward/backward: 8 channels a thread walking a tile of rows (D % 8 == 0, K <= 8), else
// a thread per channel over a grid-stride of token rows, channels contiguous so a warp reads 32
// neighbouring channels of one token; the weight gradient as per-chunk column partials. Where D % 8 == 0
// the backward is one walk over each chunk's rows that yields dh and the partials together.
#include <initializer_list>

#include "../../core/env_choice.h"
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

// Threads over channels (x), token rows over blockIdx.y (grid-stride): no per-element division.
// Both directions: out[i] = sum_j w[:, j] in[i -/+ (K-1-j)] within the sequence. The forward (kAhead
// false: h -> c, bf16) reads K-1-j rows back; the backward's dh (kAhead true: dc -> dh, f32) as many
// rows ahead.  in, out: [B, S, D]  w: [D, K] bf16
template <bool kAhead, class T>
__global__ void causal_conv_kernel(const T* __restrict__ in, const __nv_bfloat16* __restrict__ w, int64_t N,
                                   int64_t S, int64_t D, int64_t K, T* __restrict__ out) {
    const int64_t d = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (d >= D) return;
    for (int64_t i = blockIdx.y; i < N; i += gridDim.y) {
        const int64_t t = i % S;
        float acc = 0.0f;
        for (int64_t j = 0; j < K; ++j) {
            const int64_t off = (K - 1) - j;
            if (kAhead ? t + off >= S : t < off) continue;
            acc += kern::ld(w + d * K + j) * kern::ld(in + (kAhead ? i + off : i - off) * D + d);
        }
        kern::st(out + i * D + d, acc);
    }
}

// part[chunk, d*K + j] = sum over the chunk's rows t of dc[t, d] h[t - (K-1) + j, d].  grid: (ceil(D/256), chunks, K)
__global__ void causal_conv_backward_dw_kernel(const __nv_bfloat16* __restrict__ h, const float* __restrict__ dc,
                                               int64_t N, int64_t S, int64_t D, int64_t K, int64_t rows,
                                               float* __restrict__ part) {
    const int64_t d = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (d >= D) return;
    const int64_t j = blockIdx.z, back = (K - 1) - j;
    const int64_t r0 = blockIdx.y * rows, r1 = r0 + rows < N ? r0 + rows : N;
    float acc = 0.0f;
    for (int64_t i = r0, t = r0 % S; i < r1; ++i, t = t + 1 == S ? 0 : t + 1) {
        if (t < back) continue;
        acc += dc[i * D + d] * kern::ld(h + (i - back) * D + d);
    }
    part[blockIdx.y * D * K + d * K + j] = acc;
}

// The common case D % 8 == 0, K <= kern::kConvVecK: a thread owns 8 channels (16-byte loads) with their
// K taps in registers; same tap order (j ascending) and row order as the scalar kernels above.
constexpr int kMaxVecK = kern::kConvVecK;

// causal_conv_kernel for 8 channels a thread, both directions likewise, walking rows: a block owns
// kWalkRows consecutive rows of one sequence, a thread reads each input row once (plus the K-1 rows
// past the tile's edge) and keeps the last K-1 in registers (K is a template parameter, so they stay
// there). The forward walks up (its taps read rows back), the backward's dh down (rows ahead). One row
// a thread, as before, read every input row K times.  grid: (B * ceil(S / kWalkRows), ceil(D / 1024))
constexpr int kWalkRows = 32;

template <bool kAhead, class T, int K>
__global__ void __launch_bounds__(128) causal_conv_walk_kernel(const T* __restrict__ in,
                                                               const __nv_bfloat16* __restrict__ w, int64_t S,
                                                               int64_t D, T* __restrict__ out) {
    const int64_t d0 = (blockIdx.y * (int64_t)blockDim.x + threadIdx.x) * 8;
    if (d0 >= D) return;
    const int64_t tiles = (S + kWalkRows - 1) / kWalkRows;
    const int64_t seq = blockIdx.x / tiles, t0 = (blockIdx.x - seq * tiles) * kWalkRows;
    const int64_t t1 = t0 + kWalkRows < S ? t0 + kWalkRows : S;
    // the rows read: [t0 - (K-1), t1) forward, [t0, t1 + (K-1)) backward, within the sequence
    const int64_t first = kAhead ? (t1 - 1 + (K - 1) < S - 1 ? t1 - 1 + (K - 1) : S - 1)
                                 : (t0 - (K - 1) > 0 ? t0 - (K - 1) : 0);
    const int64_t count = kAhead ? first - t0 + 1 : t1 - first;
    const T* src = in + seq * S * D + d0;
    T* dst = out + seq * S * D + d0;
    using W = kern::ConvWindow<K>;
    float wr[K][8];
    typename W::Hist hist = {};
    W::load_taps(w, d0, wr);
    float next[8];
    kern::load8(src + first * D, next);
    for (int64_t n = 0; n < count; ++n) {
        const int64_t t = kAhead ? first - n : first + n;
        float cur[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) cur[e] = next[e];
        if (n + 1 < count) kern::load8(src + (kAhead ? t - 1 : t + 1) * D, next);
        if (kAhead ? t < t1 : t >= t0) {
            float acc[8];
            W::taps(wr, cur, hist, [&](int away) { return kAhead ? t + away >= S : t < away; }, acc);
            kern::store8(dst + t * D, acc);
        }
        W::push(hist, cur);
    }
}

// The walk for K = 1..kConvVecK (D % 8 == 0).  grid: (B * ceil(S / kWalkRows), ceil(D / 1024))
template <bool kAhead, class T>
void conv_walk(Device& d, const T* in, const __nv_bfloat16* w, int64_t B, int64_t S, int64_t D, int64_t K, T* out) {
    const dim3 grid(static_cast<unsigned>(B * ((S + kWalkRows - 1) / kWalkRows)),
                    static_cast<unsigned>((D + 1023) / 1024));
    kern::with_conv_k(K, [&](auto k) {
        causal_conv_walk_kernel<kAhead, T, decltype(k)::value><<<grid, 128, 0, stream(d)>>>(in, w, S, D, out);
    });
}

// part[chunk, d*K + j] over the chunk's rows, all K taps of 8 channels a thread.  grid: (ceil(D/1024), chunks)
__global__ void __launch_bounds__(128) causal_conv_backward_dw_vec_kernel(const __nv_bfloat16* __restrict__ h,
                                                                          const float* __restrict__ dc, int64_t N,
                                                                          int64_t S, int64_t D, int K, int64_t rows,
                                                                          float* __restrict__ part) {
    const int64_t d0 = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) * 8;
    if (d0 >= D) return;
    const int64_t r0 = blockIdx.y * rows, r1 = r0 + rows < N ? r0 + rows : N;
    float acc[kMaxVecK][8];
#pragma unroll
    for (int j = 0; j < kMaxVecK; ++j)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[j][e] = 0.0f;
    for (int64_t i = r0, t = r0 % S; i < r1; ++i, t = t + 1 == S ? 0 : t + 1) {
        float g[8];
        kern::load8(dc + i * D + d0, g);
#pragma unroll
        for (int j = 0; j < kMaxVecK; ++j) {
            const int64_t back = (K - 1) - j;
            if (j >= K || t < back) continue;
            float f[8];
            kern::load8(h + (i - back) * D + d0, f);
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[j][e] += g[e] * f[e];
        }
    }
    float* pc = part + blockIdx.y * D * K;
#pragma unroll
    for (int j = 0; j < kMaxVecK; ++j)
        if (j < K)
#pragma unroll
            for (int e = 0; e < 8; ++e) pc[(d0 + e) * K + j] = acc[j][e];
}

// The backward in one walk (D % 8 == 0, K <= kConvVecK): dh and the weight gradient's partials from one
// read of dc and h, where the two kernels above read dc twice (a B = 64, S = 4096 training call on an
// H100: 1.96 ms against 2.98 for the two in the same call; BENCHMARKS.md 2026-12-07, eighteenth
// session). A thread owns 4 channels of one of the dw kernel's chunks [r0, r1) and walks its rows
// upward, with the K-1 rows before r0 (h for the taps that reach back) and after r1 (dc for dh's rows
// ahead) around them. At row i it adds dc[i] h[i - back] to tap K-1-back's partial, as
// causal_conv_backward_dw_vec_kernel does in the same row order, and, the rows ahead of m = i - (K-1)
// being all read by now, finishes dh[m] with the walk kernel's taps in the walk kernel's order. Each
// channel's sums are independent of how channels are grouped, so dh and the partials are the two
// kernels' bits (tests/backend_ops holds them to it). 4 channels a thread, not 8: both windows stay in
// registers at K = 8 and twice the warps keep the loads in flight.
//   grid: (ceil(D / 512), chunks)
template <int K>
__global__ void __launch_bounds__(128) causal_conv_backward_one_pass_kernel(
    const __nv_bfloat16* __restrict__ h, const __nv_bfloat16* __restrict__ w, const float* __restrict__ dc,
    int64_t N, int64_t S, int64_t D, int64_t rows, float* __restrict__ dh, float* __restrict__ part) {
    constexpr int kHist = K > 1 ? K - 1 : 1;
    const int64_t d0 = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) * 4;
    if (d0 >= D) return;
    const int64_t r0 = blockIdx.y * rows, r1 = r0 + rows < N ? r0 + rows : N;
    float wr[K][4], acc[K][4];
#pragma unroll
    for (int j = 0; j < K; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            wr[j][e] = kern::ld(w + (d0 + e) * K + j);
            acc[j][e] = 0.0f;
        }
    // dch[k], hh[k]: the dc and h rows k + 1 before the current one (rows of other sequences are read
    // too and left out by the position tests, as in the two kernels)
    float dch[kHist][4] = {}, hh[kHist][4] = {};
    // 16 bytes of dc and 8 of h a row; rows at or past N (after the last sequence's end) are zero and
    // never used
    auto load = [&](int64_t i, float (&g)[4], float (&f)[4]) {
        if (i >= N) {
#pragma unroll
            for (int e = 0; e < 4; ++e) g[e] = f[e] = 0.0f;
            return;
        }
        const float4 a = *reinterpret_cast<const float4*>(dc + i * D + d0);
        g[0] = a.x, g[1] = a.y, g[2] = a.z, g[3] = a.w;
        const uint2 b = *reinterpret_cast<const uint2*>(h + i * D + d0);
        const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&b.x));
        const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&b.y));
        f[0] = lo.x, f[1] = lo.y, f[2] = hi.x, f[3] = hi.y;
    };
    const int64_t first = r0 - (K - 1) > 0 ? r0 - (K - 1) : 0, end = r1 + (K - 1);
    int64_t ti = first % S, tm = r0 % S;  // positions of row i and of row m = i - (K-1) once m >= r0
    float ng[4], nf[4];
    load(first, ng, nf);
    for (int64_t i = first; i < end; ++i) {
        float g[4], f[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) g[e] = ng[e], f[e] = nf[e];
        if (i + 1 < end) load(i + 1, ng, nf);
        if (i >= r0 && i < r1) {
#pragma unroll
            for (int j = 0; j < K; ++j) {
                const int back = (K - 1) - j;
                if (ti < back) continue;
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[j][e] += g[e] * (back == 0 ? f[e] : hh[back > 0 ? back - 1 : 0][e]);
            }
        }
        if (i - (K - 1) >= r0) {  // and < r1, as i < r1 + K - 1
            const int64_t m = i - (K - 1);
            float o[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int j = 0; j < K; ++j) {
                const int away = (K - 1) - j;  // tap j reads row m + away = i - j
                if (tm + away >= S) continue;
#pragma unroll
                for (int e = 0; e < 4; ++e) o[e] += wr[j][e] * (j == 0 ? g[e] : dch[j > 0 ? j - 1 : 0][e]);
            }
            *reinterpret_cast<float4*>(dh + m * D + d0) = make_float4(o[0], o[1], o[2], o[3]);
            tm = tm + 1 == S ? 0 : tm + 1;
        }
#pragma unroll
        for (int k = kHist - 1; k > 0; --k)
#pragma unroll
            for (int e = 0; e < 4; ++e) dch[k][e] = dch[k - 1][e], hh[k][e] = hh[k - 1][e];
#pragma unroll
        for (int e = 0; e < 4; ++e) dch[0][e] = g[e], hh[0][e] = f[e];
        ti = ti + 1 == S ? 0 : ti + 1;
    }
    float* pc = part + blockIdx.y * D * K;
#pragma unroll
    for (int j = 0; j < K; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) pc[(d0 + e) * K + j] = acc[j][e];
}

// x: channels in blocks of 128; y: token rows, about 8192 blocks in all so each block loops over
// several rows (one row a block left the device scheduling blocks of 128 loads).
dim3 rows_grid(int64_t N, int64_t D) {
    const int64_t gx = (D + 127) / 128, cap = 8192 / gx > 1 ? 8192 / gx : 1;
    return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(N < cap ? N : cap));
}

}  // namespace

void causal_conv_forward(Device& d, const __nv_bfloat16* h, const __nv_bfloat16* w, int64_t B, int64_t S,
                         int64_t D, int64_t K, __nv_bfloat16* c) {
    const int64_t N = B * S;
    if (N <= 0) return;
    if (D % 8 == 0 && K <= kMaxVecK)
        conv_walk<false>(d, h, w, B, S, D, K, c);
    else
        causal_conv_kernel<false><<<rows_grid(N, D), 128, 0, stream(d)>>>(h, w, N, S, D, K, c);
    check_launch("causal_conv_forward");
}

namespace {

// HSPMN_CONV_BACKWARD_ONE_PASS (read at every call): unset or 1, kAuto takes the one-pass kernel where
// D % 8 == 0 and K <= kConvVecK; 0 the walk and dw kernels (the same bits).
bool conv_backward_one_pass_wanted() {
    return env_choice("HSPMN_CONV_BACKWARD_ONE_PASS", {"0", "1"}, 1,
                      "1 or unset (the conv backward reads dc and h once) or 0 (dh and dw in two kernels)") == 1;
}

}  // namespace

void causal_conv_backward(Device& d, const __nv_bfloat16* h, const __nv_bfloat16* w, const float* dc, int64_t B,
                          int64_t S, int64_t D, int64_t K, float* dh, float* dw, DeviceBuffer& scratch,
                          ConvBackwardWay way) {
    const int64_t N = B * S;
    if (N <= 0) return;
    const bool vec = D % 8 == 0 && K <= kMaxVecK;
    // The vector kernels have 8x fewer threads across D: 4x more (shorter) chunks to fill the device.
    const int64_t rows = vec ? (partial_rows(N) + 3) / 4 : partial_rows(N), chunks = (N + rows - 1) / rows;
    scratch.ensure(d, static_cast<std::size_t>(chunks * D * K) * sizeof(float));
    const bool one_pass =
        vec && (way == ConvBackwardWay::kOnePass || (way == ConvBackwardWay::kAuto && conv_backward_one_pass_wanted()));
    if (one_pass) {
        const dim3 g(static_cast<unsigned>((D + 511) / 512), static_cast<unsigned>(chunks));
        kern::with_conv_k(K, [&](auto k) {
            causal_conv_backward_one_pass_kernel<decltype(k)::value>
                <<<g, 128, 0, stream(d)>>>(h, w, dc, N, S, D, rows, dh, scratch.as<float>());
        });
        check_launch("causal_conv_backward");
        reduce_partials(d, scratch.as<float>(), chunks, D * K, dw);
        return;
    }
    if (vec)
        conv_walk<true>(d, dc, w, B, S, D, K, dh);
    else
        causal_conv_kernel<true><<<rows_grid(N, D), 128, 0, stream(d)>>>(dc, w, N, S, D, K, dh);
    check_launch("causal_conv_backward_dh");
    if (vec) {
        const dim3 g(static_cast<unsigned>((D + 1023) / 1024), static_cast<unsigned>(chunks));
        causal_conv_backward_dw_vec_kernel<<<g, 128, 0, stream(d)>>>(h, dc, N, S, D, static_cast<int>(K), rows,
                                                                     scratch.as<float>());
    } else {
        const dim3 g(static_cast<unsigned>((D + 255) / 256), static_cast<unsigned>(chunks), static_cast<unsigned>(K));
        causal_conv_backward_dw_kernel<<<g, 256, 0, stream(d)>>>(h, dc, N, S, D, K, rows, scratch.as<float>());
    }
    check_launch("causal_conv_backward_dw");
    reduce_partials(d, scratch.as<float>(), chunks, D * K, dw);
}

}  // namespace hspmn::cuda
