#include "cpu_block.h"

#include <cmath>
#include <cstring>

#include "../core/bf16.h"
#include "../core/forward_chunk.h"
#include "../core/objects.h"
#include "gemm.h"
#include "ops.h"
#include "param_init.h"

namespace hspmn::cpu {

namespace {

template <class T>
const T* host_data(const hspmn_tensor* t) {
    return static_cast<const T*>(t->data);
}
template <class T>
T* host_data(hspmn_tensor* t) {
    return static_cast<T*>(t->data);
}

float sigmoidf(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// sigmoid'(x) = e / (1 + e)^2 with e = exp(-|x|): s (1 - s) in float loses every digit of 1 - s once
// s rounds near 1 (x = 10 at t = 0.1 already costs 1e-3 relative).
double sigmoid_grad(double x) {
    const double e = std::exp(-std::fabs(x));
    return e / ((1.0 + e) * (1.0 + e));
}

}  // namespace

CpuBlock::CpuBlock(ThreadPool& pool, const BlockConfig& cfg, uint64_t seed)
    : pool_(pool), cfg_(cfg), info_(param_table(cfg)) {
    for (int i = 0; i < P_COUNT; ++i) {
        const std::size_t n = static_cast<std::size_t>(info_[i].numel);
        param_[i].resize(n);
        weight_[i].resize(n);
        grad_[i].resize(n);
        grad_[i].fill(0.0f);
        init_param(cfg_, i, seed, weight_[i].data());
        for (std::size_t j = 0; j < n; ++j) param_[i][j] = f32_to_bf16(weight_[i][j]);
        dirty_[i] = true;
    }
}

void CpuBlock::read_param(int index, uint16_t* dst) const {
    std::memcpy(dst, param_[index].data(), param_[index].size() * sizeof(uint16_t));
}

void CpuBlock::write_param(int index, const uint16_t* src) {
    std::memcpy(param_[index].data(), src, param_[index].size() * sizeof(uint16_t));
    dirty_[index] = true;
}

void CpuBlock::read_grad(int index, float* dst) const {
    std::memcpy(dst, grad_[index].data(), grad_[index].size() * sizeof(float));
}

void CpuBlock::zero_grad() {
    for (auto& g : grad_) g.fill(0.0f);
}

void CpuBlock::drop_cache() noexcept {
    act_ = Activations();
    has_act_ = false;
}

void CpuBlock::refresh_weights() {
    for (int i = 0; i < P_COUNT; ++i) {
        if (!dirty_[i]) continue;
        bf16_to_f32_array(pool_, param_[i].data(), weight_[i].data(), info_[i].numel);
        dirty_[i] = false;
    }
}

void CpuBlock::router_temperature(float* t, bool* t_inside) const {
    const double t_raw = std::exp(static_cast<double>(w(P_ROUTER_LOG_TEMP)[0]));
    *t_inside = t_raw > 0.1 && t_raw < 2.0;
    *t = static_cast<float>(std::fmin(std::fmax(t_raw, 0.1), 2.0));
}

CpuBlock::Router CpuBlock::run_router(const float* x, int64_t B, int64_t S, int32_t training, int32_t noise,
                                      uint64_t seed, int64_t step, int32_t layer, int64_t row_offset,
                                      const hspmn_tensor* noise_tensor) {
    const int64_t N = B * S;
    Router r;
    r.l.resize(static_cast<std::size_t>(N));
    r.n.resize(static_cast<std::size_t>(N));
    router_logits(pool_, x, w(P_ROUTER_W), w(P_ROUTER_B)[0], N, cfg_.D, r.l.data());
    router_temperature(&r.t, &r.t_inside);
    if (training && noise) {
        if (noise_tensor)
            std::memcpy(r.n.data(), host_data<float>(noise_tensor), static_cast<std::size_t>(N) * sizeof(float));
        else
            gumbel_noise(pool_, seed, step, layer, B, S, r.n.data(), row_offset);
        for (int64_t i = 0; i < N; ++i) r.n[i] = (r.l[i] + r.n[i]) / r.t;
    } else {
        for (int64_t i = 0; i < N; ++i) r.n[i] = r.l[i] / r.t;
    }
    return r;
}

void CpuBlock::route(const RouteCall& call) {
    refresh_weights();
    const int64_t B = call.x->shape[0], S = call.x->shape[1], N = B * S, D = cfg_.D;
    Buffer<float> x(static_cast<std::size_t>(N * D));
    bf16_to_f32_array(pool_, host_data<uint16_t>(call.x), x.data(), N * D);
    Router r = run_router(x.data(), B, S, call.training, call.noise, call.seed, call.step, call.layer,
                          call.row_offset, call.noise_tensor);
    if (call.logits) std::memcpy(host_data<float>(call.logits), r.l.data(), static_cast<std::size_t>(N) * sizeof(float));
    if (call.probs)
        for (int64_t i = 0; i < N; ++i) host_data<float>(call.probs)[i] = sigmoidf(r.l[i]);
    if (call.indices) {
        const int64_t k = cfg_.params.routing == HSPMN_ROUTING_TOPK ? topk_count(S, cfg_.params.sparsity_k) : S;
        route_select(r.n.data(), B, S, cfg_.params.routing, k, call.indices->shape[1], host_data<int32_t>(call.indices),
                     host_data<int32_t>(call.counts));
    }
    if (call.aux)
        host_data<float>(call.aux)[0] = aux_loss_forward(r.l.data(), N, call.aux_target,
                                                         cfg_.params.router_sparsity_coef,
                                                         cfg_.params.router_entropy_coef);
}

int64_t CpuBlock::chunk_row_bytes() const {
    const int64_t D = cfg_.D, F = cfg_.F, KV = cfg_.Hkv * cfg_.Dh;
    // f32 per row: x, h, c, a, y, the conv's staging (2 D), gate, up, act, k, v, the query side
    // (a_sel, q, attn, o; every row may be one), lse, its two rope rows, rstd; then 2 i64 + 2 i32.
    return 4 * (8 * D + 3 * F + 2 * KV + 4 * D + cfg_.H + cfg_.Dh + 1) + 24;
}

void CpuBlock::forward(const ForwardCall& call) {
    refresh_weights();
    const int64_t B = call.x->shape[0], S = call.x->shape[1], N = B * S;
    if (!call.training) {
        // The one-pass forward allocates what a chunk does per row (with x for every row), so one
        // estimate serves both sizes.
        const ForwardChunks ch = forward_chunks(chunk_row_bytes(), chunk_row_bytes());
        if (N > ch.whole_rows) {
            forward_chunked(call, ch);
            return;
        }
    }
    const int64_t D = cfg_.D, Dh = cfg_.Dh;
    Activations A;
    A.B = B;
    A.S = S;
    A.N = N;
    A.aux_target = call.aux_target;
    if (call.training && call.dropout > 0.0f) A.dropout = DropoutKey{call.dropout, call.seed, call.step, call.layer, call.row_offset};
    A.x.resize(static_cast<std::size_t>(N * D));
    bf16_to_f32_array(pool_, host_data<uint16_t>(call.x), A.x.data(), N * D);

    // 1. Router and selection.
    Router r = run_router(A.x.data(), B, S, call.training, call.noise, call.seed, call.step, call.layer,
                          call.row_offset, call.noise_tensor);
    A.t = r.t;
    A.t_inside = r.t_inside;
    A.l = std::move(r.l);
    A.n = std::move(r.n);
    Buffer<int32_t> own_idx, own_cnt;
    const int32_t* idx;
    const int32_t* cnt;
    int64_t C;
    if (call.indices) {
        idx = host_data<int32_t>(call.indices);
        cnt = host_data<int32_t>(call.counts);
        C = call.indices->shape[1];
    } else {
        const bool topk = cfg_.params.routing == HSPMN_ROUTING_TOPK;
        const int64_t k = topk ? topk_count(S, cfg_.params.sparsity_k) : S;
        C = k;
        own_idx.resize(static_cast<std::size_t>(B * C));
        own_cnt.resize(static_cast<std::size_t>(B));
        route_select(A.n.data(), B, S, cfg_.params.routing, k, C, own_idx.data(), own_cnt.data());
        idx = own_idx.data();
        cnt = own_cnt.data();
    }
    if (call.routed_fraction) {
        int64_t total = 0;
        for (int64_t b = 0; b < B; ++b) total += cnt[b];
        *call.routed_fraction = static_cast<float>(static_cast<double>(total) / static_cast<double>(N));
    }
    if (call.noise_free_fraction) *call.noise_free_fraction = noise_free_fraction(A.l.data(), N);

    // 2. The rows: B whole sequences, keys in place, queries the selected rows.
    RowsBuffers buf = whole_sequences(A, idx, cnt, C);
    Buffer<float> y(static_cast<std::size_t>(N * D));  // r = x + m, then out
    buf.y = y.data();
    RowsPass p;
    p.n = N;
    p.x = A.x.data();
    p.out = host_data<uint16_t>(call.out);
    p.conv_B = B;
    p.conv_S = S;
    A.rope_cos.resize(static_cast<std::size_t>(S * (Dh / 2)));
    A.rope_sin.resize(static_cast<std::size_t>(S * (Dh / 2)));
    rope_table(S, Dh, cfg_.params.rope_base, A.rope_cos.data(), A.rope_sin.data());
    p.rope_cos = A.rope_cos.data();
    p.rope_sin = A.rope_sin.data();
    p.key_tab = A.k_pos.data();
    p.q_rows = A.rows.data();
    p.q_tab = A.q_pos.data();
    p.att = PackedQueries{B, S, cfg_.H, cfg_.Hkv, Dh, A.Nq, A.q_start.data(), A.q_pos.data()};
    if (A.dropout.p > 0.0f) p.dropout = &A.dropout;
    run_rows(p, buf);

    if (call.aux)
        host_data<float>(call.aux)[0] = aux_loss_forward(A.l.data(), N, call.aux_target,
                                                         cfg_.params.router_sparsity_coef,
                                                         cfg_.params.router_entropy_coef);
    if (call.training) {
        act_ = std::move(A);
        has_act_ = true;
    }
}

RowsBuffers CpuBlock::whole_sequences(Activations& A, const int32_t* idx, const int32_t* cnt, int64_t C) {
    const int64_t B = A.B, S = A.S, N = A.N;
    const int64_t D = cfg_.D, F = cfg_.F, H = cfg_.H, KV = cfg_.Hkv * cfg_.Dh;
    A.q_start.resize(static_cast<std::size_t>(B + 1));
    A.q_start[0] = 0;
    for (int64_t b = 0; b < B; ++b) A.q_start[b + 1] = A.q_start[b] + cnt[b];
    const int64_t Nq = A.Nq = A.q_start[B];
    A.rows.resize(static_cast<std::size_t>(Nq));
    A.q_pos.resize(static_cast<std::size_t>(Nq));
    for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < cnt[b]; ++j) {
            A.rows[A.q_start[b] + j] = b * S + idx[b * C + j];
            A.q_pos[A.q_start[b] + j] = idx[b * C + j];
        }
    A.k_pos.resize(static_cast<std::size_t>(N));
    for (int64_t i = 0; i < N; ++i) A.k_pos[i] = static_cast<int32_t>(i % S);
    auto size = [](Buffer<float>& b, int64_t n) {
        b.resize(static_cast<std::size_t>(n));
        return b.data();
    };
    RowsBuffers r{};
    r.rstd = size(A.rstd, N);
    r.h = size(A.h, N * D);
    r.c = size(A.c, N * D);
    r.gate = size(A.gate, N * F);
    r.up = size(A.up, N * F);
    r.act = size(A.act, N * F);
    r.a = size(A.a, N * D);
    r.k = size(A.k, N * KV);
    r.v = size(A.v, N * KV);
    if (Nq > 0) {
        r.a_sel = size(A.a_sel, Nq * D);
        r.q = size(A.q, Nq * D);
        r.attn = size(A.attn, Nq * D);
        r.lse = size(A.lse, Nq * H);
        r.o = size(A.o, Nq * D);
    }
    return r;
}

void CpuBlock::backward(const BackwardCall& call) {
    Activations& A = act_;
    const int64_t B = A.B, S = A.S, N = A.N, Nq = A.Nq;
    const int64_t D = cfg_.D, F = cfg_.F, H = cfg_.H, Hkv = cfg_.Hkv, Dh = cfg_.Dh, KV = Hkv * Dh;
    if (!call.accumulate) zero_grad();
    const float d_aux = call.d_aux ? host_data<float>(call.d_aux)[0] : 0.0f;
    const bool dropping = A.dropout.p > 0.0f;

    Buffer<float> d_out(static_cast<std::size_t>(N * D));
    bf16_to_f32_array(pool_, host_data<uint16_t>(call.d_out), d_out.data(), N * D);
    Buffer<float> dx(static_cast<std::size_t>(N * D));  // the residual path: out = x + m + y o
    std::memcpy(dx.data(), d_out.data(), static_cast<std::size_t>(N * D) * sizeof(float));

    // Contextual stream, back to the attention input a.
    Buffer<float> dy(static_cast<std::size_t>(Nq));
    Buffer<float> d_a(static_cast<std::size_t>(N * D));
    {
        Buffer<float> dk(static_cast<std::size_t>(N * KV)), dv(static_cast<std::size_t>(N * KV));
        Buffer<float> d_asel(static_cast<std::size_t>(Nq * D));
        if (Nq > 0) {
            Buffer<float> d_o(static_cast<std::size_t>(Nq * D)), d_attn(static_cast<std::size_t>(Nq * D));
            Buffer<float> dq(static_cast<std::size_t>(Nq * D));
            gate_scatter_backward(pool_, A.o.data(), d_out.data(), D, A.rows.data(), Nq, d_o.data(), dy.data());
            // d o = M_o d_out: the mask is redrawn from its key (as cheap as reading a stored one).
            if (dropping) dropout_rows(pool_, A.dropout, kDropoutTagAttn, S, A.rows.data(), Nq, D, d_o.data());
            linear_backward_weight(pool_, d_o.data(), A.attn.data(), grad_[P_ATTN_O].data(), Nq, D, D, true);
            linear_backward_input(pool_, d_o.data(), w(P_ATTN_O), d_attn.data(), Nq, D, D);
            PackedQueries shape{B, S, H, Hkv, Dh, Nq, A.q_start.data(), A.q_pos.data()};
            sqdk_attention_backward_packed(pool_, shape, A.q.data(), A.k.data(), A.v.data(), A.attn.data(),
                                           A.lse.data(), d_attn.data(), dq.data(), dk.data(), dv.data());
            rope_backward(pool_, dq.data(), Nq, H, Dh, A.q_pos.data(), A.rope_cos.data(), A.rope_sin.data());
            linear_backward_weight(pool_, dq.data(), A.a_sel.data(), grad_[P_ATTN_Q].data(), Nq, D, D, true);
            linear_backward_input(pool_, dq.data(), w(P_ATTN_Q), d_asel.data(), Nq, D, D);
        } else {
            dk.fill(0.0f);
            dv.fill(0.0f);
        }
        rope_backward(pool_, dk.data(), N, Hkv, Dh, A.k_pos.data(), A.rope_cos.data(), A.rope_sin.data());
        linear_backward_weight(pool_, dk.data(), A.a.data(), grad_[P_ATTN_K].data(), N, D, KV, true);
        linear_backward_weight(pool_, dv.data(), A.a.data(), grad_[P_ATTN_V].data(), N, D, KV, true);
        linear_backward_input(pool_, dk.data(), w(P_ATTN_K), d_a.data(), N, D, KV);
        linear_backward_input(pool_, dv.data(), w(P_ATTN_V), d_a.data(), N, D, KV, true);
        scatter_add_rows(pool_, d_asel.data(), D, A.rows.data(), Nq, d_a.data());
    }
    // d_a waits for d_h: both norms' backward as one op (rms_norm_pair_backward below).

    // Reflexive stream: d m = d_out, or M_m d_out under dropout (masked in place: nothing reads d_out
    // after this, and no buffer is added to the backward footprint.cpp estimates).
    {
        if (dropping) dropout_rows(pool_, A.dropout, kDropoutTagReflex, S, nullptr, N, D, d_out.data());
        const float* dm = d_out.data();
        Buffer<float> d_act(static_cast<std::size_t>(N * F));
        linear_backward_weight(pool_, dm, A.act.data(), grad_[P_REFLEX_DOWN].data(), N, F, D, true);
        linear_backward_input(pool_, dm, w(P_REFLEX_DOWN), d_act.data(), N, F, D);
        Buffer<float> d_gate(static_cast<std::size_t>(N * F)), d_up(static_cast<std::size_t>(N * F));
        swiglu_backward(pool_, A.gate.data(), A.up.data(), d_act.data(), N * F, d_gate.data(), d_up.data());
        d_act.release();
        linear_backward_weight(pool_, d_gate.data(), A.c.data(), grad_[P_REFLEX_GATE].data(), N, D, F, true);
        linear_backward_weight(pool_, d_up.data(), A.c.data(), grad_[P_REFLEX_UP].data(), N, D, F, true);
        Buffer<float> d_c(static_cast<std::size_t>(N * D));
        linear_backward_input(pool_, d_gate.data(), w(P_REFLEX_GATE), d_c.data(), N, D, F);
        linear_backward_input(pool_, d_up.data(), w(P_REFLEX_UP), d_c.data(), N, D, F, true);
        Buffer<float> d_h(static_cast<std::size_t>(N * D));
        causal_conv_backward(pool_, A.h.data(), w(P_REFLEX_CONV), d_c.data(), B, S, D, cfg_.conv_kernel, d_h.data(),
                             grad_[P_REFLEX_CONV].data());
        // dx += the attention norm's part, then the reflex norm's: the order of the two single calls.
        rms_norm_pair_backward(pool_, A.x.data(), w(P_ATTN_NORM), w(P_REFLEX_NORM), A.rstd.data(), d_a.data(),
                               d_h.data(), N, D, dx.data(), grad_[P_ATTN_NORM].data(), grad_[P_REFLEX_NORM].data());
    }

    // Router: aux through p for every token; the gate y = 1 - sg(s) + s, s = sigmoid(n), n = (l + g) / t,
    // for selected tokens: dn = dy s (1 - s), dl = dn / t, dt = -dn n / t.
    Buffer<float> dl(static_cast<std::size_t>(N));
    dl.fill(0.0f);
    aux_loss_backward(A.l.data(), N, A.aux_target, cfg_.params.router_sparsity_coef, cfg_.params.router_entropy_coef,
                      d_aux, dl.data());
    double dt = 0.0;
    for (int64_t i = 0; i < Nq; ++i) {
        const int64_t row = A.rows[i];
        const double dn = static_cast<double>(dy[i]) * sigmoid_grad(A.n[row]);
        dl[row] += static_cast<float>(dn / A.t);
        dt += -dn * static_cast<double>(A.n[row]) / static_cast<double>(A.t);
    }
    if (A.t_inside) grad_[P_ROUTER_LOG_TEMP][0] += static_cast<float>(dt * static_cast<double>(A.t));
    double db = 0.0;
    for (int64_t i = 0; i < N; ++i) db += dl[i];
    grad_[P_ROUTER_B][0] += static_cast<float>(db);
    const float* wr = w(P_ROUTER_W);
    float* gw = grad_[P_ROUTER_W].data();
    pool_.parallel_for(D, 64, [&](int64_t d0, int64_t d1, int) {
        for (int64_t d = d0; d < d1; ++d) {
            double acc = 0.0;
            for (int64_t i = 0; i < N; ++i) acc += static_cast<double>(dl[i]) * A.x[i * D + d];
            gw[d] += static_cast<float>(acc);
        }
    });
    pool_.parallel_for(N, 64, [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i) axpy_f32(dl[i], wr, dx.data() + i * D, D);
    });

    if (call.d_x) f32_to_bf16_array(pool_, dx.data(), host_data<uint16_t>(call.d_x), N * D);
}

}  // namespace hspmn::cpu
