// CpuBlock::run_rows: the sequence of ops of one block over a set of rows (cpu_block.h RowsPass),
// shared by the forward (cpu_block.cpp), the chunked inference forward (cpu_block_chunked.cpp) and
// cached decoding (cpu_block_decode.cpp). Every op is row-independent except the conv (history from
// RowsPass) and the attention (keys from RowsPass), and the CPU GEMM sums each output over k in one
// fixed order whatever M is, so a row's output does not depend on which other rows share its pass.
#include <cstring>

#include "../core/bf16.h"
#include "cpu_block.h"
#include "gemm.h"

namespace hspmn::cpu {

void CpuBlock::run_rows(const RowsPass& p, const RowsBuffers& b) {
    const int64_t n = p.n, D = cfg_.D, F = cfg_.F, H = cfg_.H, Hkv = cfg_.Hkv, Dh = cfg_.Dh, KV = Hkv * Dh;
    const int64_t K = cfg_.conv_kernel, P = K - 1;
    const float eps = cfg_.params.norm_eps;

    // Both norms of x: h for the reflexive stream, a for the contextual one.
    rms_norm_pair_forward(pool_, p.x, w(P_REFLEX_NORM), w(P_ATTN_NORM), eps, n, D, b.h, b.a, b.rstd);

    // 1. Reflexive stream: h = rms_norm(x), c = causal_conv(h), y = x + down(silu(gate c) * up c).
    if (p.seqs == 0) {
        causal_conv_forward(pool_, b.h, w(P_REFLEX_CONV), p.conv_B, p.conv_S, D, K, b.c);
    } else {
        // Each sequence's conv over [its P cached inputs, its rows]; then the cache keeps the last P.
        for (int64_t j = 0; j < p.seqs; ++j) {
            const int64_t r0 = p.row_start[j], T = p.row_start[j + 1] - r0;
            float* cache = p.conv_cache + static_cast<int64_t>(p.slot[j]) * P * D;
            Buffer<float> staged(static_cast<std::size_t>((P + T) * D)), out(static_cast<std::size_t>((P + T) * D));
            std::memcpy(staged.data(), cache, static_cast<std::size_t>(P * D) * sizeof(float));
            std::memcpy(staged.data() + P * D, b.h + r0 * D, static_cast<std::size_t>(T * D) * sizeof(float));
            causal_conv_forward(pool_, staged.data(), w(P_REFLEX_CONV), 1, P + T, D, K, out.data());
            std::memcpy(b.c + r0 * D, out.data() + P * D, static_cast<std::size_t>(T * D) * sizeof(float));
            std::memcpy(cache, staged.data() + T * D, static_cast<std::size_t>(P * D) * sizeof(float));
        }
    }
    linear_forward(pool_, b.c, w(P_REFLEX_GATE), b.gate, n, D, F);
    linear_forward(pool_, b.c, w(P_REFLEX_UP), b.up, n, D, F);
    swiglu_forward(pool_, b.gate, b.up, n * F, b.act);
    if (p.dropout) {
        // m on its own, dropped, then y = x + M m (the GEMM cannot accumulate onto x under a mask).
        linear_forward(pool_, b.act, w(P_REFLEX_DOWN), b.y, n, F, D);
        dropout_rows(pool_, *p.dropout, kDropoutTagReflex, p.conv_S, nullptr, n, D, b.y);
        pool_.parallel_for(n, 64, [&](int64_t r0, int64_t r1, int) {
            for (int64_t r = r0; r < r1; ++r) axpy_f32(1.0f, p.x + r * D, b.y + r * D, D);
        });
    } else {
        std::memcpy(b.y, p.x, static_cast<std::size_t>(n * D) * sizeof(float));
        linear_forward(pool_, b.act, w(P_REFLEX_DOWN), b.y, n, F, D, /*accumulate=*/true);
    }

    // 2. Contextual stream: K, V of every row (into the cache before any attention, so rows attend
    // the earlier rows of their own pass), Q and attention for the query rows only.
    linear_forward(pool_, b.a, w(P_ATTN_K), b.k, n, D, KV);
    linear_forward(pool_, b.a, w(P_ATTN_V), b.v, n, D, KV);
    rope_forward(pool_, b.k, n, Hkv, Dh, p.key_tab, p.rope_cos, p.rope_sin);
    const float* keys = b.k;
    const float* values = b.v;
    if (p.k_cache) {
        for (int64_t r = 0; r < n; ++r) {
            std::memcpy(p.k_cache + p.kv_row[r] * KV, b.k + r * KV, static_cast<std::size_t>(KV) * sizeof(float));
            std::memcpy(p.v_cache + p.kv_row[r] * KV, b.v + r * KV, static_cast<std::size_t>(KV) * sizeof(float));
        }
        keys = p.k_cache;
        values = p.v_cache;
    }
    const int64_t Nq = p.att.Nq;
    if (Nq > 0) {
        gather_rows(pool_, b.a, D, p.q_rows, Nq, b.a_sel);
        linear_forward(pool_, b.a_sel, w(P_ATTN_Q), b.q, Nq, D, D);
        rope_forward(pool_, b.q, Nq, H, Dh, p.q_tab, p.rope_cos, p.rope_sin);
        sqdk_attention_forward_packed(pool_, p.att, b.q, keys, values, b.attn, b.lse);
        linear_forward(pool_, b.attn, w(P_ATTN_O), b.o, Nq, D, D);
        // o is kept dropped: backward's dy = d_out . (M o) reads it as the forward added it.
        if (p.dropout) dropout_rows(pool_, *p.dropout, kDropoutTagAttn, p.conv_S, p.q_rows, Nq, D, b.o);
        // 3. out = y + gate * o on the query rows (the gate is 1 in value).
        gate_scatter_forward(pool_, b.o, D, p.q_rows, Nq, b.y);
    }
    f32_to_bf16_array(pool_, b.y, p.out, n * D);
}

}  // namespace hspmn::cpu
