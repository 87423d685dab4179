// rms_norm forward/backward: one warp per row (8 rows per block), 16-byte loads when D % 8 == 0;
// the weight gradient sums over rows as per-chunk column partials then reduce_partials. The block
// adds dx into f32; the language model's final norm (rms_norm_backward_bf16) writes it as bf16.
// The pair ops (rms_norm_pair_*) are a block's two norms of one x (reflex h, attention a): the same
// per-row and per-column arithmetic in the same order as two single calls, so their results are bit
// for bit the single kernels'. The forward is one launch over x for both norms; the backward's dx
// kernel reads x, rstd and dx once for both norms, its dw kernel x and rstd once for both partials.
#include <initializer_list>

#include "../../core/env_choice.h"
#include "common.cuh"
#include "kernels.h"
#include "rms_norm_row.cuh"

namespace hspmn::cuda {

namespace {

constexpr int kRowsPerBlock = 8;

// x: [N, D] bf16  w: [D] bf16  y: [N, D] bf16  rstd: [N] f32
template <bool kVec>
__global__ void rms_norm_forward_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w,
                                        float eps, int64_t N, int64_t D, __nv_bfloat16* __restrict__ y,
                                        float* __restrict__ rstd) {
    const int64_t row = blockIdx.x * (int64_t)kRowsPerBlock + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const __nv_bfloat16* xr = x + row * D;
    __nv_bfloat16* yr = y + row * D;
    const float r = kern::row_rstd<kVec>(xr, D, eps, lane);
    if (lane == 0) rstd[row] = r;
    if (kVec) {
        for (int64_t d = lane * 8; d < D; d += 256) {
            float f[8], g[8];
            kern::load8(xr + d, f);
            kern::load8(w + d, g);
#pragma unroll
            for (int i = 0; i < 8; ++i) f[i] = f[i] * r * g[i];
            kern::store8(yr + d, f);
        }
    } else {
        for (int64_t d = lane; d < D; d += 32) yr[d] = kern::bf(kern::ld(xr + d) * r * kern::ld(w + d));
    }
}

// rms_norm_forward_kernel's arithmetic for two weights of one x: the same ss loop, r and products.
// x: [N, D] bf16  w_h, w_a: [D] bf16  h, a: [N, D] bf16  rstd: [N] f32
template <bool kVec>
__global__ void rms_norm_pair_forward_kernel(const __nv_bfloat16* __restrict__ x,
                                             const __nv_bfloat16* __restrict__ w_h,
                                             const __nv_bfloat16* __restrict__ w_a, float eps, int64_t N, int64_t D,
                                             __nv_bfloat16* __restrict__ h, __nv_bfloat16* __restrict__ a,
                                             float* __restrict__ rstd) {
    const int64_t row = blockIdx.x * (int64_t)kRowsPerBlock + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const __nv_bfloat16* xr = x + row * D;
    __nv_bfloat16* hr = h + row * D;
    __nv_bfloat16* ar = a + row * D;
    const float r = kern::row_rstd<kVec>(xr, D, eps, lane);
    if (lane == 0) rstd[row] = r;
    if (kVec) {
        for (int64_t d = lane * 8; d < D; d += 256) {
            float f[8], gh[8], ga[8], yh[8], ya[8];
            kern::load8(xr + d, f);
            kern::load8(w_h + d, gh);
            kern::load8(w_a + d, ga);
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                yh[i] = f[i] * r * gh[i];
                ya[i] = f[i] * r * ga[i];
            }
            kern::store8(hr + d, yh);
            kern::store8(ar + d, ya);
        }
    } else {
        for (int64_t d = lane; d < D; d += 32) {
            const float f = kern::ld(xr + d);
            hr[d] = kern::bf(f * r * kern::ld(w_h + d));
            ar[d] = kern::bf(f * r * kern::ld(w_a + d));
        }
    }
}

// dx = r (dy w - x c), c = r^2 mean(dy w x).  dy: [N, D] f32; dx: [N, D] f32 (+)= or bf16 (overwritten)
// One expression for every dx kernel and way, so the pair's terms are the single kernel's bit for bit.
__device__ __forceinline__ float dx_term(float g, float w, float x, float r, float c) { return r * (g * w - x * c); }
__device__ __forceinline__ void put_dx(float* p, float v) { *p += v; }
__device__ __forceinline__ void put_dx(__nv_bfloat16* p, float v) { *p = kern::bf(v); }
__device__ __forceinline__ void put_dx8(float* p, const float* v) {
    float o[8];
    kern::load8(p, o);
#pragma unroll
    for (int i = 0; i < 8; ++i) o[i] += v[i];
    kern::store8(p, o);
}
__device__ __forceinline__ void put_dx8(__nv_bfloat16* p, const float* v) { kern::store8(p, v); }

// The dx kernels' two ways through a row: kVec (D % 8 == 0, 16-byte aligned rows) gives a lane 8
// neighbouring elements per step with 16-byte loads (the scalar way's 2- and 4-byte loads, a lane 32
// elements apart, left the backward's norms at about half the memory rate); the sums' order over d
// follows the lanes' elements, so the two ways differ in float32 rounding only.
template <class DxT, bool kVec>
__global__ void rms_norm_backward_dx_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w,
                                            const float* __restrict__ rstd, const float* __restrict__ dy, int64_t N,
                                            int64_t D, DxT* __restrict__ dx) {
    const int64_t row = blockIdx.x * (int64_t)kRowsPerBlock + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const __nv_bfloat16* xr = x + row * D;
    const float* gr = dy + row * D;
    DxT* dxr = dx + row * D;
    float s = 0.0f;
    if (kVec) {
#pragma unroll 2
        for (int64_t d = lane * 8; d < D; d += 256) {
            float g[8], wv[8], xv[8];
            kern::load8(gr + d, g);
            kern::load8(w + d, wv);
            kern::load8(xr + d, xv);
#pragma unroll
            for (int i = 0; i < 8; ++i) s += g[i] * wv[i] * xv[i];
        }
    } else {
        for (int64_t d = lane; d < D; d += 32) s += gr[d] * kern::ld(w + d) * kern::ld(xr + d);
    }
    s = kern::warp_sum(s);
    const float r = rstd[row];
    const float c = s * r * r / static_cast<float>(D);
    if (kVec) {
#pragma unroll 2
        for (int64_t d = lane * 8; d < D; d += 256) {
            float g[8], wv[8], xv[8], v[8];
            kern::load8(gr + d, g);
            kern::load8(w + d, wv);
            kern::load8(xr + d, xv);
#pragma unroll
            for (int i = 0; i < 8; ++i) v[i] = dx_term(g[i], wv[i], xv[i], r, c);
            put_dx8(dxr + d, v);
        }
    } else {
        for (int64_t d = lane; d < D; d += 32)
            put_dx(dxr + d, dx_term(gr[d], kern::ld(w + d), kern::ld(xr + d), r, c));
    }
}

// part[chunk, d] = sum over the chunk's rows of dy x rstd.  grid: (ceil(D/256), chunks)
__global__ void rms_norm_backward_dw_kernel(const __nv_bfloat16* __restrict__ x, const float* __restrict__ rstd,
                                            const float* __restrict__ dy, int64_t N, int64_t D, int64_t rows,
                                            float* __restrict__ part) {
    const int64_t d = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (d >= D) return;
    const int64_t r0 = blockIdx.y * rows, r1 = r0 + rows < N ? r0 + rows : N;
    float acc = 0.0f;
    for (int64_t i = r0; i < r1; ++i) acc += dy[i * D + d] * kern::ld(x + i * D + d) * rstd[i];
    part[blockIdx.y * D + d] = acc;
}

// 8 elements of the pair's dx, as both pair dx kernels do them (one body, so their bits agree): the
// coefficient sums' terms, the update (attention norm's term first, then the reflex norm's), and the
// router's dl w_r as one fma.
__device__ __forceinline__ void pair_dx_sums8(const float (&ga)[8], const float (&gh)[8], const float (&wa)[8],
                                              const float (&wh)[8], const float (&xv)[8], float& sa, float& sh) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        sa += ga[i] * wa[i] * xv[i];
        sh += gh[i] * wh[i] * xv[i];
    }
}
__device__ __forceinline__ void pair_dx_update8(float (&v)[8], const float (&ga)[8], const float (&gh)[8],
                                                const float (&wa)[8], const float (&wh)[8], const float (&xv)[8],
                                                float r, float ca, float ch) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        v[i] += dx_term(ga[i], wa[i], xv[i], r, ca);
        v[i] += dx_term(gh[i], wh[i], xv[i], r, ch);
    }
}
__device__ __forceinline__ void router_dx8(float (&v)[8], float l, const __nv_bfloat16* wr_at) {
    float wr[8];
    kern::load8(wr_at, wr);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = fmaf(l, wr[i], v[i]);
}

// The pair's two per-row coefficients c = (sum_d dy w x) rstd^2 / D, rms_norm_backward_dx_kernel's sums
// for (dy_a, w_a) and (dy_h, w_h) over the same lanes' elements; every lane gets both.
template <bool kVec>
__device__ __forceinline__ void pair_dx_coefs(const __nv_bfloat16* xr, const __nv_bfloat16* w_a,
                                              const __nv_bfloat16* w_h, const float* gar, const float* ghr,
                                              int64_t D, int lane, float r, float& ca, float& ch) {
    float sa = 0.0f, sh = 0.0f;
    if (kVec) {
        // rms_norm_backward_dx_kernel's kVec way for both norms (the same lanes' elements)
        for (int64_t d = lane * 8; d < D; d += 256) {
            float ga[8], gh[8], wa[8], wh[8], xv[8];
            kern::load8(gar + d, ga);
            kern::load8(ghr + d, gh);
            kern::load8(w_a + d, wa);
            kern::load8(w_h + d, wh);
            kern::load8(xr + d, xv);
            pair_dx_sums8(ga, gh, wa, wh, xv, sa, sh);
        }
    } else {
        for (int64_t d = lane; d < D; d += 32) {
            sa += gar[d] * kern::ld(w_a + d) * kern::ld(xr + d);
            sh += ghr[d] * kern::ld(w_h + d) * kern::ld(xr + d);
        }
    }
    sa = kern::warp_sum(sa);
    sh = kern::warp_sum(sh);
    ca = sa * r * r / static_cast<float>(D);
    ch = sh * r * r / static_cast<float>(D);
}

// The pair's dx: rms_norm_backward_dx_kernel's sums and terms for (dy_a, w_a) then (dy_h, w_h), added
// in that order as the two single calls do (attention norm first), with one read of x.
// kOut false (rms_norm_pair_backward): dx [N, D] f32 += the two terms.
// kOut true (rms_norm_pair_backward_out): v starts as f32(d_out) (the residual path), takes the two
// terms, then the router's dl[row] w_r[d] as one fma (router_dx's dx += dl w as nvcc contracted it) when
// dl is set, and is rounded to bf16 once into d_x: 2 bytes an element written where the passes it
// replaces moved an f32 dx through memory four times.
// x: [N, D] bf16  w_a, w_h, w_r: [D] bf16  rstd: [N] f32  dy_a, dy_h: [N, D] f32  d_out, d_x: [N, D] bf16
// dl: [N] f32 or null
template <bool kVec, bool kOut>
__global__ void rms_norm_pair_backward_dx_kernel(const __nv_bfloat16* __restrict__ x,
                                                 const __nv_bfloat16* __restrict__ w_a,
                                                 const __nv_bfloat16* __restrict__ w_h,
                                                 const float* __restrict__ rstd, const float* __restrict__ dy_a,
                                                 const float* __restrict__ dy_h,
                                                 const __nv_bfloat16* __restrict__ d_out,
                                                 const float* __restrict__ dl, const __nv_bfloat16* __restrict__ w_r,
                                                 int64_t N, int64_t D, float* __restrict__ dx,
                                                 __nv_bfloat16* __restrict__ d_x) {
    const int64_t row = blockIdx.x * (int64_t)kRowsPerBlock + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const __nv_bfloat16* xr = x + row * D;
    const float* gar = dy_a + row * D;
    const float* ghr = dy_h + row * D;
    const float r = rstd[row];
    const float l = kOut && dl ? dl[row] : 0.0f;
    float ca, ch;
    pair_dx_coefs<kVec>(xr, w_a, w_h, gar, ghr, D, lane, r, ca, ch);
    if (kVec) {
        for (int64_t d = lane * 8; d < D; d += 256) {
            float ga[8], gh[8], wa[8], wh[8], xv[8], v[8];
            if (kOut) kern::load8(d_out + row * D + d, v); else kern::load8(dx + row * D + d, v);
            kern::load8(gar + d, ga);
            kern::load8(ghr + d, gh);
            kern::load8(w_a + d, wa);
            kern::load8(w_h + d, wh);
            kern::load8(xr + d, xv);
            pair_dx_update8(v, ga, gh, wa, wh, xv, r, ca, ch);
            if (kOut && dl) router_dx8(v, l, w_r + d);
            if (kOut) kern::store8(d_x + row * D + d, v); else kern::store8(dx + row * D + d, v);
        }
    } else {
        for (int64_t d = lane; d < D; d += 32) {
            float v = kOut ? kern::ld(d_out + row * D + d) : dx[row * D + d];
            v += dx_term(gar[d], kern::ld(w_a + d), kern::ld(xr + d), r, ca);
            v += dx_term(ghr[d], kern::ld(w_h + d), kern::ld(xr + d), r, ch);
            if (kOut && dl) v = fmaf(l, kern::ld(w_r + d), v);
            if (kOut) d_x[row * D + d] = kern::bf(v); else dx[row * D + d] = v;
        }
    }
}

// rms_norm_pair_backward_dx_kernel<true, true> for rows of at most kResidentSteps x 256 features: each
// lane keeps its dy_a, dy_h and x in registers between the coefficient sums and the update, so a row
// crosses DRAM once; the two-pass kernel reads dy_a, dy_h and x again for the update, and with its 64
// rows an SM in flight (~169 MB on an H100 at D = 2048) that second read misses L2: 4.2 ms of a 160 ms
// training call at B = 64, S = 4,096 moved ~24 bytes an element where 14 suffice (BENCHMARKS.md
// 2026-12-07 training breakdown). The same sums and terms in the same order as pair_dx_coefs<true> and
// the kernel's kVec update (pair_dx_sums8, pair_dx_update8, router_dx8), so the bits are its. 4 rows
// (warps) a block: 227 registers a thread, no spills, 8 warps an SM; 3.19 ms against the two-pass
// kernel's 4.16 at B = 64, S = 4096 on an H100 (BENCHMARKS.md 2026-12-07, seventeenth session).
constexpr int kResidentSteps = 8;
constexpr int kResidentRows = 4;

__global__ void __launch_bounds__(kResidentRows * 32)
    rms_norm_pair_backward_out_resident_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w_a,
                                               const __nv_bfloat16* __restrict__ w_h, const float* __restrict__ rstd,
                                               const float* __restrict__ dy_a, const float* __restrict__ dy_h,
                                               const __nv_bfloat16* __restrict__ d_out, const float* __restrict__ dl,
                                               const __nv_bfloat16* __restrict__ w_r, int64_t N, int64_t D,
                                               __nv_bfloat16* __restrict__ d_x) {
    const int64_t row = blockIdx.x * (int64_t)kResidentRows + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const __nv_bfloat16* xr = x + row * D;
    const float* gar = dy_a + row * D;
    const float* ghr = dy_h + row * D;
    const float r = rstd[row];
    const float l = dl ? dl[row] : 0.0f;
    float ga[kResidentSteps][8], gh[kResidentSteps][8];
    kern::Bf16x8 xb[kResidentSteps];
    // Every load of the row first (24 16-byte loads a lane in flight), then the sums.
#pragma unroll
    for (int s = 0; s < kResidentSteps; ++s) {
        const int64_t d = lane * 8 + s * 256;
        if (d < D) {
            kern::load8(gar + d, ga[s]);
            kern::load8(ghr + d, gh[s]);
            xb[s] = *reinterpret_cast<const kern::Bf16x8*>(xr + d);
        }
    }
    float sa = 0.0f, sh = 0.0f;
#pragma unroll
    for (int s = 0; s < kResidentSteps; ++s) {
        const int64_t d = lane * 8 + s * 256;
        if (d < D) {
            float wa[8], wh[8], xv[8];
            kern::load8(w_a + d, wa);
            kern::load8(w_h + d, wh);
            kern::unpack8(xb[s], xv);
            pair_dx_sums8(ga[s], gh[s], wa, wh, xv, sa, sh);
        }
    }
    sa = kern::warp_sum(sa);
    sh = kern::warp_sum(sh);
    const float ca = sa * r * r / static_cast<float>(D);
    const float ch = sh * r * r / static_cast<float>(D);
#pragma unroll
    for (int s = 0; s < kResidentSteps; ++s) {
        const int64_t d = lane * 8 + s * 256;
        if (d < D) {
            float wa[8], wh[8], xv[8], v[8];
            kern::load8(d_out + row * D + d, v);
            kern::load8(w_a + d, wa);
            kern::load8(w_h + d, wh);
            kern::unpack8(xb[s], xv);
            pair_dx_update8(v, ga[s], gh[s], wa, wh, xv, r, ca, ch);
            if (dl) router_dx8(v, l, w_r + d);
            kern::store8(d_x + row * D + d, v);
        }
    }
}

// The pair's column partials: part_a[chunk, d], part_h[chunk, d] as rms_norm_backward_dw_kernel's; with
// kRouter also the router's part_r[chunk, d] = sum of dl[i] x[i, d] in f64, as router_w_partial_kernel's
// (same chunks, same row order), so x is read once for the three.
template <bool kRouter>
__global__ void rms_norm_pair_backward_dw_kernel(const __nv_bfloat16* __restrict__ x, const float* __restrict__ rstd,
                                                 const float* __restrict__ dy_a, const float* __restrict__ dy_h,
                                                 const float* __restrict__ dl, int64_t N, int64_t D, int64_t rows,
                                                 float* __restrict__ part_a, float* __restrict__ part_h,
                                                 double* __restrict__ part_r) {
    const int64_t d = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (d >= D) return;
    const int64_t r0 = blockIdx.y * rows, r1 = r0 + rows < N ? r0 + rows : N;
    float acc_a = 0.0f, acc_h = 0.0f;
    double acc_r = 0.0;
    for (int64_t i = r0; i < r1; ++i) {
        const float xv = kern::ld(x + i * D + d);
        acc_a += dy_a[i * D + d] * xv * rstd[i];
        acc_h += dy_h[i * D + d] * xv * rstd[i];
        if (kRouter) acc_r += static_cast<double>(dl[i]) * static_cast<double>(xv);
    }
    part_a[blockIdx.y * D + d] = acc_a;
    part_h[blockIdx.y * D + d] = acc_h;
    if (kRouter) part_r[blockIdx.y * D + d] = acc_r;
}

}  // namespace

void rms_norm_forward(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* w, float eps, int64_t N, int64_t D,
                      __nv_bfloat16* y, float* rstd) {
    if (N <= 0) return;
    const unsigned grid = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
    if (D % 8 == 0)
        rms_norm_forward_kernel<true><<<grid, kRowsPerBlock * 32, 0, stream(d)>>>(x, w, eps, N, D, y, rstd);
    else
        rms_norm_forward_kernel<false><<<grid, kRowsPerBlock * 32, 0, stream(d)>>>(x, w, eps, N, D, y, rstd);
    check_launch("rms_norm_forward");
}

void rms_norm_pair_forward(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* w_h, const __nv_bfloat16* w_a,
                           float eps, int64_t N, int64_t D, __nv_bfloat16* h, __nv_bfloat16* a, float* rstd) {
    if (N <= 0) return;
    const unsigned grid = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
    if (D % 8 == 0)
        rms_norm_pair_forward_kernel<true>
            <<<grid, kRowsPerBlock * 32, 0, stream(d)>>>(x, w_h, w_a, eps, N, D, h, a, rstd);
    else
        rms_norm_pair_forward_kernel<false>
            <<<grid, kRowsPerBlock * 32, 0, stream(d)>>>(x, w_h, w_a, eps, N, D, h, a, rstd);
    check_launch("rms_norm_pair_forward");
}

namespace {

// The dx kernels' kVec way: D % 8 == 0 and every operand 16-byte aligned (rows then are too).
bool vec_rows(int64_t D, std::initializer_list<const void*> ptrs) { return D % 8 == 0 && kern::all_aligned(16, ptrs); }

// HSPMN_RMS_NORM_RESIDENT (read at every call): unset or 1, the block backward's pair dx takes the
// one-read kernel (rms_norm_pair_backward_out_resident_kernel: the same bits) where D <= 2048; 0 the
// two-pass one. On an H100 at B = 64, S = 4096 (kernel_breakdown --train, BENCHMARKS.md 2026-12-07,
// seventeenth session) the one-read kernel took 3.19 ms against 4.16.
bool resident_wanted() {
    return env_choice("HSPMN_RMS_NORM_RESIDENT", {"0", "1"}, 1,
                      "1 or unset (the pair dx kernel reads each row once, rows of D <= 2048 kept in registers) or "
                      "0 (twice)") == 1;
}

template <class DxT>
void rms_norm_backward_any(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* w, const float* rstd,
                           const float* dy, int64_t N, int64_t D, DxT* dx, float* dw, DeviceBuffer& scratch) {
    if (N <= 0) return;
    const unsigned grid = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
    if (vec_rows(D, {x, w, dy, dx}))
        rms_norm_backward_dx_kernel<DxT, true><<<grid, kRowsPerBlock * 32, 0, stream(d)>>>(x, w, rstd, dy, N, D, dx);
    else
        rms_norm_backward_dx_kernel<DxT, false><<<grid, kRowsPerBlock * 32, 0, stream(d)>>>(x, w, rstd, dy, N, D, dx);
    check_launch("rms_norm_backward_dx");
    const int64_t rows = partial_rows(N), chunks = (N + rows - 1) / rows;
    scratch.ensure(d, static_cast<std::size_t>(chunks * D) * sizeof(float));
    const dim3 g2(static_cast<unsigned>((D + 255) / 256), static_cast<unsigned>(chunks));
    rms_norm_backward_dw_kernel<<<g2, 256, 0, stream(d)>>>(x, rstd, dy, N, D, rows, scratch.as<float>());
    check_launch("rms_norm_backward_dw");
    reduce_partials(d, scratch.as<float>(), chunks, D, dw);
}

}  // namespace

void rms_norm_backward(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* w, const float* rstd,
                       const float* dy, int64_t N, int64_t D, float* dx, float* dw, DeviceBuffer& scratch) {
    rms_norm_backward_any(d, x, w, rstd, dy, N, D, dx, dw, scratch);
}

void rms_norm_backward_bf16(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* w, const float* rstd,
                            const float* dy, int64_t N, int64_t D, __nv_bfloat16* dx, float* dw,
                            DeviceBuffer& scratch) {
    rms_norm_backward_any(d, x, w, rstd, dy, N, D, dx, dw, scratch);
}

namespace {

// The pair's weight gradients: per-chunk column partials of both norms in one read of x, then reduced;
// with g_w_r (and dl) the router's weight gradient from the same read (router_backward's chunks and sums).
void pair_backward_dw(Device& d, const __nv_bfloat16* x, const float* rstd, const float* dy_a, const float* dy_h,
                      int64_t N, int64_t D, float* dw_a, float* dw_h, DeviceBuffer& scratch,
                      const float* dl = nullptr, float* g_w_r = nullptr) {
    const int64_t rows = partial_rows(N), chunks = (N + rows - 1) / rows;
    const bool router = dl && g_w_r;
    // part_r (f64) first: its offset 0 keeps it 8-byte aligned
    const std::size_t r_bytes = router ? static_cast<std::size_t>(chunks * D) * sizeof(double) : 0;
    scratch.ensure(d, r_bytes + static_cast<std::size_t>(2 * chunks * D) * sizeof(float));
    double* part_r = router ? scratch.as<double>() : nullptr;
    float* part_a = reinterpret_cast<float*>(scratch.as<char>() + r_bytes);
    float* part_h = part_a + chunks * D;
    const dim3 g2(static_cast<unsigned>((D + 255) / 256), static_cast<unsigned>(chunks));
    if (router)
        rms_norm_pair_backward_dw_kernel<true>
            <<<g2, 256, 0, stream(d)>>>(x, rstd, dy_a, dy_h, dl, N, D, rows, part_a, part_h, part_r);
    else
        rms_norm_pair_backward_dw_kernel<false>
            <<<g2, 256, 0, stream(d)>>>(x, rstd, dy_a, dy_h, nullptr, N, D, rows, part_a, part_h, nullptr);
    check_launch("rms_norm_pair_backward_dw");
    reduce_partials(d, part_a, chunks, D, dw_a);
    reduce_partials(d, part_h, chunks, D, dw_h);
    if (router) router_w_reduce(d, part_r, chunks, D, g_w_r);
}

}  // namespace

void rms_norm_pair_backward(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* w_a, const __nv_bfloat16* w_h,
                            const float* rstd, const float* dy_a, const float* dy_h, int64_t N, int64_t D, float* dx,
                            float* dw_a, float* dw_h, DeviceBuffer& scratch) {
    if (N <= 0) return;
    const unsigned grid = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
    if (vec_rows(D, {x, w_a, w_h, dy_a, dy_h, dx}))
        rms_norm_pair_backward_dx_kernel<true, false><<<grid, kRowsPerBlock * 32, 0, stream(d)>>>(
            x, w_a, w_h, rstd, dy_a, dy_h, nullptr, nullptr, nullptr, N, D, dx, nullptr);
    else
        rms_norm_pair_backward_dx_kernel<false, false><<<grid, kRowsPerBlock * 32, 0, stream(d)>>>(
            x, w_a, w_h, rstd, dy_a, dy_h, nullptr, nullptr, nullptr, N, D, dx, nullptr);
    check_launch("rms_norm_pair_backward_dx");
    pair_backward_dw(d, x, rstd, dy_a, dy_h, N, D, dw_a, dw_h, scratch);
}

void rms_norm_pair_backward_out(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* w_a,
                                const __nv_bfloat16* w_h, const float* rstd, const float* dy_a, const float* dy_h,
                                const __nv_bfloat16* d_out, const float* dl, const __nv_bfloat16* w_r, int64_t N,
                                int64_t D, __nv_bfloat16* d_x, float* dw_a, float* dw_h, DeviceBuffer& scratch,
                                float* g_w_r) {
    if (N <= 0) return;
    pair_backward_dw(d, x, rstd, dy_a, dy_h, N, D, dw_a, dw_h, scratch, dl, g_w_r);
    if (!d_x) return;  // a backward whose caller wants no input gradient
    const unsigned grid = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
    const bool vec = vec_rows(D, {x, w_a, w_h, dy_a, dy_h, d_out, d_x, dl ? w_r : x});
    if (vec && D <= kResidentSteps * 256 && resident_wanted()) {
        const unsigned rgrid = static_cast<unsigned>((N + kResidentRows - 1) / kResidentRows);
        rms_norm_pair_backward_out_resident_kernel<<<rgrid, kResidentRows * 32, 0, stream(d)>>>(
            x, w_a, w_h, rstd, dy_a, dy_h, d_out, dl, w_r, N, D, d_x);
    } else if (vec)
        rms_norm_pair_backward_dx_kernel<true, true><<<grid, kRowsPerBlock * 32, 0, stream(d)>>>(
            x, w_a, w_h, rstd, dy_a, dy_h, d_out, dl, w_r, N, D, nullptr, d_x);
    else
        rms_norm_pair_backward_dx_kernel<false, true><<<grid, kRowsPerBlock * 32, 0, stream(d)>>>(
            x, w_a, w_h, rstd, dy_a, dy_h, d_out, dl, w_r, N, D, nullptr, d_x);
    check_launch("rms_norm_pair_backward_out");
}

}  // namespace hspmn::cuda
