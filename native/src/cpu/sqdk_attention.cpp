// Sparse-query dense-key attention in the selected-rows layout of core/attention_shape.h. Forward keeps
// the per-(query, head) log-sum-exp so backward recomputes probabilities exactly without storing them:
// P = exp(s - lse).
// Backward is split as in flash-attention: dQ per query (pass 1, also delta = dO . O), then dK/dV per
// (sequence, kv head, key block) (pass 2), so no two threads ever add into the same row.
#include <algorithm>
#include <cmath>
#include <limits>

#include "../core/alloc.h"
#include "ops.h"

namespace hspmn::cpu {

namespace {
constexpr int64_t kKeyBlock = 64;
}

void sqdk_attention_forward(ThreadPool& pool, const AttentionShape& a, const float* q, const int32_t* pos,
                            const int32_t* counts, const float* k, const float* v, float* o, float* lse) {
    const int64_t B = a.B, C = a.C, H = a.H, Dh = a.Dh, group = a.H / a.Hkv, kv_stride = a.Hkv * Dh, q_stride = H * Dh;
    const float scale = 1.0f / std::sqrt(static_cast<float>(Dh));
    // Scores of one (query, head) at a time per worker, up to the furthest query position (not S: a
    // decode step over a long cache reads its keys, it need not hold S scores per worker).
    int64_t span = 0;
    for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < counts[b]; ++j) span = std::max(span, static_cast<int64_t>(pos[b * C + j]) + 1);
    Buffer<float> scratch(static_cast<std::size_t>(pool.size() * span));

    pool.parallel_for(B * C * H, 4, [&](int64_t begin, int64_t end, int worker) {
        float* s = scratch.data() + worker * span;
        for (int64_t item = begin; item < end; ++item) {
            const int64_t i = item / H, h = item % H, g = h / group, b = i / C;
            float* oi = o + i * q_stride + h * Dh;
            if (i % C >= counts[b]) {  // padding row
                for (int64_t d = 0; d < Dh; ++d) oi[d] = 0.0f;
                lse[(b * H + h) * C + i % C] = 0.0f;
                continue;
            }
            const int64_t p = pos[i];
            const float* qi = q + i * q_stride + h * Dh;
            const float* kb = k + b * a.S * kv_stride + g * Dh;
            const float* vb = v + b * a.S * kv_stride + g * Dh;
            float m = -std::numeric_limits<float>::infinity();
            for (int64_t j = 0; j <= p; ++j) {
                s[j] = scale * dot_f32(qi, kb + j * kv_stride, Dh);
                m = std::max(m, s[j]);
            }
            float sum = 0.0f;
            for (int64_t j = 0; j <= p; ++j) {
                s[j] = std::exp(s[j] - m);
                sum += s[j];
            }
            for (int64_t d = 0; d < Dh; ++d) oi[d] = 0.0f;
            const float inv = 1.0f / sum;
            for (int64_t j = 0; j <= p; ++j) axpy_f32(s[j] * inv, vb + j * kv_stride, oi, Dh);
            lse[(b * H + h) * C + i % C] = m + std::log(sum);
        }
    });
}

void sqdk_attention_backward(ThreadPool& pool, const AttentionShape& a, const float* q, const int32_t* pos,
                             const int32_t* counts, const float* k, const float* v, const float* o,
                             const float* lse, const float* d_o, float* dq, float* dk, float* dv) {
    const int64_t B = a.B, C = a.C, H = a.H, Dh = a.Dh, Hkv = a.Hkv, group = a.H / a.Hkv, kv_stride = Hkv * Dh,
                  q_stride = H * Dh;
    const float scale = 1.0f / std::sqrt(static_cast<float>(Dh));
    Buffer<float> delta(static_cast<std::size_t>(B * C * H));  // [B, C, H]

    // Pass 1: dQ_i = scale * sum_j P_ij (dO_i . v_j - delta_i) k_j
    pool.parallel_for(B * C * H, 4, [&](int64_t begin, int64_t end, int) {
        for (int64_t item = begin; item < end; ++item) {
            const int64_t i = item / H, h = item % H, g = h / group, b = i / C;
            float* dqi = dq + i * q_stride + h * Dh;
            for (int64_t d = 0; d < Dh; ++d) dqi[d] = 0.0f;
            if (i % C >= counts[b]) continue;
            const int64_t p = pos[i];
            const float* qi = q + i * q_stride + h * Dh;
            const float* doi = d_o + i * q_stride + h * Dh;
            const float* kb = k + b * a.S * kv_stride + g * Dh;
            const float* vb = v + b * a.S * kv_stride + g * Dh;
            const float L = lse[(b * H + h) * C + i % C];
            const float dlt = dot_f32(doi, o + i * q_stride + h * Dh, Dh);
            delta[i * H + h] = dlt;
            for (int64_t j = 0; j <= p; ++j) {
                const float P = std::exp(scale * dot_f32(qi, kb + j * kv_stride, Dh) - L);
                const float dS = P * (dot_f32(doi, vb + j * kv_stride, Dh) - dlt);
                axpy_f32(scale * dS, kb + j * kv_stride, dqi, Dh);
            }
        }
    });

    // Pass 2: dV_j = sum_i P_ij dO_i, dK_j = scale * sum_i dS_ij q_i over the queries that see key j.
    const int64_t key_blocks = (a.S + kKeyBlock - 1) / kKeyBlock;
    pool.parallel_for(B * Hkv * key_blocks, 1, [&](int64_t begin, int64_t end, int) {
        for (int64_t item = begin; item < end; ++item) {
            const int64_t b = item / (Hkv * key_blocks), g = (item / key_blocks) % Hkv, kb_idx = item % key_blocks;
            const int64_t j0 = kb_idx * kKeyBlock, j1 = std::min(a.S, j0 + kKeyBlock);
            for (int64_t j = j0; j < j1; ++j) {
                float* dkj = dk + (b * a.S + j) * kv_stride + g * Dh;
                float* dvj = dv + (b * a.S + j) * kv_stride + g * Dh;
                for (int64_t d = 0; d < Dh; ++d) dkj[d] = dvj[d] = 0.0f;
            }
            for (int64_t i = b * C; i < b * C + counts[b]; ++i) {
                const int64_t p = pos[i];
                if (p < j0) continue;
                const int64_t jend = std::min(j1, p + 1);
                for (int64_t h = g * group; h < (g + 1) * group; ++h) {
                    const float* qi = q + i * q_stride + h * Dh;
                    const float* doi = d_o + i * q_stride + h * Dh;
                    const float L = lse[(b * H + h) * C + i % C], dlt = delta[i * H + h];
                    for (int64_t j = j0; j < jend; ++j) {
                        const float* kj = k + (b * a.S + j) * kv_stride + g * Dh;
                        const float* vj = v + (b * a.S + j) * kv_stride + g * Dh;
                        const float P = std::exp(scale * dot_f32(qi, kj, Dh) - L);
                        const float dS = P * (dot_f32(doi, vj, Dh) - dlt);
                        axpy_f32(P, doi, dv + (b * a.S + j) * kv_stride + g * Dh, Dh);
                        axpy_f32(scale * dS, qi, dk + (b * a.S + j) * kv_stride + g * Dh, Dh);
                    }
                }
            }
        }
    });
}

namespace {

// Packed rows with one count c for every sequence are the shared layout at C = c (row q_start[b] + j
// is b * c + j; lse [B, H, c] sits where B calls of [H, c] would): one call, parallel over all of them.
bool uniform(const PackedQueries& a) {
    for (int64_t b = 0; b < a.B; ++b)
        if (a.q_start[b + 1] - a.q_start[b] != a.q_start[1]) return false;
    return true;
}

}  // namespace

void sqdk_attention_forward_packed(ThreadPool& pool, const PackedQueries& a, const float* q, const float* k,
                                   const float* v, float* o, float* lse) {
    const int64_t kv = a.S * a.Hkv * a.Dh, qs = a.H * a.Dh;
    if (a.B > 0 && uniform(a)) {
        const int64_t C = a.q_start[1];
        Buffer<int32_t> counts(static_cast<std::size_t>(a.B));
        counts.fill(static_cast<int32_t>(C));
        sqdk_attention_forward(pool, AttentionShape{a.B, C, a.S, a.H, a.Hkv, a.Dh}, q, a.q_pos, counts.data(), k, v,
                               o, lse);
        return;
    }
    for (int64_t b = 0; b < a.B; ++b) {
        const int64_t r0 = a.q_start[b];
        const int32_t n = static_cast<int32_t>(a.q_start[b + 1] - r0);
        if (n == 0) continue;
        sqdk_attention_forward(pool, AttentionShape{1, n, a.S, a.H, a.Hkv, a.Dh}, q + r0 * qs, a.q_pos + r0, &n,
                               k + b * kv, v + b * kv, o + r0 * qs, lse + r0 * a.H);
    }
}

void sqdk_attention_backward_packed(ThreadPool& pool, const PackedQueries& a, const float* q, const float* k,
                                    const float* v, const float* o, const float* lse, const float* d_o, float* dq,
                                    float* dk, float* dv) {
    const int64_t kv = a.S * a.Hkv * a.Dh, qs = a.H * a.Dh;
    if (a.B > 0 && uniform(a)) {
        const int64_t C = a.q_start[1];
        Buffer<int32_t> counts(static_cast<std::size_t>(a.B));
        counts.fill(static_cast<int32_t>(C));
        sqdk_attention_backward(pool, AttentionShape{a.B, C, a.S, a.H, a.Hkv, a.Dh}, q, a.q_pos, counts.data(), k, v,
                                o, lse, d_o, dq, dk, dv);
        return;
    }
    for (int64_t b = 0; b < a.B; ++b) {  // every sequence, so the keys of one without queries get dk = dv = 0
        const int64_t r0 = a.q_start[b];
        const int32_t n = static_cast<int32_t>(a.q_start[b + 1] - r0);
        sqdk_attention_backward(pool, AttentionShape{1, n, a.S, a.H, a.Hkv, a.Dh}, q + r0 * qs, a.q_pos + r0, &n,
                                k + b * kv, v + b * kv, o + r0 * qs, lse + r0 * a.H, d_o + r0 * qs, dq + r0 * qs,
                                dk + b * kv, dv + b * kv);
    }
}

}  // namespace hspmn::cpu
