// CpuBlock::forward_chunked: an inference forward of more rows than one pass (core/forward_chunk.h)
// in bounded memory, equal bit for bit to the one-pass forward (run_rows' rows do not depend on their
// neighbours, and the same float32 ops run on the same values).
//
//   1. The router over every row, a chunk at a time (x widened per chunk): l, n: [B*S] f32.
//   2. The selection over whole sequences, as the one-pass forward: the pins, or route_select (top-k
//      needs every score of a sequence before any chunk runs).
//   3. The rows, chunk by chunk. When a sequence fits one pass (S <= whole_rows), a chunk is
//      whole_rows / S whole sequences and runs exactly as the one-pass forward of that sub-batch. Else
//      each sequence runs in chunks of split_rows consecutive rows, as decode runs a prefill: the
//      conv continues from the last K-1
//      inputs of the previous chunk, K and V of the sequence's rows so far stay in [S, Hkv*Dh] caches
//      that the chunk's queries attend, and its queries are its part of the sequence's selection.
//
// Memory: l, n, the selection, K/V of one sequence ([S, 2 Hkv*Dh] f32) and one chunk's scratch
// (chunk_row_bytes per row), besides the caller's x and out.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "../core/objects.h"
#include "cpu_block.h"

namespace hspmn::cpu {

namespace {

float* sized(Buffer<float>& b, int64_t n) {
    if (static_cast<int64_t>(b.size()) < n) b.resize(static_cast<std::size_t>(n));
    return b.data();
}

}  // namespace

void CpuBlock::forward_chunked(const ForwardCall& call, const ForwardChunks& chunks) {
    const int64_t B = call.x->shape[0], S = call.x->shape[1], N = B * S;
    const int64_t D = cfg_.D, F = cfg_.F, H = cfg_.H, Hkv = cfg_.Hkv, Dh = cfg_.Dh, KV = Hkv * Dh;
    const int64_t P = cfg_.conv_kernel - 1;
    const uint16_t* x_bf = static_cast<const uint16_t*>(call.x->data);
    uint16_t* out_bf = static_cast<uint16_t*>(call.out->data);

    const bool whole = S <= chunks.whole_rows;
    const int64_t g = whole ? std::min(chunks.whole_rows / S, B) : 1;  // sequences per chunk
    const int64_t R = whole ? g * S : chunks.split_rows;                // rows per chunk

    // 1. Router (inference: n = l / t, no noise).
    Buffer<float> l(static_cast<std::size_t>(N)), nsc(static_cast<std::size_t>(N));
    Buffer<float> x(static_cast<std::size_t>(R * D));
    for (int64_t r0 = 0; r0 < N; r0 += R) {
        const int64_t rows = std::min(R, N - r0);
        bf16_to_f32_array(pool_, x_bf + r0 * D, x.data(), rows * D);
        router_logits(pool_, x.data(), w(P_ROUTER_W), w(P_ROUTER_B)[0], rows, D, l.data() + r0);
    }
    float t;
    bool t_inside;
    router_temperature(&t, &t_inside);
    for (int64_t i = 0; i < N; ++i) nsc[i] = l[i] / t;

    // 2. Selection over whole sequences.
    Buffer<int32_t> own_idx, own_cnt;
    const int32_t* idx;
    const int32_t* cnt;
    int64_t C;
    if (call.indices) {
        idx = static_cast<const int32_t*>(call.indices->data);
        cnt = static_cast<const int32_t*>(call.counts->data);
        C = call.indices->shape[1];
    } else {
        C = cfg_.params.routing == HSPMN_ROUTING_TOPK ? topk_count(S, cfg_.params.sparsity_k) : S;
        own_idx.resize(static_cast<std::size_t>(B * C));
        own_cnt.resize(static_cast<std::size_t>(B));
        route_select(nsc.data(), B, S, cfg_.params.routing, C, C, own_idx.data(), own_cnt.data());
        idx = own_idx.data();
        cnt = own_cnt.data();
    }
    if (call.routed_fraction) {
        int64_t total = 0;
        for (int64_t b = 0; b < B; ++b) total += cnt[b];
        *call.routed_fraction = static_cast<float>(static_cast<double>(total) / static_cast<double>(N));
    }
    if (call.noise_free_fraction) *call.noise_free_fraction = noise_free_fraction(l.data(), N);

    // 3. The rows.
    Buffer<float> y;
    if (whole) {
        // Sub-batches of whole sequences: the one-pass forward of each (the same table, lists, conv).
        Buffer<float> cos_t(static_cast<std::size_t>(S * (Dh / 2))), sin_t(static_cast<std::size_t>(S * (Dh / 2)));
        rope_table(S, Dh, cfg_.params.rope_base, cos_t.data(), sin_t.data());
        Activations A;
        for (int64_t b0 = 0; b0 < B; b0 += g) {
            const int64_t nb = std::min(g, B - b0), rows = nb * S;
            A.B = nb;
            A.S = S;
            A.N = rows;
            bf16_to_f32_array(pool_, x_bf + b0 * S * D, x.data(), rows * D);
            RowsBuffers buf = whole_sequences(A, idx + b0 * C, cnt + b0, C);
            buf.y = sized(y, rows * D);
            RowsPass p;
            p.n = rows;
            p.x = x.data();
            p.out = out_bf + b0 * S * D;
            p.conv_B = nb;
            p.conv_S = S;
            p.rope_cos = cos_t.data();
            p.rope_sin = sin_t.data();
            p.key_tab = A.k_pos.data();
            p.q_rows = A.rows.data();
            p.q_tab = A.q_pos.data();
            p.att = PackedQueries{nb, S, H, Hkv, Dh, A.Nq, A.q_start.data(), A.q_pos.data()};
            run_rows(p, buf);
        }
    } else {
        // Each sequence in chunks of R rows, as a prefill of one cache slot of S rows.
        Buffer<float> k_cache(static_cast<std::size_t>(S * KV)), v_cache(static_cast<std::size_t>(S * KV));
        Buffer<float> conv_cache(static_cast<std::size_t>(std::max<int64_t>(P, 1) * D));
        Buffer<float> rstd(static_cast<std::size_t>(R));
        Buffer<float> h(static_cast<std::size_t>(R * D)), c(static_cast<std::size_t>(R * D)), a(static_cast<std::size_t>(R * D));
        Buffer<float> gate(static_cast<std::size_t>(R * F)), up(static_cast<std::size_t>(R * F)), act(static_cast<std::size_t>(R * F));
        Buffer<float> k(static_cast<std::size_t>(R * KV)), v(static_cast<std::size_t>(R * KV));
        Buffer<float> a_sel(static_cast<std::size_t>(R * D)), q(static_cast<std::size_t>(R * D)),
            attn(static_cast<std::size_t>(R * D)), o(static_cast<std::size_t>(R * D)), lse(static_cast<std::size_t>(R * H));
        Buffer<float> cos_t(static_cast<std::size_t>(R * (Dh / 2))), sin_t(static_cast<std::size_t>(R * (Dh / 2)));
        Buffer<int32_t> pos(static_cast<std::size_t>(R)), row(static_cast<std::size_t>(R));
        Buffer<int32_t> q_pos(static_cast<std::size_t>(R)), q_tab(static_cast<std::size_t>(R));
        Buffer<int64_t> kv_row(static_cast<std::size_t>(R)), q_rows(static_cast<std::size_t>(R));
        std::iota(row.data(), row.data() + R, int32_t{0});
        const RowsBuffers buf{rstd.data(), h.data(), c.data(), gate.data(), up.data(), act.data(), sized(y, R * D),
                              a.data(), k.data(), v.data(), a_sel.data(), q.data(), attn.data(), lse.data(), o.data()};
        const int32_t slot = 0;
        for (int64_t b = 0; b < B; ++b) {
            conv_cache.fill(0.0f);  // the conv's zero padding before position 0
            const int32_t* sel = idx + b * C;
            int64_t j = 0;  // the next of the sequence's selected positions
            for (int64_t s0 = 0; s0 < S; s0 += R) {
                const int64_t T = std::min(R, S - s0);
                bf16_to_f32_array(pool_, x_bf + (b * S + s0) * D, x.data(), T * D);
                for (int64_t r = 0; r < T; ++r) {
                    pos[r] = static_cast<int32_t>(s0 + r);
                    kv_row[r] = s0 + r;
                }
                rope_rows(pos.data(), T, Dh, cfg_.params.rope_base, cos_t.data(), sin_t.data());
                int64_t Nq = 0;
                for (; j < cnt[b] && sel[j] < s0 + T; ++j, ++Nq) {
                    q_rows[Nq] = sel[j] - s0;
                    q_tab[Nq] = static_cast<int32_t>(sel[j] - s0);
                    q_pos[Nq] = sel[j];
                }
                const int64_t row_start[2] = {0, T};
                const int64_t q_start[2] = {0, Nq};
                RowsPass p;
                p.n = T;
                p.x = x.data();
                p.out = out_bf + (b * S + s0) * D;
                p.seqs = 1;
                p.row_start = row_start;
                p.slot = &slot;
                p.conv_cache = conv_cache.data();
                p.rope_cos = cos_t.data();
                p.rope_sin = sin_t.data();
                p.key_tab = row.data();
                p.kv_row = kv_row.data();
                p.k_cache = k_cache.data();
                p.v_cache = v_cache.data();
                p.q_rows = q_rows.data();
                p.q_tab = q_tab.data();
                p.att = PackedQueries{1, S, H, Hkv, Dh, Nq, q_start, q_pos.data()};
                run_rows(p, buf);
            }
        }
    }

    if (call.aux)
        static_cast<float*>(call.aux->data)[0] = aux_loss_forward(l.data(), N, call.aux_target,
                                                                  cfg_.params.router_sparsity_coef,
                                                                  cfg_.params.router_entropy_coef);
}

}  // namespace hspmn::cpu
