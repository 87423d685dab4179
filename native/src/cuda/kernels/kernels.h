// The CUDA ops of one HSPMN block, one file each, named as in MODEL.md, the PyTorch reference and
// src/cpu/ops.h. Storage is bf16 (activations, weights) or f32 (router values, norms' rstd,
// residual and gradient sums); every kernel computes in f32 (f64 where the CPU does). N = B*S token
// rows; C = selected rows per sequence (padded). "(+)=" marks accumulated outputs. Every launcher
// enqueues on stream(d), never synchronises, and calls check_launch after each launch.
#pragma once

#include <cstdint>

#include "../../core/backend.h"
#include "../../core/philox.h"
#include "../runtime.h"
#include "hspmn.h"

namespace hspmn::cuda {

// ---- convert.cu
// src: [n] bf16  dst: [n] f32
void bf16_to_f32(Device& d, const __nv_bfloat16* src, float* dst, int64_t n);
// src: [n] f32  dst: [n] bf16
void f32_to_bf16(Device& d, const float* src, __nv_bfloat16* dst, int64_t n);
// part: [chunks, n] f32; dst: [n] f32 (+)= sum over chunks, in chunk order (deterministic)
void reduce_partials(Device& d, const float* part, int64_t chunks, int64_t n, float* dst);
// Rows per chunk of the column reductions (weight gradients summed over tokens): fixed by N only.
int64_t partial_rows(int64_t N);

// ---- rms_norm.cu: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps)
// x: [N, D] bf16  w: [D] bf16  y: [N, D] bf16  rstd: [N] f32
void rms_norm_forward(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* w, float eps, int64_t N, int64_t D,
                      __nv_bfloat16* y, float* rstd);
// dy: [N, D] f32; dx: [N, D] f32 (+)=; dw: [D] f32 (+)=; scratch grows to [ceil(N/partial_rows), D] f32
void rms_norm_backward(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* w, const float* rstd,
                       const float* dy, int64_t N, int64_t D, float* dx, float* dw, DeviceBuffer& scratch);
// The same with dx: [N, D] bf16 (overwritten): the language model's final norm.
void rms_norm_backward_bf16(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* w, const float* rstd,
                            const float* dy, int64_t N, int64_t D, __nv_bfloat16* dx, float* dw,
                            DeviceBuffer& scratch);
// A block's two norms of one x in one pass (h = reflex norm, a = attention norm): the values of two
// rms_norm_forward calls bit for bit; both share rstd.
// x: [N, D] bf16  w_h, w_a: [D] bf16  h, a: [N, D] bf16  rstd: [N] f32
void rms_norm_pair_forward(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* w_h, const __nv_bfloat16* w_a,
                           float eps, int64_t N, int64_t D, __nv_bfloat16* h, __nv_bfloat16* a, float* rstd);
// The two backwards of one x: bit for bit rms_norm_backward(w_a, dy_a) then rms_norm_backward(w_h, dy_h).
// dy_a, dy_h: [N, D] f32; dx: [N, D] f32 (+)=; dw_a, dw_h: [D] f32 (+)=; scratch grows to 2 x [chunks, D] f32
void rms_norm_pair_backward(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* w_a, const __nv_bfloat16* w_h,
                            const float* rstd, const float* dy_a, const float* dy_h, int64_t N, int64_t D, float* dx,
                            float* dw_a, float* dw_h, DeviceBuffer& scratch);
// The block's whole input gradient in one pass, written once as bf16: d_x = bf16(d_out + the attention
// norm's dx + the reflex norm's dx + dl w_r), the bits of bf16_to_f32(d_out), rms_norm_pair_backward,
// the router's dx[i, :] += dl[i] w_r (one fma) and f32_to_bf16 run one after the other, without their
// [N, D] f32 dx. dl null: no router term; d_x null: the weight gradients alone. dw_a, dw_h as
// rms_norm_pair_backward's. g_w_r (with dl): the router's weight gradient too, g_w_r[d] += sum_i dl[i] x[i, d],
// summed in the pass that reads x for dw_a and dw_h, bit for bit router_backward's.
// d_out, d_x: [N, D] bf16  dl: [N] f32 or null  w_r: [D] bf16 (read when dl is set)  g_w_r: [D] f32 or null
void rms_norm_pair_backward_out(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* w_a,
                                const __nv_bfloat16* w_h, const float* rstd, const float* dy_a, const float* dy_h,
                                const __nv_bfloat16* d_out, const float* dl, const __nv_bfloat16* w_r, int64_t N,
                                int64_t D, __nv_bfloat16* d_x, float* dw_a, float* dw_h, DeviceBuffer& scratch,
                                float* g_w_r = nullptr);

// ---- rms_norm_conv.cu: rms_norm_pair_forward then causal_conv_forward of h over whole sequences, bit
// for bit, in one kernel that reads x once and writes h only when h is not null (the training forward
// keeps it for the backward). fits(D, K): the shapes it takes (D % 8 == 0, 1 <= K <= kConvVecK); the
// caller runs the two ops otherwise.
// x: [B, S, D] bf16  w_h, w_a: [D]  w_c: [D, K]  h (or null), a, c: [B, S, D]  rstd: [B*S] f32
bool rms_norm_pair_conv_fits(int64_t D, int64_t K);
void rms_norm_pair_conv_forward(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* w_h,
                                const __nv_bfloat16* w_a, const __nv_bfloat16* w_c, float eps, int64_t B, int64_t S,
                                int64_t D, int64_t K, __nv_bfloat16* h, __nv_bfloat16* a, __nv_bfloat16* c,
                                float* rstd);

// ---- causal_conv.cu: c[b, t] = sum_j w[:, j] * h[b, t - (K-1) + j], h before position 0 is zero
// h, c: [B, S, D] bf16  w: [D, K] bf16
void causal_conv_forward(Device& d, const __nv_bfloat16* h, const __nv_bfloat16* w, int64_t B, int64_t S,
                         int64_t D, int64_t K, __nv_bfloat16* c);
// dc: [B, S, D] f32; dh: [B, S, D] f32 (overwritten); dw: [D, K] f32 (+)=; scratch grows to [chunks, D, K] f32.
// Two ways, the same bits: one pass over dc and h (kOnePass; D % 8 == 0 and K <= kConvVecK, else the two
// passes), or dh and dw in two kernels (kTwoPass); kAuto takes one pass unless HSPMN_CONV_BACKWARD_ONE_PASS=0.
enum class ConvBackwardWay { kAuto, kTwoPass, kOnePass };
void causal_conv_backward(Device& d, const __nv_bfloat16* h, const __nv_bfloat16* w, const float* dc, int64_t B,
                          int64_t S, int64_t D, int64_t K, float* dh, float* dw, DeviceBuffer& scratch,
                          ConvBackwardWay way = ConvBackwardWay::kAuto);

// ---- swiglu.cu: a = silu(g) * u over rows of F. g and u (dg and du) are rows of stride ldg: the
// block passes the two halves of one [rows, 2F] buffer (u = g + F, ldg = 2F); contiguous: ldg = F.
// g, u: [rows, F] bf16 row stride ldg  a: [rows, F] bf16
void swiglu_forward(Device& d, const __nv_bfloat16* g, const __nv_bfloat16* u, int64_t rows, int64_t F, int64_t ldg,
                    __nv_bfloat16* a);
// da: [rows, F] bf16; dg, du: [rows, F] bf16 row stride ldg (overwritten)
void swiglu_backward(Device& d, const __nv_bfloat16* g, const __nv_bfloat16* u, const __nv_bfloat16* da, int64_t rows,
                     int64_t F, int64_t ldg, __nv_bfloat16* dg, __nv_bfloat16* du);

// ---- transpose.cu: out[c, r] = in[r, c] (swiglu_backward_gemm's W_down^T)
// in: [rows, cols] bf16  out: [cols, rows] bf16 (not aliasing in)
void transpose_bf16(Device& d, const __nv_bfloat16* in, int64_t rows, int64_t cols, __nv_bfloat16* out);

// ---- rope.cu: rotate-half rotary embedding, angle = pos * base^(-2i/Dh) in f64 (as the CPU's table)
// cos, sin: [S, Dh/2] f32
void rope_table(Device& d, int64_t S, int64_t Dh, float base, float* cos_t, float* sin_t);
// Row r of [R, heads*Dh]: with pos == null its position is r % S (keys, every token); else rows are
// [B, C] selected queries, position pos[r] (pos: [B, C] i32), valid iff r % C < counts[r / C]
// (counts: [B] i32); invalid rows are written as 0.
// src: [R, heads*Dh] f32  dst: [R, heads*Dh] bf16
void rope_forward(Device& d, const float* src, __nv_bfloat16* dst, int64_t R, int64_t heads, int64_t Dh,
                  const int32_t* pos, const int32_t* counts, int64_t C, int64_t S, const float* cos_t,
                  const float* sin_t);
// The transpose (rotation by -angle). src, dst: [R, heads*Dh] bf16 with row stride ld (>= heads*Dh:
// the block's dk is the first half of each [dk | dv] row), may alias.
void rope_backward(Device& d, const __nv_bfloat16* src, __nv_bfloat16* dst, int64_t R, int64_t heads, int64_t Dh,
                   int64_t ld, const int32_t* pos, const int32_t* counts, int64_t C, int64_t S, const float* cos_t,
                   const float* sin_t);

// ---- router.cu
// l = x . w + b (f64 dot), t = clamp(exp(log_temp), 0.1, 2), n = (l + g) / t (g = 0 when noise is null).
// x: [N, D] bf16  w: [D] bf16  b, log_temp: [1] bf16  noise: [N] f32 or null
// l, n: [N] f32  temp: [2] f32 = {t, 1 if exp(log_temp) is strictly inside (0.1, 2) else 0}
void router_forward(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* w, const __nv_bfloat16* b,
                    const __nv_bfloat16* log_temp, const float* noise, int64_t N, int64_t D, float* l, float* n,
                    float* temp);
// l, p: [N] f32, p = sigmoid(l)
void router_probs(Device& d, const float* l, int64_t N, float* p);
// The gate y = 1 - sg(s) + s, s = sigmoid(n), on selected rows: dn = dy e/(1+e)^2, dl += dn / t.
// dy: [B, C] f32  n: [B*S] f32  indices: [B, C] i32  counts: [B] i32  temp: [2] f32  dl: [B*S] f32 (+)=
// Then the router's own parameter gradients from dl (every token):
//   g_log_temp += t * sum(-dn n / t) when t is inside, g_b += sum dl, g_w[d] += sum_i dl[i] x[i, d].
// The input gradient's part dx[i, :] += dl[i] w is rms_norm_pair_backward_out's; so may g_w be (g_w null
// here: rms_norm_pair_backward_out's g_w_r sums it while reading x for the norms, the same bits).
// x: [N, D] bf16  g_w: [D] f32 or null  g_b, g_log_temp: [1] f32
void router_backward(Device& d, const float* dy, const float* n, const int32_t* indices, const int32_t* counts,
                     const float* temp, int64_t B, int64_t S, int64_t C, const __nv_bfloat16* x, int64_t D,
                     float* dl, float* g_w, float* g_b, float* g_log_temp, DeviceBuffer& scratch);
// g_w[d] += sum over chunks of part[., d] (f64, rounded once). part: [chunks, D] f64 of per-chunk sums
// of dl[i] x[i, d] over partial_rows(N) rows each, in row order
void router_w_reduce(Device& d, const double* part, int64_t chunks, int64_t D, float* g_w);
// HSPMN_ROUTER_W_FOLD (read at every call): unset or 1, the block backward passes g_w to
// rms_norm_pair_backward_out (one read of x fewer); 0 to router_backward.
bool router_w_fold_wanted();

// ---- route_select.cu: per sequence, top-k of n (ties to the lower position, NaN lowest) or
// threshold n > 0; indices increasing then -1 up to C; counts on the device. Two ways, the same
// result: one block a sequence, or many blocks a sequence for few long ones (kAuto: the wide way for
// at most kRouteWideMaxSeqs sequences of kRouteWideMinSeq or more: from backend_ops' timings of both ways,
// BENCHMARKS.md 2026-12-07, the wide way won at B = 1, 2 and S = 40,000-131,072 and lost at B = 16 S = 16,384).
// n: [B, S] f32  indices: [B, C] i32  counts: [B] i32  scratch: route_select_scratch_bytes(B, S) bytes,
// 16-byte aligned (the wide way's; the caller's, so that a captured graph keeps its address)
enum class RouteSelectWay { kAuto, kBlock, kWide };
constexpr int64_t kRouteWideMaxSeqs = 4;
constexpr int64_t kRouteWideMinSeq = 32768;
int64_t route_select_scratch_bytes(int64_t B, int64_t S);
// Whether kAuto takes the wide way for B sequences of S.
bool route_select_wide(int64_t B, int64_t S);
void route_select(Device& d, const float* n, int64_t B, int64_t S, int32_t routing, int64_t k, int64_t C,
                  int32_t* indices, int32_t* counts, void* scratch, RouteSelectWay way = RouteSelectWay::kAuto);

// ---- aux_loss.cu: lambda_s (mean p - target)^2 + lambda_e mean(p softplus(-l) + (1-p) softplus(l)), f64
// (the sums through the device's aux_partials, runtime.h: calls on one stream only)
// l: [N] f32  aux: [1] f32
void aux_loss_forward(Device& d, const float* l, int64_t N, float target, float lambda_s, float lambda_e, float* aux);
// d_aux: [1] f32 on the device; dl: [N] f32 (overwritten) = d_aux * d aux / d l
void aux_loss_backward(Device& d, const float* l, int64_t N, float target, float lambda_s, float lambda_e,
                       const float* d_aux, float* dl);

// ---- gather_scatter.cu: selected rows are [B, C], row (b, j) valid iff j < counts[b], token b*S + indices[b, j]
// a: [B*S, D] bf16  a_sel: [B*C, D] bf16 (invalid rows 0)
void gather_selected(Device& d, const __nv_bfloat16* a, const int32_t* indices, const int32_t* counts, int64_t B,
                     int64_t S, int64_t C, int64_t D, __nv_bfloat16* a_sel);
// src: [B*C, D] bf16; dst: [B*S, D] f32 (+)= on the selected tokens
void scatter_add_selected(Device& d, const __nv_bfloat16* src, const int32_t* indices, const int32_t* counts,
                          int64_t B, int64_t S, int64_t C, int64_t D, float* dst);
// The block's output when the down GEMM wrote m alone (no dropout): out[row] = bf16((m + x) + o[slot])
// for a query row (row_slot[row] = its slot; the gate y = 1 in value), bf16(m + x) for the others:
// the values of the GEMM accumulating onto x (acc + x in f32), gate_scatter_forward and f32_to_bf16,
// with one pass over the rows instead of three. Each element of x is read before its out is written,
// so out may be x. row_slot comes from row_slots.
// m: [n, D] f32  x, out: [n, D] bf16  o: [*, D] f32  row_slot: [n] i32 (-1: not a query row)
void residual_out(Device& d, const float* m, const __nv_bfloat16* x, const float* o, const int32_t* row_slot,
                  int64_t n, int64_t D, __nv_bfloat16* out);
// The query rows' output after down_residual (runtime.h) wrote res_sel[q] = m + x of each: out[token of
// slot q] = bf16(res_sel[q] + o[q]), residual_out's arithmetic for those rows; invalid slots are skipped.
// res_sel, o: [B*C, D] f32  out: [B*S, D] bf16
void residual_out_selected(Device& d, const float* res_sel, const float* o, const int32_t* indices,
                           const int32_t* counts, int64_t B, int64_t S, int64_t C, int64_t D, __nv_bfloat16* out);
// row_slot[b * S + indices[b, j]] = b * C + j for the valid slots (j < counts[b]), -1 for every other of
// the n rows.  row_slot: [n] i32
void row_slots(Device& d, const int32_t* indices, const int32_t* counts, int64_t B, int64_t S, int64_t C, int64_t n,
               int32_t* row_slot);
// Straight-through gate, y = 1 forward: res[token] += o.  o: [B*C, D] f32  res: [B*S, D] f32 (+)=
void gate_scatter_forward(Device& d, const float* o, const int32_t* indices, const int32_t* counts, int64_t B,
                          int64_t S, int64_t C, int64_t D, float* res);
// d_out: [B*S, D] bf16; d_o: [B*C, D] bf16 = d_out[token] (y = 1); dy: [B*C] f32 = d_out[token] . o; invalid rows 0
void gate_scatter_backward(Device& d, const float* o, const __nv_bfloat16* d_out, const int32_t* indices,
                           const int32_t* counts, int64_t B, int64_t S, int64_t C, int64_t D, __nv_bfloat16* d_o,
                           float* dy);

// ---- gumbel_noise.cu: the Philox draw of native/README.md; row b draws as row row_offset + b.
// out: [B, S] f32
void gumbel_noise_kernel_launch(Device& d, uint64_t seed, int64_t step, int32_t layer, int64_t B, int64_t S,
                                float* out, int64_t row_offset = 0);

// ---- dropout.cu: residual dropout (native/README.md "Residual dropout"; core/philox.h dropout_bits).
// Rows are tokens (indices == null: row r is token r of B sequences of S) or selected rows [B, C]
// (row (b, j) is token b*S + indices[b, j] when j < counts[b]; padding rows are left as they are).
// The mask's value 1 / (1 - p) is applied by dropout_residual and dropout_rows_f32; dropout_mask_bf16
// only zeroes (its callers fold the scale into a GEMM's alpha, so no extra bf16 rounding).
// x: [N, D] bf16  res: [N, D] f32 = x + keep * res / (1 - p) (res holds m)
void dropout_residual(Device& d, const DropoutKey& key, const __nv_bfloat16* x, float* res, int64_t N, int64_t S,
                      int64_t D);
// v: [rows, D] f32 *= keep / (1 - p)
void dropout_rows_f32(Device& d, const DropoutKey& key, uint32_t tag, float* v, int64_t rows, int64_t S, int64_t D,
                      const int32_t* indices, const int32_t* counts, int64_t C);
// src, dst: [rows, D] bf16 (may alias); dst = keep ? src : 0
void dropout_mask_bf16(Device& d, const DropoutKey& key, uint32_t tag, const __nv_bfloat16* src, __nv_bfloat16* dst,
                       int64_t rows, int64_t S, int64_t D, const int32_t* indices, const int32_t* counts, int64_t C);

// ---- non_finite.cu: first flat index of a NaN/Inf, or numel when none.
// data: [numel] bf16 or f32  first: [1] u64 on the device (overwritten)
void non_finite_scan(Device& d, const void* data, bool is_bf16, int64_t numel, unsigned long long* first);

// ---- sample_tokens.cu: one token per row (native/README.md "Sampling"), core/backend.h sample_tokens.
// One CTA per row; no host sync. state: [2] u32 of the device, zero before the first launch; every
// launch leaves it zero again.
// logits: [n, V] f32  params: [n]  tokens: [n] i32  status: [1] i32
void sample_tokens(Device& d, const float* logits, int64_t n, int64_t V, const hspmn_sampling_params* params,
                   int32_t* tokens, int32_t* status, unsigned* state);

// ---- routed_fraction.cu: out[0] = sum(counts) / (B * S)   counts: [B] i32  out: [1] f32
void routed_fraction(Device& d, const int32_t* counts, int64_t B, int64_t S, float* out);
// out[0] = count(l > 0) / N   l: [N] f32  out: [1] f32
void noise_free_fraction(Device& d, const float* l, int64_t N, float* out);

// ---- decode.cu: cached decoding (core/backend.h DecodeCall). A call's rows are grouped by sequence
// j < seqs: rows row_start[j] .. row_start[j+1] - 1 at positions pos0[j], pos0[j] + 1, ... of cache
// slot slot[j]; its selected rows go to query block qblock[j] of the [seqs, C] query lists. Every
// array is i32 in device memory.
struct DecodeMeta {
    const int32_t* row_start;  // [seqs + 1]
    const int32_t* slot;       // [seqs]
    const int32_t* pos0;       // [seqs]
    const int32_t* qblock;     // [seqs], a permutation of 0..seqs-1
    int32_t seqs;
};
// row_pos: [n] i32 position of each row  row_cache: [n] i64 = slot * max_len + position
// cos_rows, sin_rows: [n, Dh/2] f32: rope_table's row at each row's position (the same values), so
// RoPE of a call needs a table of its rows, not of every position up to max_len.
void decode_rows(Device& d, const DecodeMeta& m, int64_t n, int64_t max_len, int64_t Dh, float rope_base,
                 int32_t* row_pos, int64_t* row_cache, float* cos_rows, float* sin_rows);
// The chunked inference forward's chunk: rows s0 .. s0 + T - 1 of one sequence whose selection over
// the whole sequence is sel: [count] i32 increasing positions (count: [1] i32 on the device).
// meta: [5] i32 = a one-sequence DecodeMeta {row_start {0, T}, slot {0}, pos0 {s0}, qblock {0}};
// qpos, qrow: [1, T] i32 = the selected positions in [s0, s0 + T) and their rows (position - s0),
// -1 past qcnt: [1] i32.
void chunk_select(Device& d, const int32_t* sel, const int32_t* count, int64_t s0, int64_t T, int32_t* meta,
                  int32_t* qpos, int32_t* qrow, int32_t* qcnt);
// Threshold routing (n > 0, as route_select) compacted per sequence in increasing position.
// n: [rows] f32  qpos: [seqs, C] i32 positions, qrow: [seqs, C] i32 rows (both -1 past qcnt)
// qcnt: [seqs] i32  routed: [rows] i32 (1 selected, 0 not) or null
void decode_select(Device& d, const float* n, const DecodeMeta& m, int64_t C, int32_t* qpos, int32_t* qrow,
                   int32_t* qcnt, int32_t* routed);
// causal_conv_forward's arithmetic over [the slot's conv cache, the new rows].
// h, c: [n, D] bf16  w: [D, K] bf16  conv_cache: [max_seqs, K-1, D] bf16 (oldest first)
void decode_causal_conv(Device& d, const __nv_bfloat16* h, const __nv_bfloat16* conv_cache,
                        const __nv_bfloat16* w, const DecodeMeta& m, int64_t n, int64_t D, int64_t K,
                        __nv_bfloat16* c);
// Each slot's conv cache becomes the last K-1 inputs of [old cache, new rows]. Run after decode_causal_conv.
void decode_conv_cache_update(Device& d, const __nv_bfloat16* h, const DecodeMeta& m, int64_t D, int64_t K,
                              __nv_bfloat16* conv_cache);
// k_cache[row_cache[r]] = k[r], v_cache likewise.  k, v: [n, KV] bf16  caches: [max_seqs*max_len, KV] bf16
void decode_kv_write(Device& d, const __nv_bfloat16* k, const __nv_bfloat16* v, const int64_t* row_cache, int64_t n,
                     int64_t KV, __nv_bfloat16* k_cache, __nv_bfloat16* v_cache);

// ---- decode_step.cu: a decode step (core/backend.h DecodeStepCall): one row per slot, every index on
// the device, so CudaBlock::decode_step can be captured in a graph. Row r belongs to slot[r] (-1: a
// padding row of a batch bucket, which reads and writes no cache) at position pos[r]. Queries are laid
// out by slot: [max_seqs, 1] lists for sqdk_attention (qcnt[s] = 1 when slot s's row is routed; the
// O projection's skinny_gemm resets the counts to 0 after the attention).

// router_forward (no noise), both rms_norm_forward, decode_causal_conv and decode_conv_cache_update for
// one row per block, with those kernels' arithmetic. Needs D % 8 == 0 and 1 <= K <= 8.
// x, c, a: [n, D] bf16  conv_w: [D, K] bf16  conv_cache: [max_seqs, K-1, D] bf16  routed: [n] i32
// qpos, qcnt: [max_seqs] i32  row_cache: [n] i64 (slot * max_len + pos, -1 for padding)
void decode_step_pre(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* router_w, const __nv_bfloat16* router_b,
                     const __nv_bfloat16* log_temp, const __nv_bfloat16* reflex_norm_w,
                     const __nv_bfloat16* attn_norm_w, float eps, const __nv_bfloat16* conv_w, int64_t K,
                     __nv_bfloat16* conv_cache, const int32_t* slot, const int32_t* pos, int64_t n, int64_t D,
                     int64_t max_len, __nv_bfloat16* c, __nv_bfloat16* a, int32_t* routed, int32_t* qpos,
                     int32_t* qcnt, int64_t* row_cache);
// rope_forward of each row's K (written to its cache row) and, for routed rows, its Q (written to its
// slot's query row), with cos/sin computed as rope_table computes them (no table to outgrow).
// kf: [n, Hkv*Dh] f32  qf: [n, H*Dh] f32  k_cache: [max_seqs*max_len, Hkv*Dh] bf16  q: [max_seqs, H*Dh] bf16
void rope_step(Device& d, const float* kf, const float* qf, const int32_t* slot, const int32_t* pos,
               const int32_t* routed, const int64_t* row_cache, int64_t n, int64_t H, int64_t Hkv, int64_t Dh,
               float base, __nv_bfloat16* k_cache, __nv_bfloat16* q);

// ---- sqdk_attention_decode.cu: sqdk_attention with one query per slot (decode steps), split along
// the keys over many blocks. q, o: [seqs, H*Dh] bf16 (slot s's query when qcnt[s] = 1, at position
// qpos[s]; slots with qcnt 0 are skipped and their o rows left as they were)  k, v: [seqs, max_len,
// Hkv*Dh] bf16  lse: [seqs, H] f32. Head dims 32, 64, 128; at most 8 query heads per KV head.
struct DecodeAttentionScratch {
    DeviceBuffer partials;
};
bool sqdk_attention_decode_fits(int64_t H, int64_t Hkv, int64_t Dh);
int64_t sqdk_attention_decode_chunk(int64_t max_len);
void sqdk_attention_decode_scratch(Device& d, DecodeAttentionScratch& s, int64_t seqs, int64_t max_len, int64_t H,
                                   int64_t Hkv, int64_t Dh);
void sqdk_attention_decode(Device& d, int64_t seqs, int64_t max_len, int64_t H, int64_t Hkv, int64_t Dh,
                           const __nv_bfloat16* q, const int32_t* qpos, const int32_t* qcnt, const __nv_bfloat16* k,
                           const __nv_bfloat16* v, __nv_bfloat16* o, float* lse, DecodeAttentionScratch& s);

// ---- skinny_gemm.cu: y = x W^T for M <= 32 rows, W [N, K] bf16 streamed once (decode steps). The
// epilogue fuses what reads the product; "token m" is row m of x (or x_map[m]).
constexpr int kSkinnyMaxRows = 32;
enum SkinnyMode {
    SKINNY_F32,       // y_f32[m, n] = p
    SKINNY_BF16,      // y_bf16[m, n] = bf16(p)
    SKINNY_SWIGLU,    // two matrices (gate, up): y_bf16 = swiglu_forward(bf16(p0), bf16(p1))
    SKINNY_RESIDUAL,  // y_f32 = residual (bf16) + p; y_bf16 = bf16(y_f32)
    SKINNY_KV,        // two matrices (K, V): y_f32 = p0; cache[row_cache[m], n] = bf16(p1) (row_cache >= 0)
    SKINNY_SCATTER,   // where gate[m]: y_bf16[m, n] = bf16(residual_f32[m, n] + p)
};
struct SkinnyEpilogue {
    int mode = SKINNY_F32;
    int64_t ldy = 0;                              // row stride of y_f32 / y_bf16 / residual_f32
    float* y_f32 = nullptr;
    __nv_bfloat16* y_bf16 = nullptr;
    const __nv_bfloat16* residual = nullptr;      // RESIDUAL: [M, ld_residual]
    int64_t ld_residual = 0;
    const float* residual_f32 = nullptr;          // SCATTER
    const int64_t* row_cache = nullptr;           // KV: [M]
    __nv_bfloat16* cache = nullptr;               // KV: [rows, N]
    const int32_t* gate = nullptr;                // [M] or null: when every gate is 0 the weights are not read
    const int32_t* reset_slots = nullptr;         // [M] or null: reset_counts[reset_slots[m]] = 0 (m < M, slot >= 0)
    int32_t* reset_counts = nullptr;
};
// Split-K partials and tile counters of skinny_gemm, sized by skinny_gemm_scratch before a launch
// (and before a graph capture: a launch never reallocates).
struct SkinnyScratch {
    DeviceBuffer partials, counters;
};
bool skinny_gemm_fits(int64_t M, int64_t N, int64_t K);
// Launch shape knobs for the tuning sweep of tests/skinny_gemm_cuda (0: the defaults). Not for
// production callers: the scratch must be sized after they change.
struct SkinnyTuning {
    int stages = 0;          // cp.async tiles in flight per warp (2..4; default 3)
    int blocks_per_sm = 0;   // split-K target
    int interleave = 0;      // 1: warps take every splits-th k tile instead of a contiguous run
};
SkinnyTuning& skinny_tuning();
void skinny_gemm_scratch(Device& d, SkinnyScratch& s, int64_t M, int64_t N, int64_t K, int matrices);
// x: [M, ldx] bf16 (rows via x_map: [M] i32, -1 a zero row, or null)  w0, w1: [N, K] bf16 (w1 null unless dual)
void skinny_gemm(Device& d, int64_t M, int64_t N, int64_t K, const __nv_bfloat16* x, int64_t ldx, const int32_t* x_map,
                 const __nv_bfloat16* w0, const __nv_bfloat16* w1, const SkinnyEpilogue& ep, SkinnyScratch& s);

// ---- the language model's ops (core/backend.h "the language model's ops" is their spec)

// embedding.cu: x[r] = table[tokens[r]]   table: [V, D] bf16  tokens: [N] i32 in [0, V)  x: [N, D] bf16
void embedding_forward(Device& d, const __nv_bfloat16* table, const int32_t* tokens, int64_t N, int64_t D,
                       __nv_bfloat16* x);
// d_table[tokens[r]] += dx[r], deterministic (sorted runs, no atomics).  dx: [N, D] bf16  d_table: [V, D] f32
// scratch grows to 3 [N] i32 + 2 [partial_rows chunks, D] f32 + the sort's temporary storage.
void embedding_backward(Device& d, const __nv_bfloat16* dx, const int32_t* tokens, int64_t N, int64_t D,
                        float* d_table, DeviceBuffer& scratch);

// cross_entropy_fused.cu. Scratch kept between steps: logits [R, ld] f32, dz [R, ld] bf16 (ld = V
// rounded up to 8, R = cross_entropy_chunk_rows), loss_rows [N] f32.
struct CrossEntropyScratch {
    DeviceBuffer logits, dz, loss_rows;
};
int64_t cross_entropy_chunk_rows(int64_t N, int64_t V);
// h: [N, D] bf16  table: [V, D] bf16  targets: [N] i32  loss_sum: [1] f32 (overwritten)
// dh: [N, D] f32 (overwritten) or null; d_table: [V, D] f32 (+)= or null; both scaled by grad_scale.
void cross_entropy_fused(Device& d, const __nv_bfloat16* h, const __nv_bfloat16* table, const int32_t* targets,
                         int64_t N, int64_t V, int64_t D, float grad_scale, float* loss_sum, float* dh,
                         float* d_table, CrossEntropyScratch& scratch);

// loss_finish.cu: loss[0] = ce_sum / N + sum_l stats[2 l], loss[1] = ce_sum / N (in double)
// ce_sum: [1] f32  stats: [L, 2] f32  loss: [2] f32
void loss_finish(Device& d, const float* ce_sum, const float* stats, int64_t L, int64_t N, float* loss);

// sum_squares.cu: sum of g^2 over every span in double, deterministic; waits for the stream and
// returns it. Each span's data: [numel] f32 on the device.
double sum_squares(Device& d, const GradSpan* spans, int64_t count, DeviceBuffer& scratch);

// adamw.cu: one AdamW update.  master, m, v: [n] f32 (updated)  grad: [n] f32  value: [n] bf16 = bf16(master)
void adamw_update(Device& d, float* master, __nv_bfloat16* value, const float* grad, float* m, float* v, int64_t n,
                  const AdamwScalars& s);

// fill.cu: dst[i] = value   dst: [n] f32
void fill_f32(Device& d, float* dst, int64_t n, float value);

}  // namespace hspmn::cuda
