// The CUDA backend's ops (src/cuda/kernels/kernels.h, runtime.h) behind the registry's names. Inputs
// go to the device as the backend stores them (bf16 activations and weights, f32 router values,
// gradients and optimizer state); each output is tagged with the precision it went through, which
// picks its bound against the CPU op (backend_ops.h Prec).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

#include "../../src/core/bf16.h"
#include "../../src/core/error.h"
#include "../../src/cuda/device.h"
#include "../../src/cuda/kernels/kernels.h"
#include "backend_ops.h"

namespace hspmn::backend_ops {

namespace {

using namespace hspmn::cuda;
using bf16 = __nv_bfloat16;

// Device buffers of one case, freed when it ends. Everything goes through the device's stream (a
// non-blocking one): a zeroing memset there and a cudaMemcpy on the legacy stream would not be ordered.
struct Mem {
    Device& d;
    std::vector<DeviceBuffer> bufs;
    void* raw(std::size_t bytes) {
        bufs.emplace_back(d, std::max<std::size_t>(bytes, 16));
        bufs.back().zero(d);
        return bufs.back().data();
    }
    void* up(const void* host, std::size_t bytes) {
        void* p = raw(bytes);
        check(cudaMemcpyAsync(p, host, bytes, cudaMemcpyHostToDevice, stream(d)), "upload");
        check(cudaStreamSynchronize(stream(d)), "upload");
        return p;
    }
    float* f32(const Array& a) { return static_cast<float*>(up(a.f.data(), a.f.size() * 4)); }
    bf16* bf(const Array& a) {
        std::vector<uint16_t> h(a.f.size());
        for (std::size_t k = 0; k < h.size(); ++k) h[k] = f32_to_bf16(a.f[k]);
        return static_cast<bf16*>(up(h.data(), h.size() * 2));
    }
    int32_t* i32(const Array& a) { return static_cast<int32_t*>(up(a.i.data(), a.i.size() * 4)); }
    float* f32_zero(int64_t n) { return static_cast<float*>(raw(static_cast<std::size_t>(n) * 4)); }
    bf16* bf_zero(int64_t n) { return static_cast<bf16*>(raw(static_cast<std::size_t>(n) * 2)); }
    int32_t* i32_zero(int64_t n) { return static_cast<int32_t*>(raw(static_cast<std::size_t>(n) * 4)); }
};

// Downloads wait for the stream first, then copy on it.
void down(Device& d, void* host, const void* dev, std::size_t bytes) {
    check(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, stream(d)), "download");
    check(cudaStreamSynchronize(stream(d)), "download");
}

Array get_f32(Device& d, const char* name, std::vector<int64_t> shape, const float* p, Prec prec) {
    Array a{name, std::move(shape)};
    a.prec = prec;
    a.f.resize(static_cast<std::size_t>(a.numel()));
    down(d, a.f.data(), p, a.f.size() * 4);
    return a;
}

Array get_bf(Device& d, const char* name, std::vector<int64_t> shape, const bf16* p) {
    Array a{name, std::move(shape)};
    a.prec = Prec::BF16;
    std::vector<uint16_t> h(static_cast<std::size_t>(a.numel()));
    down(d, h.data(), p, h.size() * 2);
    a.f.resize(h.size());
    for (std::size_t k = 0; k < h.size(); ++k) a.f[k] = bf16_to_f32(h[k]);
    return a;
}

// The block keeps pairs of [rows, W] arrays side by side in one [rows, 2W] buffer (gate | up, dk | dv):
// the ops run on that layout here too. a and b [rows * W] -> [rows, 2W] bf16 on the device.
bf16* side_by_side(Mem& m, const Array& a, const Array& b, int64_t rows, int64_t W) {
    Array both{"both", {rows, 2 * W}};
    both.f.resize(static_cast<std::size_t>(rows * 2 * W));
    for (int64_t r = 0; r < rows; ++r) {
        std::copy_n(a.f.begin() + r * W, W, both.f.begin() + r * 2 * W);
        std::copy_n(b.f.begin() + r * W, W, both.f.begin() + r * 2 * W + W);
    }
    return m.bf(both);
}

// Half `half` (0 or 1) of each row of a [rows, 2W] bf16 device buffer as an output [rows * W] of `shape`.
Array get_bf_half(Device& d, const char* name, std::vector<int64_t> shape, const bf16* both, int64_t rows, int64_t W,
                  int half) {
    const Array all = get_bf(d, name, {rows * 2 * W}, both);
    Array a{name, std::move(shape)};
    a.prec = Prec::BF16;
    a.f.resize(static_cast<std::size_t>(rows * W));
    for (int64_t r = 0; r < rows; ++r) std::copy_n(all.f.begin() + r * 2 * W + half * W, W, a.f.begin() + r * W);
    return a;
}

// Whether two device arrays of `bytes` bytes are equal bit for bit.
bool same_bits(Device& d, const void* p, const void* q, std::size_t bytes) {
    std::vector<unsigned char> a(bytes), b(bytes);
    down(d, a.data(), p, bytes);
    down(d, b.data(), q, bytes);
    return std::memcmp(a.data(), b.data(), bytes) == 0;
}

Array get_i32(Device& d, const char* name, std::vector<int64_t> shape, const int32_t* p) {
    Array a{name, std::move(shape), true};
    a.prec = Prec::EXACT;
    a.i.resize(static_cast<std::size_t>(a.numel()));
    down(d, a.i.data(), p, a.i.size() * 4);
    return a;
}

bool run(Device& d, const Case& c, std::vector<Array>& out, std::string& why) {
    Mem m{d, {}};
    const std::string& op = c.op;
    if (op == "rms_norm_forward" || op == "rms_norm_backward") {
        const int64_t N = c.i("N"), D = c.i("D");
        const float eps = static_cast<float>(c.d("eps"));
        bf16 *x = m.bf(c.input("x")), *w = m.bf(c.input("w")), *y = m.bf_zero(N * D);
        float* rstd = m.f32_zero(N);
        rms_norm_forward(d, x, w, eps, N, D, y, rstd);
        if (op == "rms_norm_forward") {
            out.push_back(get_bf(d, "y", {N, D}, y));
            out.push_back(get_f32(d, "rstd", {N}, rstd, Prec::F32));
        } else {
            float *dx = m.f32_zero(N * D), *dw = m.f32_zero(D);
            DeviceBuffer scratch;
            rms_norm_backward(d, x, w, rstd, m.f32(c.input("dy")), N, D, dx, dw, scratch);
            out.push_back(get_f32(d, "dx", {N, D}, dx, Prec::F32));
            out.push_back(get_f32(d, "dw", {D}, dw, Prec::F32));
        }
        return true;
    }
    if (op == "rms_norm_pair_forward" || op == "rms_norm_pair_backward") {
        // Besides the comparison with the CPU op: the pair must equal the single kernels bit for bit
        // (the block's forward and backward switched to it on that promise; goldens and decode parity
        // depend on it), so the adapter runs both and fails the case on any differing bit.
        const int64_t N = c.i("N"), D = c.i("D");
        const float eps = static_cast<float>(c.d("eps"));
        bf16 *x = m.bf(c.input("x")), *w_h = m.bf(c.input("w_h")), *w_a = m.bf(c.input("w_a"));
        bf16 *h = m.bf_zero(N * D), *a = m.bf_zero(N * D), *h1 = m.bf_zero(N * D), *a1 = m.bf_zero(N * D);
        float *rstd = m.f32_zero(N), *rstd_h = m.f32_zero(N), *rstd_a = m.f32_zero(N);
        rms_norm_pair_forward(d, x, w_h, w_a, eps, N, D, h, a, rstd);
        rms_norm_forward(d, x, w_h, eps, N, D, h1, rstd_h);
        rms_norm_forward(d, x, w_a, eps, N, D, a1, rstd_a);
        const std::size_t nd = static_cast<std::size_t>(N * D), nr = static_cast<std::size_t>(N);
        const std::size_t nw = static_cast<std::size_t>(D);
        if (!same_bits(d, h, h1, nd * 2) || !same_bits(d, a, a1, nd * 2) || !same_bits(d, rstd, rstd_h, nr * 4) ||
            !same_bits(d, rstd, rstd_a, nr * 4)) {
            why = "rms_norm_pair_forward differs from rms_norm_forward x2 in some bit";
            return false;
        }
        if (op == "rms_norm_pair_forward") {
            out.push_back(get_bf(d, "h", {N, D}, h));
            out.push_back(get_bf(d, "a", {N, D}, a));
            out.push_back(get_f32(d, "rstd", {N}, rstd, Prec::F32));
            return true;
        }
        float *dy_a = m.f32(c.input("dy_a")), *dy_h = m.f32(c.input("dy_h"));
        float *dx = m.f32(c.input("dx0")), *dx1 = m.f32(c.input("dx0"));
        float *dw_a = m.f32_zero(D), *dw_h = m.f32_zero(D), *dw_a1 = m.f32_zero(D), *dw_h1 = m.f32_zero(D);
        DeviceBuffer scratch;
        rms_norm_pair_backward(d, x, w_a, w_h, rstd, dy_a, dy_h, N, D, dx, dw_a, dw_h, scratch);
        // As CudaBlock::backward ran them before the pair: the attention norm, then the reflex norm.
        rms_norm_backward(d, x, w_a, rstd, dy_a, N, D, dx1, dw_a1, scratch);
        rms_norm_backward(d, x, w_h, rstd, dy_h, N, D, dx1, dw_h1, scratch);
        if (!same_bits(d, dx, dx1, nd * 4) || !same_bits(d, dw_a, dw_a1, nw * 4) || !same_bits(d, dw_h, dw_h1, nw * 4)) {
            why = "rms_norm_pair_backward differs from rms_norm_backward x2 in some bit";
            return false;
        }
        // rms_norm_pair_backward_out, the block's d_x in one pass, must give the bits of the passes it
        // replaced: d_out = dx0 (bf16 values, so f32(d_out) is dx0 exactly), the pair's f32 dx above, the
        // router's dx += dl w as one fma and one rounding to bf16 (here on the host from the pair's dx);
        // without dl, the pair's dx rounded; its dw_a, dw_h the pair's. w_r is w_h's values, dl has both
        // signs and zeros.
        {
            std::vector<float> pair(nd), dl_h(static_cast<std::size_t>(N));
            down(d, pair.data(), dx, nd * 4);
            for (int64_t i = 0; i < N; ++i) dl_h[i] = 0.375f * static_cast<float>(i % 7 - 3);
            const std::vector<float>& wr = c.input("w_h").f;
            std::vector<uint16_t> want_dl(nd), want(nd), got(nd);
            for (int64_t i = 0; i < N; ++i)
                for (int64_t e = 0; e < D; ++e) {
                    const std::size_t k = static_cast<std::size_t>(i * D + e);
                    want_dl[k] = f32_to_bf16(std::fma(dl_h[i], wr[e], pair[k]));
                    want[k] = f32_to_bf16(pair[k]);
                }
            bf16* d_out = m.bf(c.input("dx0"));
            float* dl = static_cast<float*>(m.up(dl_h.data(), dl_h.size() * 4));
            // With dl it also sums the router's weight gradient (g_w_r) in its dw pass: the bits of
            // router_backward's own two kernels, here run alone (C = 0: no gate rows, dl as given).
            const float temp_h[2] = {1.0f, 1.0f};
            float* temp = static_cast<float*>(m.up(temp_h, sizeof temp_h));
            float *g_r = m.f32_zero(D), *g_b = m.f32_zero(1), *g_t = m.f32_zero(1);
            router_backward(d, nullptr, nullptr, nullptr, nullptr, temp, 1, N, 0, x, D, dl, g_r, g_b, g_t, scratch);
            for (bool with_dl : {true, false}) {
                bf16* d_x = m.bf_zero(N * D);
                float *dw_a2 = m.f32_zero(D), *dw_h2 = m.f32_zero(D), *g_r2 = m.f32_zero(D);
                rms_norm_pair_backward_out(d, x, w_a, w_h, rstd, dy_a, dy_h, d_out, with_dl ? dl : nullptr,
                                           with_dl ? w_h : nullptr, N, D, d_x, dw_a2, dw_h2, scratch,
                                           with_dl ? g_r2 : nullptr);
                if (with_dl && !same_bits(d, g_r, g_r2, nw * 4)) {
                    why = "rms_norm_pair_backward_out's router weight gradient differs in some bit from router_backward's";
                    return false;
                }
                down(d, got.data(), d_x, nd * 2);
                if (got != (with_dl ? want_dl : want) || !same_bits(d, dw_a, dw_a2, nw * 4) ||
                    !same_bits(d, dw_h, dw_h2, nw * 4)) {
                    why = with_dl ? "rms_norm_pair_backward_out differs in some bit from the pair backward, "
                                    "the router's fma and one bf16 rounding"
                                  : "rms_norm_pair_backward_out without dl differs in some bit from the pair "
                                    "backward rounded to bf16";
                    return false;
                }
            }
        }
        out.push_back(get_f32(d, "dx", {N, D}, dx, Prec::F32));
        out.push_back(get_f32(d, "dw_a", {D}, dw_a, Prec::F32));
        out.push_back(get_f32(d, "dw_h", {D}, dw_h, Prec::F32));
        return true;
    }
    if (op == "causal_conv_forward" || op == "causal_conv_backward") {
        const int64_t B = c.i("B"), S = c.i("S"), D = c.i("D"), K = c.i("K");
        bf16 *h = m.bf(c.input("h")), *w = m.bf(c.input("w"));
        if (op == "causal_conv_forward") {
            bf16* y = m.bf_zero(B * S * D);
            causal_conv_forward(d, h, w, B, S, D, K, y);
            out.push_back(get_bf(d, "c", {B, S, D}, y));
        } else {
            // Both ways on every case (the one pass only where D % 8 == 0, K <= 8; elsewhere both are the
            // scalar kernels): the one-pass kernel must give the two kernels' dh and dw bit for bit.
            float *dh = m.f32_zero(B * S * D), *dw = m.f32_zero(D * K);
            float *dh2 = m.f32_zero(B * S * D), *dw2 = m.f32_zero(D * K);
            float* dc = m.f32(c.input("dc"));
            DeviceBuffer scratch;
            causal_conv_backward(d, h, w, dc, B, S, D, K, dh, dw, scratch, ConvBackwardWay::kOnePass);
            causal_conv_backward(d, h, w, dc, B, S, D, K, dh2, dw2, scratch, ConvBackwardWay::kTwoPass);
            if (!same_bits(d, dh, dh2, static_cast<std::size_t>(B * S * D) * 4) ||
                !same_bits(d, dw, dw2, static_cast<std::size_t>(D * K) * 4)) {
                why = "causal_conv_backward: the one-pass kernel's dh or dw differs in some bit from the two kernels'";
                return false;
            }
            out.push_back(get_f32(d, "dh", {B, S, D}, dh, Prec::F32));
            out.push_back(get_f32(d, "dw", {D, K}, dw, Prec::F32));
        }
        return true;
    }
    if (op == "rms_norm_pair_conv_forward") {
        // Besides the comparison with the CPU ops: the fused kernel must equal rms_norm_pair_forward then
        // causal_conv_forward bit for bit (run_rows switches between them by shape), and without h it
        // must write the same a, c, rstd.
        const int64_t B = c.i("B"), S = c.i("S"), D = c.i("D"), K = c.i("K"), N = B * S;
        const float eps = static_cast<float>(c.d("eps"));
        if (!rms_norm_pair_conv_fits(D, K)) {
            why = "the registry's shape is not one the fused kernel takes";
            return false;
        }
        bf16 *x = m.bf(c.input("x")), *w_h = m.bf(c.input("w_h")), *w_a = m.bf(c.input("w_a"));
        bf16* w_c = m.bf(c.input("w_c"));
        bf16 *h = m.bf_zero(N * D), *a = m.bf_zero(N * D), *cc = m.bf_zero(N * D);
        bf16 *h1 = m.bf_zero(N * D), *a1 = m.bf_zero(N * D), *c1 = m.bf_zero(N * D);
        float *rstd = m.f32_zero(N), *rstd1 = m.f32_zero(N);
        rms_norm_pair_conv_forward(d, x, w_h, w_a, w_c, eps, B, S, D, K, h, a, cc, rstd);
        rms_norm_pair_forward(d, x, w_h, w_a, eps, N, D, h1, a1, rstd1);
        causal_conv_forward(d, h1, w_c, B, S, D, K, c1);
        const std::size_t nd = static_cast<std::size_t>(N * D), nr = static_cast<std::size_t>(N);
        if (!same_bits(d, h, h1, nd * 2) || !same_bits(d, a, a1, nd * 2) || !same_bits(d, cc, c1, nd * 2) ||
            !same_bits(d, rstd, rstd1, nr * 4)) {
            why = "rms_norm_pair_conv_forward differs from rms_norm_pair_forward + causal_conv_forward in some bit";
            return false;
        }
        bf16 *a2 = m.bf_zero(N * D), *c2 = m.bf_zero(N * D);
        float* rstd2 = m.f32_zero(N);
        rms_norm_pair_conv_forward(d, x, w_h, w_a, w_c, eps, B, S, D, K, nullptr, a2, c2, rstd2);
        if (!same_bits(d, a, a2, nd * 2) || !same_bits(d, cc, c2, nd * 2) || !same_bits(d, rstd, rstd2, nr * 4)) {
            why = "rms_norm_pair_conv_forward without h differs from with it";
            return false;
        }
        out.push_back(get_bf(d, "h", {B, S, D}, h));
        out.push_back(get_bf(d, "a", {B, S, D}, a));
        out.push_back(get_bf(d, "c", {B, S, D}, cc));
        out.push_back(get_f32(d, "rstd", {N}, rstd, Prec::F32));
        return true;
    }
    if (op == "residual_out") {
        // Besides the comparison with the CPU: the three passes it replaces give the same bits: m + x
        // (what the down GEMM's beta = 1 epilogue computed, here scatter_add_selected over every row),
        // gate_scatter_forward's += o, f32_to_bf16. And x may be out (in place).
        const int64_t B = c.i("B"), S = c.i("S"), C = c.i("C"), D = c.i("D"), N = B * S;
        float *mm = m.f32(c.input("m")), *o = m.f32(c.input("o")), *res = m.f32(c.input("m"));
        bf16 *x = m.bf(c.input("x")), *y = m.bf_zero(N * D), *y1 = m.bf_zero(N * D), *xy = m.bf(c.input("x"));
        int32_t *idx = m.i32(c.input("indices")), *cnt = m.i32(c.input("counts")), *slot = m.i32_zero(N);
        row_slots(d, idx, cnt, B, S, C, N, slot);
        residual_out(d, mm, x, o, slot, N, D, y);
        Array all{"all", {1, N}, true}, whole{"whole", {1}, true};
        for (int64_t r = 0; r < N; ++r) all.i.push_back(static_cast<int32_t>(r));
        whole.i.push_back(static_cast<int32_t>(N));
        scatter_add_selected(d, x, m.i32(all), m.i32(whole), 1, N, N, D, res);
        gate_scatter_forward(d, o, idx, cnt, B, S, C, D, res);
        f32_to_bf16(d, res, y1, N * D);
        const std::size_t bytes = static_cast<std::size_t>(N * D) * 2;
        if (!same_bits(d, y, y1, bytes)) {
            why = "residual_out differs from m + x, gate_scatter_forward, f32_to_bf16 in some bit";
            return false;
        }
        residual_out(d, mm, xy, o, slot, N, D, xy);
        if (!same_bits(d, y, xy, bytes)) {
            why = "residual_out in place (out = x) differs";
            return false;
        }
        out.push_back(get_bf(d, "out", {N, D}, y));
        return true;
    }
    if (op == "swiglu_forward" || op == "swiglu_backward") {
        // As the block runs it: g | u rows of one [rows, 2F] buffer (dg | du likewise), 8 rows when n allows.
        const int64_t n = c.i("n"), rows = n % 8 == 0 ? 8 : 1, F = n / rows;
        bf16* gu = side_by_side(m, c.input("g"), c.input("u"), rows, F);
        if (op == "swiglu_forward") {
            bf16* a = m.bf_zero(n);
            swiglu_forward(d, gu, gu + F, rows, F, 2 * F, a);
            out.push_back(get_bf(d, "a", {n}, a));
        } else {
            bf16* dgu = m.bf_zero(2 * n);
            swiglu_backward(d, gu, gu + F, m.bf(c.input("da")), rows, F, 2 * F, dgu, dgu + F);
            out.push_back(get_bf_half(d, "dg", {n}, dgu, rows, F, 0));
            out.push_back(get_bf_half(d, "du", {n}, dgu, rows, F, 1));
        }
        return true;
    }
    if (op == "rope_forward" || op == "rope_backward") {
        const int64_t B = c.i("B"), S = c.i("S"), C = c.i("C"), heads = c.i("heads"), Dh = c.i("Dh");
        const int64_t R = C ? B * C : B * S;
        float *cos_t = m.f32_zero(S * (Dh / 2)), *sin_t = m.f32_zero(S * (Dh / 2));
        rope_table(d, S, Dh, static_cast<float>(c.d("base")), cos_t, sin_t);
        const int32_t* pos = C ? m.i32(c.input("pos")) : nullptr;
        const int32_t* counts = C ? m.i32(c.input("counts")) : nullptr;
        // y at an aligned address (the 4-pairs-a-thread kernel when half % 4 == 0) and y1 one element past
        // one (2-byte aligned: the pair-a-thread kernel): both must write the same bits.
        const int64_t n = R * heads * Dh;
        bf16 *y = m.bf_zero(n), *y1 = m.bf_zero(n + 1) + 1;
        const float* xf = op == "rope_forward" ? m.f32(c.input("x")) : nullptr;
        const bf16* xb = op == "rope_forward" ? nullptr : m.bf(c.input("x"));
        for (bf16* dst : {y, y1}) {
            if (op == "rope_forward")
                rope_forward(d, xf, dst, R, heads, Dh, pos, counts, C, S, cos_t, sin_t);
            else
                rope_backward(d, xb, dst, R, heads, Dh, heads * Dh, pos, counts, C, S, cos_t, sin_t);
        }
        if (!same_bits(d, y, y1, static_cast<std::size_t>(n) * 2)) {
            why = "rope: the vector kernel (aligned y) and the scalar one (unaligned y) differ in some bit";
            return false;
        }
        out.push_back(get_bf(d, "y", {R, heads * Dh}, y));
        return true;
    }
    if (op == "router_logits") {
        const int64_t N = c.i("N"), D = c.i("D");
        Array zero{"log_temp", {1}};
        zero.f = {0.0f};
        float *l = m.f32_zero(N), *n = m.f32_zero(N), *temp = m.f32_zero(2);
        router_forward(d, m.bf(c.input("x")), m.bf(c.input("w")), m.bf(c.input("b")), m.bf(zero), nullptr, N, D, l, n,
                       temp);
        out.push_back(get_f32(d, "l", {N}, l, Prec::F32));
        return true;
    }
    if (op == "gumbel_noise") {
        const int64_t B = c.i("B"), S = c.i("S");
        float* g = m.f32_zero(B * S);
        gumbel_noise_kernel_launch(d, static_cast<uint64_t>(c.d("seed")), c.i("step"),
                                   static_cast<int32_t>(c.i("layer")), B, S, g);
        out.push_back(get_f32(d, "g", {B, S}, g, Prec::F32));
        return true;
    }
    if (op == "route_select") {
        // Both ways (one block a sequence; many blocks a sequence) on every case, whichever kAuto picks:
        // they must give the same indices and counts. Cases of 16,384 scores or more also print both
        // ways' times (the numbers behind kRouteWideMaxSeqs and kRouteWideMinSeq).
        const int64_t B = c.i("B"), S = c.i("S"), C = c.i("C"), k = c.i("k");
        const int32_t routing = static_cast<int32_t>(c.i("routing"));
        float* n = m.f32(c.input("n"));
        void* scratch = m.raw(static_cast<std::size_t>(route_select_scratch_bytes(B, S)));
        int32_t *idx = m.i32_zero(B * C), *cnt = m.i32_zero(B), *idx_w = m.i32_zero(B * C), *cnt_w = m.i32_zero(B);
        route_select(d, n, B, S, routing, k, C, idx, cnt, scratch, RouteSelectWay::kBlock);
        route_select(d, n, B, S, routing, k, C, idx_w, cnt_w, scratch, RouteSelectWay::kWide);
        if (!same_bits(d, idx, idx_w, static_cast<std::size_t>(B * C) * 4) ||
            !same_bits(d, cnt, cnt_w, static_cast<std::size_t>(B) * 4)) {
            why = "route_select: the wide way's indices or counts differ from the block way's";
            return false;
        }
        if (S >= 16384) {
            float ms[2];
            for (int w = 0; w < 2; ++w) {
                const RouteSelectWay way = w ? RouteSelectWay::kWide : RouteSelectWay::kBlock;
                cudaEvent_t e0, e1;
                check(cudaEventCreate(&e0), "cudaEventCreate");
                check(cudaEventCreate(&e1), "cudaEventCreate");
                route_select(d, n, B, S, routing, k, C, idx_w, cnt_w, scratch, way);  // warm
                check(cudaEventRecord(e0, stream(d)), "cudaEventRecord");
                for (int r = 0; r < 20; ++r) route_select(d, n, B, S, routing, k, C, idx_w, cnt_w, scratch, way);
                check(cudaEventRecord(e1, stream(d)), "cudaEventRecord");
                check(cudaEventSynchronize(e1), "cudaEventSynchronize");
                check(cudaEventElapsedTime(&ms[w], e0, e1), "cudaEventElapsedTime");
                (void)cudaEventDestroy(e0);
                (void)cudaEventDestroy(e1);
            }
            std::printf("    route_select B=%lld S=%lld k=%lld: block way %.1f us, wide way %.1f us (%s by default)\n",
                        static_cast<long long>(B), static_cast<long long>(S), static_cast<long long>(k),
                        ms[0] * 1e3f / 20, ms[1] * 1e3f / 20,
                        route_select_wide(B, S) ? "wide" : "block");
        }
        out.push_back(get_i32(d, "indices", {B, C}, idx));
        out.push_back(get_i32(d, "counts", {B}, cnt));
        return true;
    }
    if (op == "aux_loss_forward" || op == "aux_loss_backward") {
        const int64_t N = c.i("N");
        const float t = static_cast<float>(c.d("target")), ls = static_cast<float>(c.d("lambda_s")),
                    le = static_cast<float>(c.d("lambda_e"));
        float* l = m.f32(c.input("l"));
        if (op == "aux_loss_forward") {
            float* aux = m.f32_zero(1);
            aux_loss_forward(d, l, N, t, ls, le, aux);
            out.push_back(get_f32(d, "aux", {1}, aux, Prec::F32));
        } else {
            Array da{"d_aux", {1}};
            da.f = {static_cast<float>(c.d("d_aux"))};
            float* dl = m.f32_zero(N);
            aux_loss_backward(d, l, N, t, ls, le, m.f32(da), dl);
            out.push_back(get_f32(d, "dl", {N}, dl, Prec::F32));
        }
        return true;
    }
    if (op == "sqdk_attention_forward" || op == "sqdk_attention_backward") {
        const AttentionShape s{c.i("B"), c.i("C"), c.i("S"), c.i("H"), c.i("Hkv"), c.i("Dh")};
        if (!attention_supports_head_dim(s.Dh)) {
            why = "no attention kernel for head dim " + std::to_string(s.Dh) + " in this build";
            return false;
        }
        const int64_t QW = s.H * s.Dh, KW = s.Hkv * s.Dh;
        bf16 *q = m.bf(c.input("q")), *k = m.bf(c.input("k")), *v = m.bf(c.input("v"));
        int32_t *pos = m.i32(c.input("pos")), *counts = m.i32(c.input("counts"));
        bf16* o = m.bf_zero(s.B * s.C * QW);
        float* lse = m.f32_zero(s.B * s.H * s.C);
        sqdk_attention_forward(d, s, q, pos, counts, k, v, o, lse);
        if (op == "sqdk_attention_forward") {
            out.push_back(get_bf(d, "o", {s.B, s.C, QW}, o));
            out.push_back(get_f32(d, "lse", {s.B, s.H, s.C}, lse, Prec::F32));
            return true;
        }
        // dk | dv rows of one [B*S, 2 KW] buffer, as the block's backward takes them.
        bf16 *dq = m.bf_zero(s.B * s.C * QW), *dkv = m.bf_zero(s.B * s.S * 2 * KW);
        sqdk_attention_backward(d, s, q, pos, counts, k, v, o, lse, m.bf(c.input("d_o")), dq, dkv, dkv + KW, 2 * KW);
        out.push_back(get_bf(d, "dq", {s.B, s.C, QW}, dq));
        out.push_back(get_bf_half(d, "dk", {s.B, s.S, KW}, dkv, s.B * s.S, KW, 0));
        out.push_back(get_bf_half(d, "dv", {s.B, s.S, KW}, dkv, s.B * s.S, KW, 1));
        return true;
    }
    if (op == "sqdk_attention_decode") {
        const int64_t seqs = c.i("seqs"), L = c.i("max_len"), H = c.i("H"), Hkv = c.i("Hkv"), Dh = c.i("Dh");
        if (!sqdk_attention_decode_fits(H, Hkv, Dh)) {
            why = "sqdk_attention_decode does not take H " + std::to_string(H) + ", Hkv " + std::to_string(Hkv) +
                  ", Dh " + std::to_string(Dh);
            return false;
        }
        // o and lse of a slot without a query are left as they were: zero here, as the CPU op writes them
        bf16* o = m.bf_zero(seqs * H * Dh);
        float* lse = m.f32_zero(seqs * H);
        DecodeAttentionScratch scratch;
        sqdk_attention_decode_scratch(d, scratch, seqs, L, H, Hkv, Dh);
        sqdk_attention_decode(d, seqs, L, H, Hkv, Dh, m.bf(c.input("q")), m.i32(c.input("qpos")),
                              m.i32(c.input("qcnt")), m.bf(c.input("k")), m.bf(c.input("v")), o, lse, scratch);
        out.push_back(get_bf(d, "o", {seqs, 1, H * Dh}, o));
        out.push_back(get_f32(d, "lse", {seqs, H, 1}, lse, Prec::F32));
        return true;
    }
    if (op == "rope_step") {
        const int64_t n = c.i("n"), seqs = c.i("max_seqs"), L = c.i("max_len"), H = c.i("H"), Hkv = c.i("Hkv"),
                      Dh = c.i("Dh"), KV = Hkv * Dh;
        const Array &slot = c.input("slot"), &pos = c.input("pos");
        std::vector<int64_t> row_cache(static_cast<std::size_t>(n));
        for (int64_t r = 0; r < n; ++r) row_cache[r] = slot.i[r] < 0 ? -1 : slot.i[r] * L + pos.i[r];
        int64_t* rc = static_cast<int64_t*>(m.up(row_cache.data(), row_cache.size() * 8));
        bf16 *k_cache = m.bf_zero(seqs * L * KV), *q = m.bf_zero(seqs * H * Dh);
        rope_step(d, m.f32(c.input("kf")), m.f32(c.input("qf")), m.i32(slot), m.i32(pos), m.i32(c.input("routed")), rc,
                  n, H, Hkv, Dh, static_cast<float>(c.d("base")), k_cache, q);
        Array cache = get_bf(d, "k_cache", {seqs * L, KV}, k_cache);
        Array k("k_rows", {n, KV});
        k.prec = Prec::BF16;
        k.f.assign(static_cast<std::size_t>(n * KV), 0.0f);
        for (int64_t r = 0; r < n; ++r)
            if (row_cache[r] >= 0)
                std::copy(cache.f.begin() + row_cache[r] * KV, cache.f.begin() + (row_cache[r] + 1) * KV,
                          k.f.begin() + r * KV);
        out.push_back(std::move(k));
        out.push_back(get_bf(d, "q_slots", {seqs, H * Dh}, q));
        return true;
    }
    if (op == "decode_step_pre") {
        const int64_t n = c.i("n"), seqs = c.i("max_seqs"), L = c.i("max_len"), D = c.i("D"), K = c.i("K"),
                      PC = std::max<int64_t>(K - 1, 1);
        bf16* cache = m.bf(c.input("conv_cache"));
        bf16 *cc = m.bf_zero(n * D), *a = m.bf_zero(n * D);
        int32_t *routed = m.i32_zero(n), *qcnt = m.i32_zero(seqs);
        Array minus("qpos", {seqs}, true);
        minus.i.assign(static_cast<std::size_t>(seqs), -1);
        int32_t* qpos = m.i32(minus);
        int64_t* rc = static_cast<int64_t*>(m.raw(static_cast<std::size_t>(n) * 8));
        decode_step_pre(d, m.bf(c.input("x")), m.bf(c.input("router_w")), m.bf(c.input("router_b")),
                        m.bf(c.input("log_temp")), m.bf(c.input("reflex_norm_w")), m.bf(c.input("attn_norm_w")),
                        static_cast<float>(c.d("eps")), m.bf(c.input("conv_w")), K, cache, m.i32(c.input("slot")),
                        m.i32(c.input("pos")), n, D, L, cc, a, routed, qpos, qcnt, rc);
        Array c_out = get_bf(d, "c", {n, D}, cc);
        const Array& slot = c.input("slot");
        for (int64_t r = 0; r < n; ++r)  // a padding row's c is unspecified: compared as the CPU's 0
            if (slot.i[r] < 0) std::fill(c_out.f.begin() + r * D, c_out.f.begin() + (r + 1) * D, 0.0f);
        out.push_back(std::move(c_out));
        out.push_back(get_bf(d, "a", {n, D}, a));
        out.push_back(get_bf(d, "conv_cache", {seqs, PC, D}, cache));
        out.push_back(get_i32(d, "routed", {n}, routed));
        out.push_back(get_i32(d, "qpos", {seqs}, qpos));
        out.push_back(get_i32(d, "qcnt", {seqs}, qcnt));
        std::vector<int64_t> rows(static_cast<std::size_t>(n));
        down(d, rows.data(), rc, rows.size() * 8);
        Array row_cache("row_cache", {n}, true);
        row_cache.prec = Prec::EXACT;
        for (int64_t v : rows) row_cache.i.push_back(static_cast<int32_t>(v));
        out.push_back(std::move(row_cache));
        return true;
    }
    if (op == "cross_entropy_fused") {
        const int64_t N = c.i("N"), V = c.i("V"), D = c.i("D");
        float *loss = m.f32_zero(1), *dh = m.f32_zero(N * D), *dt = m.f32_zero(V * D);
        CrossEntropyScratch scratch;
        cross_entropy_fused(d, m.bf(c.input("h")), m.bf(c.input("table")), m.i32(c.input("targets")), N, V, D,
                            static_cast<float>(c.d("grad_scale")), loss, dh, dt, scratch);
        out.push_back(get_f32(d, "loss_sum", {1}, loss, Prec::F32));
        // the softmax gradient dz is kept in bf16 between the logits and the two gradient GEMMs
        out.push_back(get_f32(d, "dh", {N, D}, dh, Prec::BF16));
        out.push_back(get_f32(d, "d_table", {V, D}, dt, Prec::BF16));
        return true;
    }
    if (op == "adamw_update") {
        const int64_t n = c.i("n");
        const double t = c.d("step"), b1 = c.d("beta1"), b2 = c.d("beta2");
        AdamwScalars s{};
        s.lr = static_cast<float>(c.d("lr"));
        s.weight_decay = static_cast<float>(c.d("weight_decay"));
        s.beta1 = static_cast<float>(b1);
        s.beta2 = static_cast<float>(b2);
        s.eps = static_cast<float>(c.d("eps"));
        s.bias1 = static_cast<float>(1.0 - std::pow(b1, t));
        s.bias2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(b2, t)));
        s.grad_scale = static_cast<float>(c.d("grad_scale"));
        float *master = m.f32(c.input("master")), *mm = m.f32(c.input("m")), *v = m.f32(c.input("v"));
        bf16* value = m.bf_zero(n);
        adamw_update(d, master, value, m.f32(c.input("grad")), mm, v, n, s);
        // float32 (adamw.cu forms its constants in double, the CPU op in float: not the same bits)
        out.push_back(get_f32(d, "master", {n}, master, Prec::F32));
        out.push_back(get_f32(d, "m", {n}, mm, Prec::F32));
        out.push_back(get_f32(d, "v", {n}, v, Prec::F32));
        out.push_back(get_bf(d, "value", {n}, value));
        return true;
    }
    why = "the CUDA backend has no op " + op;
    return false;
}

}  // namespace

// The Device lives in the returned closure, so it is destroyed when main's backends go out of scope,
// before the CUDA runtime's own teardown at exit.
OpBackend cuda_backend(std::string& why) {
    std::shared_ptr<Device> device;
    try {
        device = std::make_shared<Device>(0);
    } catch (const Error& e) {
        why = e.status == HSPMN_ERR_NO_DEVICE ? "skipped: no device (" + e.message + ")"
                                              : "Device(0) failed: " + e.message;
        return OpBackend{"cuda", nullptr};
    }
    std::printf("cuda: device %d, sm_%d, %d SMs\n", device->ordinal, device->arch, device->sm_count);
    return OpBackend{"cuda", [device](const Case& c, std::vector<Array>& out, std::string& w) {
                         try {
                             return run(*device, c, out, w);
                         } catch (const Error& e) {
                             w = "error: " + e.message;
                             return false;
                         }
                     }};
}

}  // namespace hspmn::backend_ops
