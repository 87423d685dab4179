// The CPU backend's ops (src/cpu/ops.h) behind the registry's names: float32 in, float32 out.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../../src/core/bf16.h"
#include "../../src/cpu/ops.h"
#include "backend_ops.h"

namespace hspmn::backend_ops {

namespace {

using namespace hspmn::cpu;

Array out_f(const char* name, std::vector<int64_t> shape, Prec prec = Prec::F32) {
    Array a{name, std::move(shape)};
    a.f.assign(static_cast<std::size_t>(a.numel()), 0.0f);
    a.prec = prec;
    return a;
}

Array out_i(const char* name, std::vector<int64_t> shape) {
    Array a{name, std::move(shape), true};
    a.i.assign(static_cast<std::size_t>(a.numel()), 0);
    a.prec = Prec::EXACT;
    return a;
}

// Rows of the rope op: keys (C == 0) at r % S, else [B, C] queries at pos, rows past counts 0 (the
// selected-rows layout's padding convention, which the CUDA op writes).
void rope(ThreadPool& pool, const Case& c, bool backward, std::vector<Array>& out) {
    const int64_t B = c.i("B"), S = c.i("S"), C = c.i("C"), heads = c.i("heads"), Dh = c.i("Dh");
    const int64_t R = C ? B * C : B * S, W = heads * Dh;
    std::vector<float> cos_t(static_cast<std::size_t>(S * (Dh / 2))), sin_t(cos_t.size());
    rope_table(S, Dh, static_cast<float>(c.d("base")), cos_t.data(), sin_t.data());
    std::vector<int32_t> pos(static_cast<std::size_t>(R));
    for (int64_t r = 0; r < R; ++r) pos[r] = static_cast<int32_t>(r % S);
    if (C) {
        const Array& p = c.input("pos");
        for (int64_t r = 0; r < R; ++r) pos[r] = std::max(p.i[r], 0);
    }
    Array y = out_f("y", {R, W});
    y.f = c.input("x").f;
    if (backward)
        rope_backward(pool, y.f.data(), R, heads, Dh, pos.data(), cos_t.data(), sin_t.data());
    else
        rope_forward(pool, y.f.data(), R, heads, Dh, pos.data(), cos_t.data(), sin_t.data());
    if (C) {
        const Array& cnt = c.input("counts");
        for (int64_t r = 0; r < R; ++r)
            if (r % C >= cnt.i[r / C]) std::fill(y.f.begin() + r * W, y.f.begin() + (r + 1) * W, 0.0f);
    }
    out.push_back(std::move(y));
}

bool run(ThreadPool& pool, const Case& c, std::vector<Array>& out, std::string& why) {
    const std::string& op = c.op;
    if (op == "rms_norm_forward" || op == "rms_norm_backward") {
        const int64_t N = c.i("N"), D = c.i("D");
        Array y = out_f("y", {N, D}), rstd = out_f("rstd", {N});
        rms_norm_forward(pool, c.input("x").f.data(), c.input("w").f.data(), static_cast<float>(c.d("eps")), N, D,
                         y.f.data(), rstd.f.data());
        if (op == "rms_norm_forward") {
            out.push_back(std::move(y));
            out.push_back(std::move(rstd));
        } else {
            Array dx = out_f("dx", {N, D}), dw = out_f("dw", {D});
            rms_norm_backward(pool, c.input("x").f.data(), c.input("w").f.data(), rstd.f.data(),
                              c.input("dy").f.data(), N, D, dx.f.data(), dw.f.data());
            out.push_back(std::move(dx));
            out.push_back(std::move(dw));
        }
        return true;
    }
    if (op == "rms_norm_pair_forward" || op == "rms_norm_pair_backward") {
        const int64_t N = c.i("N"), D = c.i("D");
        const float *x = c.input("x").f.data(), *w_h = c.input("w_h").f.data(), *w_a = c.input("w_a").f.data();
        Array h = out_f("h", {N, D}), a = out_f("a", {N, D}), rstd = out_f("rstd", {N});
        rms_norm_pair_forward(pool, x, w_h, w_a, static_cast<float>(c.d("eps")), N, D, h.f.data(), a.f.data(),
                              rstd.f.data());
        if (op == "rms_norm_pair_forward") {
            out.push_back(std::move(h));
            out.push_back(std::move(a));
            out.push_back(std::move(rstd));
        } else {
            Array dx = out_f("dx", {N, D}), dw_a = out_f("dw_a", {D}), dw_h = out_f("dw_h", {D});
            dx.f = c.input("dx0").f;
            rms_norm_pair_backward(pool, x, w_a, w_h, rstd.f.data(), c.input("dy_a").f.data(),
                                   c.input("dy_h").f.data(), N, D, dx.f.data(), dw_a.f.data(), dw_h.f.data());
            out.push_back(std::move(dx));
            out.push_back(std::move(dw_a));
            out.push_back(std::move(dw_h));
        }
        return true;
    }
    if (op == "causal_conv_forward" || op == "causal_conv_backward") {
        const int64_t B = c.i("B"), S = c.i("S"), D = c.i("D"), K = c.i("K");
        if (op == "causal_conv_forward") {
            Array y = out_f("c", {B, S, D});
            causal_conv_forward(pool, c.input("h").f.data(), c.input("w").f.data(), B, S, D, K, y.f.data());
            out.push_back(std::move(y));
        } else {
            Array dh = out_f("dh", {B, S, D}), dw = out_f("dw", {D, K});
            causal_conv_backward(pool, c.input("h").f.data(), c.input("w").f.data(), c.input("dc").f.data(), B, S, D,
                                 K, dh.f.data(), dw.f.data());
            out.push_back(std::move(dh));
            out.push_back(std::move(dw));
        }
        return true;
    }
    if (op == "rms_norm_pair_conv_forward") {
        // The CPU has no fused op: the two it stands for, as the CPU block runs them.
        const int64_t B = c.i("B"), S = c.i("S"), D = c.i("D"), K = c.i("K"), N = B * S;
        Array h = out_f("h", {B, S, D}), a = out_f("a", {B, S, D}), cc = out_f("c", {B, S, D}),
              rstd = out_f("rstd", {N});
        rms_norm_pair_forward(pool, c.input("x").f.data(), c.input("w_h").f.data(), c.input("w_a").f.data(),
                              static_cast<float>(c.d("eps")), N, D, h.f.data(), a.f.data(), rstd.f.data());
        causal_conv_forward(pool, h.f.data(), c.input("w_c").f.data(), B, S, D, K, cc.f.data());
        for (Array* o : {&h, &a, &cc, &rstd}) out.push_back(std::move(*o));
        return true;
    }
    if (op == "residual_out") {
        // The CPU block's y = x + m (linear_forward accumulating onto x), + o on the query rows, then
        // the bf16 output: the same float32 sums in the same order.
        const int64_t B = c.i("B"), S = c.i("S"), C = c.i("C"), D = c.i("D");
        const Array &m = c.input("m"), &x = c.input("x"), &o = c.input("o"), &idx = c.input("indices");
        Array y = out_f("out", {B * S, D}, Prec::BF16);
        for (std::size_t k = 0; k < y.f.size(); ++k) y.f[k] = m.f[k] + x.f[k];
        for (int64_t b = 0; b < B; ++b)
            for (int64_t j = 0; j < c.input("counts").i[b]; ++j) {
                const int64_t tok = b * S + idx.i[b * C + j];
                for (int64_t e = 0; e < D; ++e) y.f[tok * D + e] += o.f[(b * C + j) * D + e];
            }
        for (float& v : y.f) v = bf16_to_f32(f32_to_bf16(v));
        out.push_back(std::move(y));
        return true;
    }
    if (op == "swiglu_forward" || op == "swiglu_backward") {
        const int64_t n = c.i("n");
        if (op == "swiglu_forward") {
            Array a = out_f("a", {n});
            swiglu_forward(pool, c.input("g").f.data(), c.input("u").f.data(), n, a.f.data());
            out.push_back(std::move(a));
        } else {
            Array dg = out_f("dg", {n}), du = out_f("du", {n});
            swiglu_backward(pool, c.input("g").f.data(), c.input("u").f.data(), c.input("da").f.data(), n, dg.f.data(),
                            du.f.data());
            out.push_back(std::move(dg));
            out.push_back(std::move(du));
        }
        return true;
    }
    if (op == "rope_forward" || op == "rope_backward") {
        rope(pool, c, op == "rope_backward", out);
        return true;
    }
    if (op == "router_logits") {
        const int64_t N = c.i("N"), D = c.i("D");
        Array l = out_f("l", {N});
        router_logits(pool, c.input("x").f.data(), c.input("w").f.data(), c.input("b").f[0], N, D, l.f.data());
        out.push_back(std::move(l));
        return true;
    }
    if (op == "gumbel_noise") {
        const int64_t B = c.i("B"), S = c.i("S");
        Array g = out_f("g", {B, S});
        gumbel_noise(pool, static_cast<uint64_t>(c.d("seed")), c.i("step"), static_cast<int32_t>(c.i("layer")), B, S,
                     g.f.data());
        out.push_back(std::move(g));
        return true;
    }
    if (op == "route_select") {
        const int64_t B = c.i("B"), S = c.i("S"), C = c.i("C");
        Array idx = out_i("indices", {B, C}), cnt = out_i("counts", {B});
        route_select(c.input("n").f.data(), B, S, static_cast<int32_t>(c.i("routing")), c.i("k"), C, idx.i.data(),
                     cnt.i.data());
        out.push_back(std::move(idx));
        out.push_back(std::move(cnt));
        return true;
    }
    if (op == "aux_loss_forward" || op == "aux_loss_backward") {
        const int64_t N = c.i("N");
        const float t = static_cast<float>(c.d("target")), ls = static_cast<float>(c.d("lambda_s")),
                    le = static_cast<float>(c.d("lambda_e"));
        if (op == "aux_loss_forward") {
            Array aux = out_f("aux", {1});
            aux.f[0] = aux_loss_forward(c.input("l").f.data(), N, t, ls, le);
            out.push_back(std::move(aux));
        } else {
            Array dl = out_f("dl", {N});
            aux_loss_backward(c.input("l").f.data(), N, t, ls, le, static_cast<float>(c.d("d_aux")), dl.f.data());
            out.push_back(std::move(dl));
        }
        return true;
    }
    if (op == "sqdk_attention_forward" || op == "sqdk_attention_backward" || op == "sqdk_attention_decode") {
        const bool decode = op == "sqdk_attention_decode";
        // decode: one query per slot, the shared layout at C = 1 over the slots' caches
        const AttentionShape s =
            decode ? AttentionShape{c.i("seqs"), 1, c.i("max_len"), c.i("H"), c.i("Hkv"), c.i("Dh")}
                   : AttentionShape{c.i("B"), c.i("C"), c.i("S"), c.i("H"), c.i("Hkv"), c.i("Dh")};
        const int32_t* pos = c.input(decode ? "qpos" : "pos").i.data();
        const int32_t* counts = c.input(decode ? "qcnt" : "counts").i.data();
        const float *q = c.input("q").f.data(), *k = c.input("k").f.data(), *v = c.input("v").f.data();
        Array o = out_f("o", {s.B, s.C, s.H * s.Dh}), lse = out_f("lse", {s.B, s.H, s.C});
        sqdk_attention_forward(pool, s, q, pos, counts, k, v, o.f.data(), lse.f.data());
        if (op != "sqdk_attention_backward") {
            out.push_back(std::move(o));
            out.push_back(std::move(lse));
            return true;
        }
        Array dq = out_f("dq", {s.B, s.C, s.H * s.Dh}), dk = out_f("dk", {s.B, s.S, s.Hkv * s.Dh}),
              dv = out_f("dv", {s.B, s.S, s.Hkv * s.Dh});
        sqdk_attention_backward(pool, s, q, pos, counts, k, v, o.f.data(), lse.f.data(), c.input("d_o").f.data(),
                                dq.f.data(), dk.f.data(), dv.f.data());
        out.push_back(std::move(dq));
        out.push_back(std::move(dk));
        out.push_back(std::move(dv));
        return true;
    }
    if (op == "rope_step") {
        // rope_rows + rope_forward of every row's K and the routed rows' Q, placed as the step places them:
        // k: the rows' cache rows [n, Hkv*Dh] (a padding row writes none: 0), q: [max_seqs, H*Dh] by slot
        const int64_t n = c.i("n"), seqs = c.i("max_seqs"), H = c.i("H"), Hkv = c.i("Hkv"), Dh = c.i("Dh");
        const Array &slot = c.input("slot"), &pos = c.input("pos"), &routed = c.input("routed");
        std::vector<float> cos_t(static_cast<std::size_t>(n * (Dh / 2))), sin_t(cos_t.size());
        rope_rows(pos.i.data(), n, Dh, static_cast<float>(c.d("base")), cos_t.data(), sin_t.data());
        std::vector<int32_t> tab(static_cast<std::size_t>(n));
        for (int64_t r = 0; r < n; ++r) tab[r] = static_cast<int32_t>(r);
        std::vector<float> kf = c.input("kf").f, qf = c.input("qf").f;
        rope_forward(pool, kf.data(), n, Hkv, Dh, tab.data(), cos_t.data(), sin_t.data());
        rope_forward(pool, qf.data(), n, H, Dh, tab.data(), cos_t.data(), sin_t.data());
        Array k = out_f("k_rows", {n, Hkv * Dh}), q = out_f("q_slots", {seqs, H * Dh});
        for (int64_t r = 0; r < n; ++r) {
            if (slot.i[r] < 0) continue;
            std::copy(kf.begin() + r * Hkv * Dh, kf.begin() + (r + 1) * Hkv * Dh, k.f.begin() + r * Hkv * Dh);
            if (routed.i[r])
                std::copy(qf.begin() + r * H * Dh, qf.begin() + (r + 1) * H * Dh, q.f.begin() + slot.i[r] * H * Dh);
        }
        out.push_back(std::move(k));
        out.push_back(std::move(q));
        return true;
    }
    if (op == "decode_step_pre") {
        // what the CPU block's decode runs for one new row of a slot (cpu_block.cpp run_router,
        // cpu_block_rows.cpp): router_logits / t, threshold n > 0, rms_norm_pair_forward, causal_conv_forward
        // over [the slot's K-1 cached h, h], then the cache keeps the last K-1 inputs
        const int64_t n = c.i("n"), seqs = c.i("max_seqs"), L = c.i("max_len"), D = c.i("D"), K = c.i("K"),
                      P = K - 1, PC = std::max<int64_t>(P, 1);
        const float eps = static_cast<float>(c.d("eps"));
        const Array &x = c.input("x"), &slot = c.input("slot"), &pos = c.input("pos");
        std::vector<float> l(static_cast<std::size_t>(n)), rstd(static_cast<std::size_t>(n));
        router_logits(pool, x.f.data(), c.input("router_w").f.data(), c.input("router_b").f[0], n, D, l.data());
        const double t_raw = std::exp(static_cast<double>(c.input("log_temp").f[0]));
        const float t = static_cast<float>(std::fmin(std::fmax(t_raw, 0.1), 2.0));
        std::vector<float> h(static_cast<std::size_t>(n * D));
        Array a = out_f("a", {n, D}), cc = out_f("c", {n, D}), cache = out_f("conv_cache", {seqs, PC, D});
        cache.f = c.input("conv_cache").f;
        rms_norm_pair_forward(pool, x.f.data(), c.input("reflex_norm_w").f.data(), c.input("attn_norm_w").f.data(), eps,
                              n, D, h.data(), a.f.data(), rstd.data());
        Array routed = out_i("routed", {n}), qpos = out_i("qpos", {seqs}), qcnt = out_i("qcnt", {seqs}),
              row_cache = out_i("row_cache", {n});
        std::fill(qpos.i.begin(), qpos.i.end(), -1);
        std::vector<float> staged(static_cast<std::size_t>((P + 1) * D)), conv(staged.size());
        for (int64_t r = 0; r < n; ++r) {
            const int32_t s = slot.i[r];
            const bool flag = s >= 0 && l[r] / t > 0.0f;
            routed.i[r] = flag;
            row_cache.i[r] = s >= 0 ? static_cast<int32_t>(s * L + pos.i[r]) : -1;
            if (s < 0) continue;  // a padding row: no cache, its c unspecified (0 here and compared as such)
            qpos.i[s] = flag ? pos.i[r] : -1;
            qcnt.i[s] = flag;
            float* cs = cache.f.data() + s * PC * D;
            std::copy(cs, cs + P * D, staged.begin());
            std::copy(h.begin() + r * D, h.begin() + (r + 1) * D, staged.begin() + P * D);
            causal_conv_forward(pool, staged.data(), c.input("conv_w").f.data(), 1, P + 1, D, K, conv.data());
            std::copy(conv.begin() + P * D, conv.end(), cc.f.begin() + r * D);
            std::copy(staged.begin() + D, staged.end(), cs);
        }
        out.push_back(std::move(cc));
        out.push_back(std::move(a));
        out.push_back(std::move(cache));
        out.push_back(std::move(routed));
        out.push_back(std::move(qpos));
        out.push_back(std::move(qcnt));
        out.push_back(std::move(row_cache));
        return true;
    }
    if (op == "cross_entropy_fused") {
        const int64_t N = c.i("N"), V = c.i("V"), D = c.i("D");
        Array loss = out_f("loss_sum", {1}), dh = out_f("dh", {N, D}), dt = out_f("d_table", {V, D});
        loss.f[0] = static_cast<float>(cross_entropy_fused(pool, c.input("h").f.data(), c.input("table").f.data(),
                                                           c.input("targets").i.data(), N, V, D,
                                                           static_cast<float>(c.d("grad_scale")), dh.f.data(),
                                                           dt.f.data()));
        out.push_back(std::move(loss));
        out.push_back(std::move(dh));
        out.push_back(std::move(dt));
        return true;
    }
    if (op == "adamw_update") {
        const int64_t n = c.i("n");
        const double t = c.d("step"), b1 = c.d("beta1"), b2 = c.d("beta2");
        Array master = out_f("master", {n}), m = out_f("m", {n}), v = out_f("v", {n}),
              value = out_f("value", {n}, Prec::BF16);
        master.f = c.input("master").f;
        m.f = c.input("m").f;
        v.f = c.input("v").f;
        std::vector<uint16_t> bits(static_cast<std::size_t>(n));
        adamw_update(pool, master.f.data(), bits.data(), c.input("grad").f.data(), m.f.data(), v.f.data(), n,
                     static_cast<float>(c.d("lr")), static_cast<float>(c.d("weight_decay")), static_cast<float>(b1),
                     static_cast<float>(b2), static_cast<float>(c.d("eps")),
                     static_cast<float>(1.0 - std::pow(b1, t)), static_cast<float>(std::sqrt(1.0 - std::pow(b2, t))),
                     static_cast<float>(c.d("grad_scale")));
        for (int64_t i = 0; i < n; ++i) value.f[i] = bf16_to_f32(bits[i]);
        out.push_back(std::move(master));
        out.push_back(std::move(m));
        out.push_back(std::move(v));
        out.push_back(std::move(value));
        return true;
    }
    why = "the CPU backend has no op " + op;
    return false;
}

}  // namespace

OpBackend cpu_backend() {
    static ThreadPool pool(2);
    return OpBackend{"cpu", [](const Case& c, std::vector<Array>& out, std::string& why) {
                         return run(pool, c, out, why);
                     }};
}

}  // namespace hspmn::backend_ops
