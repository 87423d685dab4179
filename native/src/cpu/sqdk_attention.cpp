// Sparse-query dense-key attention. Forward keeps the per-(query, head) log-sum-exp so backward
// recomputes probabilities exactly without storing them: P = exp(s - lse).
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

void sqdk_attention_forward(ThreadPool& pool, const AttentionShape& a, const float* q, const float* k,
                            const float* v, float* o, float* lse) {
    const int64_t H = a.H, Dh = a.Dh, group = a.H / a.Hkv, kv_stride = a.Hkv * Dh, q_stride = H * Dh;
    const float scale = 1.0f / std::sqrt(static_cast<float>(Dh));
    // query row i belongs to sequence b with q_start[b] <= i < q_start[b+1]
    Buffer<int64_t> q_seq(static_cast<std::size_t>(a.Nq));
    for (int64_t b = 0; b < a.B; ++b)
        for (int64_t i = a.q_start[b]; i < a.q_start[b + 1]; ++i) q_seq[i] = b;
    // Scores of one (query, head) at a time per worker, up to the furthest query position (not S: a
    // decode step over a long cache reads its keys, it need not hold S scores per worker).
    int64_t span = 0;
    for (int64_t i = 0; i < a.Nq; ++i) span = std::max(span, static_cast<int64_t>(a.q_pos[i]) + 1);
    Buffer<float> scratch(static_cast<std::size_t>(pool.size() * span));

    pool.parallel_for(a.Nq * H, 4, [&](int64_t begin, int64_t end, int worker) {
        float* s = scratch.data() + worker * span;
        for (int64_t item = begin; item < end; ++item) {
            const int64_t i = item / H, h = item % H, g = h / group;
            const int64_t b = q_seq[i], p = a.q_pos[i];
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
            float* oi = o + i * q_stride + h * Dh;
            for (int64_t d = 0; d < Dh; ++d) oi[d] = 0.0f;
            const float inv = 1.0f / sum;
            for (int64_t j = 0; j <= p; ++j) axpy_f32(s[j] * inv, vb + j * kv_stride, oi, Dh);
            lse[i * H + h] = m + std::log(sum);
        }
    });
}

void sqdk_attention_backward(ThreadPool& pool, const AttentionShape& a, const float* q, const float* k,
                             const float* v, const float* o, const float* lse, const float* d_o, float* dq,
                             float* dk, float* dv) {
    const int64_t H = a.H, Dh = a.Dh, Hkv = a.Hkv, group = a.H / a.Hkv, kv_stride = Hkv * Dh, q_stride = H * Dh;
    const float scale = 1.0f / std::sqrt(static_cast<float>(Dh));
    Buffer<float> delta(static_cast<std::size_t>(a.Nq * H));
    Buffer<int64_t> q_seq(static_cast<std::size_t>(a.Nq));
    for (int64_t b = 0; b < a.B; ++b)
        for (int64_t i = a.q_start[b]; i < a.q_start[b + 1]; ++i) q_seq[i] = b;

    // Pass 1: dQ_i = scale * sum_j P_ij (dO_i . v_j - delta_i) k_j
    pool.parallel_for(a.Nq * H, 4, [&](int64_t begin, int64_t end, int) {
        for (int64_t item = begin; item < end; ++item) {
            const int64_t i = item / H, h = item % H, g = h / group;
            const int64_t b = q_seq[i], p = a.q_pos[i];
            const float* qi = q + i * q_stride + h * Dh;
            const float* doi = d_o + i * q_stride + h * Dh;
            const float* kb = k + b * a.S * kv_stride + g * Dh;
            const float* vb = v + b * a.S * kv_stride + g * Dh;
            const float L = lse[i * H + h];
            const float dlt = dot_f32(doi, o + i * q_stride + h * Dh, Dh);
            delta[i * H + h] = dlt;
            float* dqi = dq + i * q_stride + h * Dh;
            for (int64_t d = 0; d < Dh; ++d) dqi[d] = 0.0f;
            for (int64_t j = 0; j <= p; ++j) {
                const float P = std::exp(scale * dot_f32(qi, kb + j * kv_stride, Dh) - L);
                const float dS = P * (dot_f32(doi, vb + j * kv_stride, Dh) - dlt);
                axpy_f32(scale * dS, kb + j * kv_stride, dqi, Dh);
            }
        }
    });

    // Pass 2: dV_j = sum_i P_ij dO_i, dK_j = scale * sum_i dS_ij q_i over the queries that see key j.
    const int64_t key_blocks = (a.S + kKeyBlock - 1) / kKeyBlock;
    pool.parallel_for(a.B * Hkv * key_blocks, 1, [&](int64_t begin, int64_t end, int) {
        for (int64_t item = begin; item < end; ++item) {
            const int64_t b = item / (Hkv * key_blocks), g = (item / key_blocks) % Hkv, kb_idx = item % key_blocks;
            const int64_t j0 = kb_idx * kKeyBlock, j1 = std::min(a.S, j0 + kKeyBlock);
            for (int64_t j = j0; j < j1; ++j) {
                float* dkj = dk + (b * a.S + j) * kv_stride + g * Dh;
                float* dvj = dv + (b * a.S + j) * kv_stride + g * Dh;
                for (int64_t d = 0; d < Dh; ++d) dkj[d] = dvj[d] = 0.0f;
            }
            for (int64_t i = a.q_start[b]; i < a.q_start[b + 1]; ++i) {
                const int64_t p = a.q_pos[i];
                if (p < j0) continue;
                const int64_t jend = std::min(j1, p + 1);
                for (int64_t h = g * group; h < (g + 1) * group; ++h) {
                    const float* qi = q + i * q_stride + h * Dh;
                    const float* doi = d_o + i * q_stride + h * Dh;
                    const float L = lse[i * H + h], dlt = delta[i * H + h];
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

}  // namespace hspmn::cpu
