// CpuBlock::decode: the forward of cpu_block.cpp restricted to new rows of cached sequences, with the
// same ops in the same order on the same float32 values, so a decoded token's output equals the full
// forward's (threshold routing, no noise): MODEL.md "Decoding with a cache".
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "../core/bf16.h"
#include "cpu_block.h"
#include "gemm.h"
#include "ops.h"

namespace hspmn::cpu {

void CpuBlock::decode(const DecodeCall& call) {
    refresh_weights();
    const int64_t n = call.n, D = cfg_.D, F = cfg_.F, H = cfg_.H, Hkv = cfg_.Hkv, Dh = cfg_.Dh, KV = Hkv * Dh;
    const int64_t K = cfg_.conv_kernel, P = K - 1;
    float* k_cache = static_cast<float*>(call.k_cache);
    float* v_cache = static_cast<float*>(call.v_cache);
    float* conv_cache = static_cast<float*>(call.conv_cache);

    Buffer<float> x(static_cast<std::size_t>(n * D));
    bf16_to_f32_array(pool_, call.x, x.data(), n * D);
    Buffer<int32_t> pos(static_cast<std::size_t>(n));
    for (int64_t j = 0; j < call.seqs; ++j)
        for (int64_t r = call.row_start[j]; r < call.row_start[j + 1]; ++r)
            pos[r] = static_cast<int32_t>(call.pos0[j] + (r - call.row_start[j]));

    // 1. Router: n = l / t, selected iff n > 0 (route_select's threshold rule).
    Buffer<float> l(static_cast<std::size_t>(n));
    router_logits(pool_, x.data(), w(P_ROUTER_W), w(P_ROUTER_B)[0], n, D, l.data());
    const double t_raw = std::exp(static_cast<double>(w(P_ROUTER_LOG_TEMP)[0]));
    const float t = static_cast<float>(std::fmin(std::fmax(t_raw, 0.1), 2.0));
    Buffer<uint8_t> selected(static_cast<std::size_t>(n));
    for (int64_t r = 0; r < n; ++r) selected[r] = l[r] / t > 0.0f;
    if (call.routed)
        for (int64_t r = 0; r < n; ++r) call.routed[r] = selected[r];

    // 2. Reflexive stream; the conv of each sequence runs over [its P cached h rows, its new rows].
    Buffer<float> rstd(static_cast<std::size_t>(n)), h(static_cast<std::size_t>(n * D)), c(static_cast<std::size_t>(n * D));
    rms_norm_forward(pool_, x.data(), w(P_REFLEX_NORM), cfg_.params.norm_eps, n, D, h.data(), rstd.data());
    for (int64_t j = 0; j < call.seqs; ++j) {
        const int64_t r0 = call.row_start[j], T = call.row_start[j + 1] - r0;
        float* cache = conv_cache + static_cast<int64_t>(call.slot[j]) * P * D;
        Buffer<float> staged(static_cast<std::size_t>((P + T) * D)), out(static_cast<std::size_t>((P + T) * D));
        std::memcpy(staged.data(), cache, static_cast<std::size_t>(P * D) * sizeof(float));
        std::memcpy(staged.data() + P * D, h.data() + r0 * D, static_cast<std::size_t>(T * D) * sizeof(float));
        causal_conv_forward(pool_, staged.data(), w(P_REFLEX_CONV), 1, P + T, D, K, out.data());
        std::memcpy(c.data() + r0 * D, out.data() + P * D, static_cast<std::size_t>(T * D) * sizeof(float));
        std::memcpy(cache, staged.data() + T * D, static_cast<std::size_t>(P * D) * sizeof(float));
    }
    Buffer<float> gate(static_cast<std::size_t>(n * F)), up(static_cast<std::size_t>(n * F)), act(static_cast<std::size_t>(n * F));
    linear_forward(pool_, c.data(), w(P_REFLEX_GATE), gate.data(), n, D, F);
    linear_forward(pool_, c.data(), w(P_REFLEX_UP), up.data(), n, D, F);
    swiglu_forward(pool_, gate.data(), up.data(), n * F, act.data());
    Buffer<float> y(static_cast<std::size_t>(n * D));
    std::memcpy(y.data(), x.data(), static_cast<std::size_t>(n * D) * sizeof(float));
    linear_forward(pool_, act.data(), w(P_REFLEX_DOWN), y.data(), n, F, D, /*accumulate=*/true);

    // 3. K, V of every new row into the cache (before attention: a prefill attends its own rows).
    Buffer<float> a(static_cast<std::size_t>(n * D)), k(static_cast<std::size_t>(n * KV)), v(static_cast<std::size_t>(n * KV));
    rms_norm_forward(pool_, x.data(), w(P_ATTN_NORM), cfg_.params.norm_eps, n, D, a.data(), rstd.data());
    linear_forward(pool_, a.data(), w(P_ATTN_K), k.data(), n, D, KV);
    linear_forward(pool_, a.data(), w(P_ATTN_V), v.data(), n, D, KV);
    if (decode_rope_S_ < call.max_len) {
        decode_cos_.resize(static_cast<std::size_t>(call.max_len * (Dh / 2)));
        decode_sin_.resize(static_cast<std::size_t>(call.max_len * (Dh / 2)));
        rope_table(call.max_len, Dh, cfg_.params.rope_base, decode_cos_.data(), decode_sin_.data());
        decode_rope_S_ = call.max_len;
    }
    rope_forward(pool_, k.data(), n, Hkv, Dh, pos.data(), decode_cos_.data(), decode_sin_.data());
    for (int64_t j = 0; j < call.seqs; ++j)
        for (int64_t r = call.row_start[j]; r < call.row_start[j + 1]; ++r) {
            const int64_t at = (static_cast<int64_t>(call.slot[j]) * call.max_len + pos[r]) * KV;
            std::memcpy(k_cache + at, k.data() + r * KV, static_cast<std::size_t>(KV) * sizeof(float));
            std::memcpy(v_cache + at, v.data() + r * KV, static_cast<std::size_t>(KV) * sizeof(float));
        }

    // 4. Q and attention for the selected rows only, grouped by slot as sqdk_attention wants.
    Buffer<int64_t> order(static_cast<std::size_t>(call.seqs));
    std::iota(order.data(), order.data() + call.seqs, int64_t{0});
    std::sort(order.data(), order.data() + call.seqs, [&](int64_t p1, int64_t p2) { return call.slot[p1] < call.slot[p2]; });
    Buffer<int64_t> rows(static_cast<std::size_t>(n)), q_start(static_cast<std::size_t>(call.max_seqs + 1));
    Buffer<int32_t> q_pos(static_cast<std::size_t>(n));
    int64_t Nq = 0, next = 0;
    q_start[0] = 0;
    for (int64_t oi = 0; oi < call.seqs; ++oi) {
        const int64_t j = order[oi];
        for (; next < call.slot[j]; ++next) q_start[next + 1] = Nq;
        for (int64_t r = call.row_start[j]; r < call.row_start[j + 1]; ++r)
            if (selected[r]) {
                rows[Nq] = r;
                q_pos[Nq] = pos[r];
                ++Nq;
            }
        q_start[++next] = Nq;
    }
    for (; next < call.max_seqs; ++next) q_start[next + 1] = Nq;
    if (Nq > 0) {
        Buffer<float> a_sel(static_cast<std::size_t>(Nq * D)), q(static_cast<std::size_t>(Nq * D)),
            attn(static_cast<std::size_t>(Nq * D)), lse(static_cast<std::size_t>(Nq * H)), o(static_cast<std::size_t>(Nq * D));
        gather_rows(pool_, a.data(), D, rows.data(), Nq, a_sel.data());
        linear_forward(pool_, a_sel.data(), w(P_ATTN_Q), q.data(), Nq, D, D);
        rope_forward(pool_, q.data(), Nq, H, Dh, q_pos.data(), decode_cos_.data(), decode_sin_.data());
        AttentionShape shape{call.max_seqs, call.max_len, H, Hkv, Dh, Nq, q_start.data(), q_pos.data()};
        sqdk_attention_forward(pool_, shape, q.data(), k_cache, v_cache, attn.data(), lse.data());
        linear_forward(pool_, attn.data(), w(P_ATTN_O), o.data(), Nq, D, D);
        gate_scatter_forward(pool_, o.data(), D, rows.data(), Nq, y.data());
    }
    f32_to_bf16_array(pool_, y.data(), call.out, n * D);
}

}  // namespace hspmn::cpu
