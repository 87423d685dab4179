// CpuBlock::decode: the forward's rows pass (cpu_block_rows.cpp) over new rows of cached sequences,
// with the same ops in the same order on the same float32 values, so a decoded token's output equals
// the full forward's (threshold routing, no noise): MODEL.md "Decoding with a cache". Only the conv's
// history (the conv cache), the keys (the K/V caches) and the rope table rows differ in where they
// come from; the scratch is bounded by the call's rows, not by max_len.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "../core/bf16.h"
#include "cpu_block.h"

namespace hspmn::cpu {

void CpuBlock::decode(const DecodeCall& call) {
    refresh_weights();
    const int64_t n = call.n, D = cfg_.D, F = cfg_.F, H = cfg_.H, Hkv = cfg_.Hkv, Dh = cfg_.Dh, KV = Hkv * Dh;

    Buffer<float> x(static_cast<std::size_t>(n * D));
    bf16_to_f32_array(pool_, call.x, x.data(), n * D);
    Buffer<int32_t> pos(static_cast<std::size_t>(n)), row(static_cast<std::size_t>(n));
    Buffer<int64_t> kv_row(static_cast<std::size_t>(n));
    for (int64_t j = 0; j < call.seqs; ++j)
        for (int64_t r = call.row_start[j]; r < call.row_start[j + 1]; ++r) {
            pos[r] = static_cast<int32_t>(call.pos0[j] + (r - call.row_start[j]));
            kv_row[r] = static_cast<int64_t>(call.slot[j]) * call.max_len + pos[r];
        }
    std::iota(row.data(), row.data() + n, int32_t{0});

    // 1. Router: n = l / t, selected iff n > 0 (route_select's threshold rule).
    Buffer<float> l(static_cast<std::size_t>(n));
    router_logits(pool_, x.data(), w(P_ROUTER_W), w(P_ROUTER_B)[0], n, D, l.data());
    float t;
    bool t_inside;
    router_temperature(&t, &t_inside);
    Buffer<uint8_t> selected(static_cast<std::size_t>(n));
    for (int64_t r = 0; r < n; ++r) selected[r] = l[r] / t > 0.0f;
    if (call.routed)
        for (int64_t r = 0; r < n; ++r) call.routed[r] = selected[r];

    // 2. Queries: the selected rows, grouped by slot as sqdk_attention over the caches wants.
    Buffer<int64_t> order(static_cast<std::size_t>(call.seqs));
    std::iota(order.data(), order.data() + call.seqs, int64_t{0});
    std::sort(order.data(), order.data() + call.seqs, [&](int64_t p1, int64_t p2) { return call.slot[p1] < call.slot[p2]; });
    Buffer<int64_t> rows(static_cast<std::size_t>(n)), q_start(static_cast<std::size_t>(call.max_seqs + 1));
    Buffer<int32_t> q_pos(static_cast<std::size_t>(n)), q_tab(static_cast<std::size_t>(n));
    int64_t Nq = 0, next = 0;
    q_start[0] = 0;
    for (int64_t oi = 0; oi < call.seqs; ++oi) {
        const int64_t j = order[oi];
        for (; next < call.slot[j]; ++next) q_start[next + 1] = Nq;
        for (int64_t r = call.row_start[j]; r < call.row_start[j + 1]; ++r)
            if (selected[r]) {
                rows[Nq] = r;
                q_pos[Nq] = pos[r];
                q_tab[Nq] = static_cast<int32_t>(r);
                ++Nq;
            }
        q_start[++next] = Nq;
    }
    for (; next < call.max_seqs; ++next) q_start[next + 1] = Nq;

    // 3. The rows pass. The rope table has one row per call row (row r at pos[r]).
    Buffer<float> cos_t(static_cast<std::size_t>(n * (Dh / 2))), sin_t(static_cast<std::size_t>(n * (Dh / 2)));
    rope_rows(pos.data(), n, Dh, cfg_.params.rope_base, cos_t.data(), sin_t.data());
    Buffer<float> rstd(static_cast<std::size_t>(n)), h(static_cast<std::size_t>(n * D)), c(static_cast<std::size_t>(n * D));
    Buffer<float> gate(static_cast<std::size_t>(n * F)), up(static_cast<std::size_t>(n * F)), act(static_cast<std::size_t>(n * F));
    Buffer<float> y(static_cast<std::size_t>(n * D)), a(static_cast<std::size_t>(n * D));
    Buffer<float> k(static_cast<std::size_t>(n * KV)), v(static_cast<std::size_t>(n * KV));
    Buffer<float> a_sel(static_cast<std::size_t>(Nq * D)), q(static_cast<std::size_t>(Nq * D)),
        attn(static_cast<std::size_t>(Nq * D)), lse(static_cast<std::size_t>(Nq * H)), o(static_cast<std::size_t>(Nq * D));
    const RowsBuffers buf{rstd.data(), h.data(), c.data(), gate.data(), up.data(), act.data(), y.data(), a.data(),
                          k.data(), v.data(), a_sel.data(), q.data(), attn.data(), lse.data(), o.data()};
    RowsPass p;
    p.n = n;
    p.x = x.data();
    p.out = call.out;
    p.seqs = call.seqs;
    p.row_start = call.row_start;
    p.slot = call.slot;
    p.conv_cache = static_cast<float*>(call.conv_cache);
    p.rope_cos = cos_t.data();
    p.rope_sin = sin_t.data();
    p.key_tab = row.data();
    p.kv_row = kv_row.data();
    p.k_cache = static_cast<float*>(call.k_cache);
    p.v_cache = static_cast<float*>(call.v_cache);
    p.q_rows = rows.data();
    p.q_tab = q_tab.data();
    p.att = PackedQueries{call.max_seqs, call.max_len, H, Hkv, Dh, Nq, q_start.data(), q_pos.data()};
    run_rows(p, buf);
}

}  // namespace hspmn::cpu
