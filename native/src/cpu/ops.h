// The CPU ops of one HSPMN block, one file each, named as in MODEL.md and the PyTorch reference.
// Everything is float32 row-major; N = B*S token rows. "(+)=" marks outputs that are accumulated.
#pragma once

#include <cstdint>

#include "../core/attention_shape.h"
#include "../core/philox.h"
#include "hspmn.h"
#include "thread_pool.h"

namespace hspmn::cpu {

// ---- rms_norm.cpp: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps)
// x: [N, D]  w: [D]  y: [N, D]  rstd: [N]
void rms_norm_forward(ThreadPool& pool, const float* x, const float* w, float eps, int64_t N, int64_t D, float* y,
                      float* rstd);
// dy: [N, D]; dx: [N, D] (+)=; dw: [D] (+)=
void rms_norm_backward(ThreadPool& pool, const float* x, const float* w, const float* rstd, const float* dy,
                       int64_t N, int64_t D, float* dx, float* dw);
// A block's two norms of one x (h = reflex norm, a = attention norm), one rstd: rms_norm_forward's
// values for each weight.  w_h, w_a: [D]  h, a: [N, D]  rstd: [N]
void rms_norm_pair_forward(ThreadPool& pool, const float* x, const float* w_h, const float* w_a, float eps, int64_t N,
                           int64_t D, float* h, float* a, float* rstd);
// rms_norm_backward(w_a, dy_a) then rms_norm_backward(w_h, dy_h) into one dx.
// dy_a, dy_h: [N, D]; dx: [N, D] (+)=; dw_a, dw_h: [D] (+)=
void rms_norm_pair_backward(ThreadPool& pool, const float* x, const float* w_a, const float* w_h, const float* rstd,
                            const float* dy_a, const float* dy_h, int64_t N, int64_t D, float* dx, float* dw_a,
                            float* dw_h);

// ---- causal_conv.cpp: c[b, t] = sum_j w[:, j] * h[b, t - (K-1) + j], h before position 0 is zero
// h, c: [B, S, D]  w: [D, K]
void causal_conv_forward(ThreadPool& pool, const float* h, const float* w, int64_t B, int64_t S, int64_t D,
                         int64_t K, float* c);
// dc: [B, S, D]; dh: [B, S, D] (overwritten); dw: [D, K] (+)=
void causal_conv_backward(ThreadPool& pool, const float* h, const float* w, const float* dc, int64_t B, int64_t S,
                          int64_t D, int64_t K, float* dh, float* dw);

// ---- swiglu.cpp: a = silu(g) * u
// g, u, a: [n]
void swiglu_forward(ThreadPool& pool, const float* g, const float* u, int64_t n, float* a);
// da: [n]; dg, du: [n] (overwritten)
void swiglu_backward(ThreadPool& pool, const float* g, const float* u, const float* da, int64_t n, float* dg,
                     float* du);

// ---- rope.cpp: rotate-half rotary embedding, angle = pos * base^(-2i/Dh) computed in float64
// cos, sin: [S, Dh/2]
void rope_table(int64_t S, int64_t Dh, float base, float* cos_out, float* sin_out);
// The table's rows at positions pos: [n] (the same values bit for bit): cos, sin: [n, Dh/2]. Decode
// and the chunked forward use it so their table is bounded by their rows, not by the positions.
void rope_rows(const int32_t* pos, int64_t n, int64_t Dh, float base, float* cos_out, float* sin_out);
// x: [R, heads * Dh] rotated in place; pos: [R] position of each row
void rope_forward(ThreadPool& pool, float* x, int64_t R, int64_t heads, int64_t Dh, const int32_t* pos,
                  const float* cos_t, const float* sin_t);
// dx: [R, heads * Dh] rotated back in place (the transpose of the rotation)
void rope_backward(ThreadPool& pool, float* dx, int64_t R, int64_t heads, int64_t Dh, const int32_t* pos,
                   const float* cos_t, const float* sin_t);

// ---- router_logits.cpp: l = x . w + b, dot products in float64
// x: [N, D]  w: [D]  l: [N]
void router_logits(ThreadPool& pool, const float* x, const float* w, float b, int64_t N, int64_t D, float* l);
// l: [N] -> the share with l > 0: what threshold routing selects without noise (t > 0 keeps the sign)
float noise_free_fraction(const float* l, int64_t N);

// ---- gumbel_noise.cpp: Philox draw of native/README.md; row b draws as row row_offset + b
// out: [B, S]
void gumbel_noise(ThreadPool& pool, uint64_t seed, int64_t step, int32_t layer, int64_t B, int64_t S, float* out,
                  int64_t row_offset = 0);

// ---- route_select.cpp
// n: [B, S] scores; indices: [B, C] increasing positions then -1; counts: [B]
// topk: the k largest n per sequence, ties to the lower position (C >= k). threshold: n > 0, i.e.
// sigmoid(n) > 0.5 without sigmoid's rounding to 0.5 near zero (C == S).
void route_select(const float* n, int64_t B, int64_t S, int32_t routing, int64_t k, int64_t C, int32_t* indices,
                  int32_t* counts);

// ---- aux_loss.cpp: lambda_s (mean p - target)^2 + lambda_e mean(p softplus(-l) + (1-p) softplus(l))
// l: [N]; float64 inside
float aux_loss_forward(const float* l, int64_t N, float target, float lambda_s, float lambda_e);
// dl: [N] (+)= d_aux * d aux / d l
void aux_loss_backward(const float* l, int64_t N, float target, float lambda_s, float lambda_e, float d_aux,
                       float* dl);

// ---- sqdk_attention.cpp: sparse queries, dense causal keys, GQA, in the selected-rows layout of
// core/attention_shape.h (the CUDA op's): q, o: [B, C, H*Dh]  pos: [B, C]  counts: [B]
// k, v: [B, S, Hkv*Dh]  lse: [B, H, C]; rows past counts[b] are written as 0 in o, lse (and dq).
void sqdk_attention_forward(ThreadPool& pool, const AttentionShape& a, const float* q, const int32_t* pos,
                            const int32_t* counts, const float* k, const float* v, float* o, float* lse);
// d_o: [B, C, H*Dh]; dq: [B, C, H*Dh], dk, dv: [B, S, Hkv*Dh] (overwritten)
void sqdk_attention_backward(ThreadPool& pool, const AttentionShape& a, const float* q, const int32_t* pos,
                             const int32_t* counts, const float* k, const float* v, const float* o,
                             const float* lse, const float* d_o, float* dq, float* dk, float* dv);
// The CPU block keeps its query rows packed by sequence (no padding): sequence b owns rows
// q_start[b] .. q_start[b+1] - 1 of q and o ([Nq, H*Dh]) and keys b*S .. b*S + S - 1. Each sequence is
// one B = 1, C = its count call of the ops above, so its lse rows are [H, count] at lse + q_start[b] * H
// (when every count is equal, that is the shared layout itself, run as one call).
struct PackedQueries {
    int64_t B, S, H, Hkv, Dh, Nq;
    const int64_t* q_start;  // [B + 1]
    const int32_t* q_pos;    // [Nq]
};
void sqdk_attention_forward_packed(ThreadPool& pool, const PackedQueries& a, const float* q, const float* k,
                                   const float* v, float* o, float* lse);
void sqdk_attention_backward_packed(ThreadPool& pool, const PackedQueries& a, const float* q, const float* k,
                                    const float* v, const float* o, const float* lse, const float* d_o, float* dq,
                                    float* dk, float* dv);

// ---- gather_scatter.cpp
// dst: [n, cols] = src[rows[i]]
void gather_rows(ThreadPool& pool, const float* src, int64_t cols, const int64_t* rows, int64_t n, float* dst);
// dst[rows[i]] += src: [n, cols]  (rows distinct)
void scatter_add_rows(ThreadPool& pool, const float* src, int64_t cols, const int64_t* rows, int64_t n, float* dst);
// Straight-through gate: out[rows[i]] += y_i * o[i] with y_i = 1 - sg(sigmoid(n)) + sigmoid(n) = 1 forward.
// o: [n, cols]  out: [N, cols]
void gate_scatter_forward(ThreadPool& pool, const float* o, int64_t cols, const int64_t* rows, int64_t n,
                          float* out);
// d_out: [N, cols]; d_o: [n, cols] = d_out[rows[i]] (y = 1); dy: [n] = d_out[rows[i]] . o[i]
void gate_scatter_backward(ThreadPool& pool, const float* o, const float* d_out, int64_t cols, const int64_t* rows,
                           int64_t n, float* d_o, float* dy);

// ---- dropout.cpp: residual dropout (native/README.md "Residual dropout"), in place:
// v[i, d] *= keep(key, tag, b, s, d) ? 1 / (1 - p) : 0, token b*S + s = rows[i] (rows == null: i itself).
// v: [n, D]  rows: [n] or null
void dropout_rows(ThreadPool& pool, const DropoutKey& key, uint32_t tag, int64_t S, const int64_t* rows, int64_t n,
                  int64_t D, float* v);

// ---- convert.cpp: API tensors are bf16, everything inside is float32
void bf16_to_f32_array(ThreadPool& pool, const uint16_t* src, float* dst, int64_t n);
void f32_to_bf16_array(ThreadPool& pool, const float* src, uint16_t* dst, int64_t n);

// ---- vec.cpp: reductions used by several ops
float dot_f32(const float* a, const float* b, int64_t n);
void axpy_f32(float alpha, const float* x, float* y, int64_t n);  // y += alpha * x

// ---- the language model's ops (model/ drives them through Backend; MODEL.md "The language model")

// ---- embedding.cpp: x[r] = table[tokens[r]]; backward d_table[tokens[r]] (+)= dx[r]
// table: [V, D] bf16  tokens: [N]  x: [N, D] bf16
void embedding_forward(ThreadPool& pool, const uint16_t* table, const int32_t* tokens, int64_t N, int64_t D,
                       uint16_t* x);
// dx: [N, D] bf16  d_table: [V, D] (+)=; rows are added in token order (deterministic)
void embedding_backward(ThreadPool& pool, const uint16_t* dx, const int32_t* tokens, int64_t N, int64_t D,
                        float* d_table);

// ---- cross_entropy_fused.cpp (native/reference/README.md): per row z = h . table^T,
// loss = logsumexp(z) - z[target]; dz = grad_scale * (softmax(z) - onehot), rows in chunks.
// h: [N, D]  table: [V, D]  targets: [N]; returns the sum of the row losses (float64)
// dh: [N, D] = dz . table (overwritten) or null; d_table: [V, D] (+)= dz^T . h or null
double cross_entropy_fused(ThreadPool& pool, const float* h, const float* table, const int32_t* targets, int64_t N,
                           int64_t V, int64_t D, float grad_scale, float* dh, float* d_table);

// ---- adamw.cpp: one AdamW update (native/reference/README.md), g = grad * grad_scale:
// p *= 1 - lr wd; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
// p -= (lr / bias1) * m / (sqrt(v) / bias2_sqrt + eps); value = bf16(p)
void adamw_update(ThreadPool& pool, float* master, uint16_t* value, const float* grad, float* m, float* v, int64_t n,
                  float lr, float weight_decay, float beta1, float beta2, float eps, float bias1, float bias2_sqrt,
                  float grad_scale);

// ---- sample_tokens.cpp: one token per row (native/README.md "Sampling"), Backend::sample_tokens
// logits: [n, V]  params: [n]  tokens: [n]  status: [1]  scratch: [2 V * pool.size()]
void sample_tokens(ThreadPool& pool, const float* logits, int64_t n, int64_t V, const hspmn_sampling_params* params,
                   int32_t* tokens, int32_t* status, uint64_t* scratch);

// ---- vec.cpp
double sum_squares_f32(const float* a, int64_t n);  // float64 accumulation, fixed order

}  // namespace hspmn::cpu
