// The CUDA language-model ops (src/cuda/kernels: embedding, cross_entropy_fused, rms_norm_backward_bf16,
// sum_squares, adamw, loss_finish, fill, routed_fraction, noise_free_fraction) on a real device, at shapes and token
// patterns the model-level check (reference/check_model.py) cannot afford: vocabularies to 65536,
// 10^5 rows, runs of one token across many chunks and runs ending exactly on chunk boundaries, several
// cross-entropy row chunks with a ragged last one. Each op against a double host reference, and run
// twice for bitwise repeatability. Without a device it prints "skipped: no device" and exits 0.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "../src/core/alloc.h"
#include "../src/core/bf16.h"
#include "../src/core/error.h"
#include "../src/cuda/device.h"
#include "../src/cuda/kernels/kernels.h"
#include "cuda_check.h"

using namespace hspmn;
using namespace hspmn::cuda;

namespace {

using bf16 = __nv_bfloat16;

// Device copies that live until the end of a test.
struct Keep {
    Device& d;
    std::vector<DeviceBuffer> bufs;
    template <class T>
    T* up(const std::vector<T>& host) {
        return upload(d, host, bufs);
    }
    template <class T>
    T* zeros(std::size_t n) {
        bufs.emplace_back(d, std::max<std::size_t>(n, 1) * sizeof(T));
        bufs.back().zero(d);
        return bufs.back().as<T>();
    }
};

template <class G, class R>
double rel(const std::vector<G>& got, const std::vector<R>& ref) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
        const double e = static_cast<double>(got[i]) - static_cast<double>(ref[i]);
        num += e * e;
        den += static_cast<double>(ref[i]) * static_cast<double>(ref[i]);
    }
    return std::sqrt(num / std::max(den, 1e-300));
}

std::vector<float> widen(const std::vector<uint16_t>& b) {
    std::vector<float> f(b.size());
    for (std::size_t i = 0; i < b.size(); ++i) f[i] = bf16_to_f32(b[i]);
    return f;
}

const bf16* as_bf(const uint16_t* p) { return reinterpret_cast<const bf16*>(p); }
bf16* as_bf(uint16_t* p) { return reinterpret_cast<bf16*>(p); }

void test_embedding_forward(Device& d, std::mt19937& rng, int64_t V, int64_t D, int64_t N) {
    Keep k{d, {}};
    const auto table = random_bf16(rng, V * D);
    std::vector<int32_t> tokens(N);
    for (auto& t : tokens) t = static_cast<int32_t>(rng() % V);
    tokens[0] = 0;
    tokens[N - 1] = static_cast<int32_t>(V - 1);
    uint16_t* x = k.zeros<uint16_t>(N * D);
    embedding_forward(d, as_bf(k.up(table)), k.up(tokens), N, D, as_bf(x));
    const auto got = download<uint16_t>(x, N * D);
    bool same = true;
    for (int64_t r = 0; r < N; ++r) same &= std::memcmp(&got[r * D], &table[tokens[r] * D], D * 2) == 0;
    std::printf("embedding_forward V=%lld D=%lld N=%lld: %s\n", (long long)V, (long long)D, (long long)N,
                same ? "exact" : "WRONG");
    EXPECT(same, "x[r] must be table[tokens[r]] bit for bit");
}

// d_table (+)= dx rows by token. Bound: an in-order float32 sum of n terms errs by at most
// (n - 1) u sum|terms| (u = 2^-24); each run's sum is a chain of at most chunk_rows + chunks additions.
void test_embedding_backward(Device& d, std::mt19937& rng, const char* what, int64_t V, int64_t D,
                             const std::vector<int32_t>& tokens) {
    Keep k{d, {}};
    const int64_t N = static_cast<int64_t>(tokens.size());
    const auto dx = random_bf16(rng, N * D);
    const auto init = random_f32(rng, V * D);
    std::vector<double> ref(init.begin(), init.end()), mag(V * D);
    for (std::size_t i = 0; i < init.size(); ++i) mag[i] = std::fabs(init[i]);
    for (int64_t r = 0; r < N; ++r)
        for (int64_t c = 0; c < D; ++c) {
            const double v = bf16_to_f32(dx[r * D + c]);
            ref[tokens[r] * D + c] += v;
            mag[tokens[r] * D + c] += std::fabs(v);
        }
    const int64_t rows = partial_rows(N), chunks = (N + rows - 1) / rows;
    const double u = std::ldexp(1.0, -24) * static_cast<double>(rows + chunks + 2);
    DeviceBuffer scratch;
    const uint16_t* ddx = k.up(dx);
    const int32_t* dtok = k.up(tokens);
    float* t1 = k.up(init);
    float* t2 = k.up(init);
    embedding_backward(d, as_bf(ddx), dtok, N, D, t1, scratch);
    embedding_backward(d, as_bf(ddx), dtok, N, D, t2, scratch);
    const auto g1 = download<float>(t1, V * D), g2 = download<float>(t2, V * D);
    double worst = 0;  // |err| / bound
    for (std::size_t i = 0; i < g1.size(); ++i)
        worst = std::max(worst, std::fabs(g1[i] - ref[i]) / (u * mag[i] + 1e-30));
    const bool same = std::memcmp(g1.data(), g2.data(), g1.size() * 4) == 0;
    std::printf("embedding_backward %s (V=%lld D=%lld N=%lld, %lld chunks of %lld): worst |err|/bound %.3f, "
                "repeat %s\n", what, (long long)V, (long long)D, (long long)N, (long long)chunks, (long long)rows,
                worst, same ? "bitwise" : "DIFFERS");
    EXPECT(worst <= 1.0, "embedding_backward %s beyond the float32 summation bound", what);
    EXPECT(same, "embedding_backward %s is not repeatable", what);
}

// loss_sum, dh, d_table (+)= against double. z is a float32 GEMM of bf16 values (rel ~1e-6); dz is
// rounded to bf16 (2^-9 relative per element) before both gradient GEMMs: MODEL.md's 1e-2 bf16 path.
void test_cross_entropy(Device& d, std::mt19937& rng, int64_t N, int64_t V, int64_t D, bool want_dh, bool want_dt) {
    Keep k{d, {}};
    const auto h = random_bf16(rng, N * D, 0.5f), table = random_bf16(rng, V * D, 0.5f);
    std::vector<int32_t> targets(N);
    for (auto& t : targets) t = static_cast<int32_t>(rng() % V);
    targets[0] = static_cast<int32_t>(V - 1);
    const auto dt_init = random_f32(rng, V * D, 0.01f);
    const float grad_scale = 1.0f / static_cast<float>(N);
    std::vector<double> dh_ref(N * D, 0.0), dt_ref(dt_init.begin(), dt_init.end()), z(V);
    double loss_ref = 0;
    const bool grads = want_dh || want_dt;
    const auto hf = widen(h), tf = widen(table);
    for (int64_t r = 0; r < N; ++r) {
        double mx = -1e300;
        for (int64_t v = 0; v < V; ++v) {
            double s = 0;
            for (int64_t c = 0; c < D; ++c) s += static_cast<double>(hf[r * D + c]) * tf[v * D + c];
            z[v] = s;
            mx = std::max(mx, s);
        }
        double se = 0;
        for (int64_t v = 0; v < V; ++v) se += std::exp(z[v] - mx);
        const double lse = mx + std::log(se);
        loss_ref += lse - z[targets[r]];
        for (int64_t v = 0; grads && v < V; ++v) {
            const double g = grad_scale * (std::exp(z[v] - lse) - (v == targets[r] ? 1.0 : 0.0));
            for (int64_t c = 0; c < D; ++c) {
                dh_ref[r * D + c] += g * tf[v * D + c];
                dt_ref[v * D + c] += g * hf[r * D + c];
            }
        }
    }
    CrossEntropyScratch scratch;
    const uint16_t* dh_in = k.up(h);
    const uint16_t* dtab = k.up(table);
    const int32_t* dtgt = k.up(targets);
    float* loss = k.zeros<float>(2);
    float* dh1 = want_dh ? k.zeros<float>(N * D) : nullptr;
    float* dh2 = want_dh ? k.zeros<float>(N * D) : nullptr;
    float* dt1 = want_dt ? k.up(dt_init) : nullptr;
    float* dt2 = want_dt ? k.up(dt_init) : nullptr;
    cross_entropy_fused(d, as_bf(dh_in), as_bf(dtab), dtgt, N, V, D, grad_scale, loss, dh1, dt1, scratch);
    cross_entropy_fused(d, as_bf(dh_in), as_bf(dtab), dtgt, N, V, D, grad_scale, loss + 1, dh2, dt2, scratch);
    const auto l = download<float>(loss, 2);
    const double el = std::fabs(l[0] - loss_ref) / loss_ref;
    bool same = l[0] == l[1];
    double edh = 0, edt = 0;
    if (want_dh) {
        const auto a = download<float>(dh1, N * D), b = download<float>(dh2, N * D);
        edh = rel(a, dh_ref);
        same &= a == b;
    }
    if (want_dt) {
        const auto a = download<float>(dt1, V * D), b = download<float>(dt2, V * D);
        // judge the added part: d_table - init against the reference's
        std::vector<double> add_ref(V * D), add_got(V * D);
        for (int64_t i = 0; i < V * D; ++i) {
            add_ref[i] = dt_ref[i] - dt_init[i];
            add_got[i] = static_cast<double>(a[i]) - dt_init[i];
        }
        edt = rel(add_got, add_ref);
        same &= a == b;
    }
    std::printf("cross_entropy_fused N=%lld V=%lld D=%lld (rows per chunk %lld)%s%s: loss %.2e dh %.2e d_table %.2e, "
                "repeat %s\n", (long long)N, (long long)V, (long long)D, (long long)cross_entropy_chunk_rows(N, V),
                want_dh ? "" : " no dh", want_dt ? "" : " no d_table", el, edh, edt, same ? "bitwise" : "DIFFERS");
    EXPECT(el < 1e-5, "loss_sum is float32 per row, summed in double");
    EXPECT(edh < 1e-2 && edt < 1e-2, "gradients beyond the bf16-path bound");
    EXPECT(same, "cross_entropy_fused is not repeatable");
}

// dx bf16 (overwritten; one bf16 rounding: ~2^-9 relative), dw f32 (+)= (float32 path).
void test_final_norm_backward(Device& d, std::mt19937& rng, int64_t N, int64_t D) {
    Keep k{d, {}};
    const auto x = random_bf16(rng, N * D), w = random_bf16(rng, D);
    const auto dy = random_f32(rng, N * D), dw0 = random_f32(rng, D);
    const float eps = 1e-6f;
    std::vector<float> rstd(N);
    std::vector<double> dx_ref(N * D), dw_ref(dw0.begin(), dw0.end());
    for (int64_t r = 0; r < N; ++r) {
        double ss = 0;
        for (int64_t c = 0; c < D; ++c) ss += std::pow(bf16_to_f32(x[r * D + c]), 2.0);
        rstd[r] = static_cast<float>(1.0 / std::sqrt(ss / D + eps));
        const double rs = rstd[r];
        double s = 0;
        for (int64_t c = 0; c < D; ++c) s += dy[r * D + c] * (double)bf16_to_f32(w[c]) * bf16_to_f32(x[r * D + c]);
        for (int64_t c = 0; c < D; ++c) {
            const double xv = bf16_to_f32(x[r * D + c]);
            dx_ref[r * D + c] = rs * (dy[r * D + c] * (double)bf16_to_f32(w[c]) - xv * s * rs * rs / D);
            dw_ref[c] += dy[r * D + c] * xv * rs;
        }
    }
    DeviceBuffer scratch;
    uint16_t* dx = k.zeros<uint16_t>(N * D);
    float* dw = k.up(dw0);
    rms_norm_backward_bf16(d, as_bf(k.up(x)), as_bf(k.up(w)), k.up(rstd), k.up(dy), N, D, as_bf(dx), dw, scratch);
    const double ex = rel(widen(download<uint16_t>(dx, N * D)), dx_ref), ew = rel(download<float>(dw, D), dw_ref);
    std::printf("rms_norm_backward_bf16 N=%lld D=%lld: dx %.2e dw %.2e\n", (long long)N, (long long)D, ex, ew);
    EXPECT(ex < 4e-3, "dx: one bf16 rounding");
    EXPECT(ew < 1e-5, "dw: float32 sums");
}

// Bitwise: the kernel and this loop evaluate the same float32 operations in the same order.
void test_adamw(Device& d, std::mt19937& rng, int64_t n, float wd) {
    Keep k{d, {}};
    auto master = random_f32(rng, n, 0.1f), grad = random_f32(rng, n, 0.01f), m = random_f32(rng, n, 0.001f);
    auto v = random_f32(rng, n, 1e-4f);
    for (auto& x : v) x = std::fabs(x);
    AdamwScalars s{};
    s.lr = 3e-3f;
    s.weight_decay = wd;
    s.beta1 = 0.9f;
    s.beta2 = 0.95f;
    s.eps = 1e-8f;
    s.bias1 = static_cast<float>(1.0 - std::pow(0.9f, 7.0));
    s.bias2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(0.95f, 7.0)));
    s.grad_scale = 0.75f;
    float* dm = k.up(master);
    float* dmm = k.up(m);
    float* dv = k.up(v);
    uint16_t* val = k.zeros<uint16_t>(n);
    adamw_update(d, dm, as_bf(val), k.up(grad), dmm, dv, n, s);
    const float decay = static_cast<float>(1.0 - static_cast<double>(s.lr) * s.weight_decay);
    const float omb1 = static_cast<float>(1.0 - static_cast<double>(s.beta1));
    const float omb2 = static_cast<float>(1.0 - static_cast<double>(s.beta2));
    const float neg_step = static_cast<float>(-(static_cast<double>(s.lr) / s.bias1));
    for (int64_t i = 0; i < n; ++i) {
        volatile float g = grad[i] * s.grad_scale;  // volatile: no FMA contraction on the host either
        volatile float p = master[i];
        if (wd != 0.0f) p = p * decay;
        volatile float a = m[i] * s.beta1, b = g * omb1;
        m[i] = a + b;
        volatile float c = v[i] * s.beta2, e = omb2 * g;
        volatile float f = e * g;
        v[i] = c + f;
        volatile float den = std::sqrt(v[i]) / s.bias2_sqrt;
        den = den + s.eps;
        volatile float num = neg_step * m[i];
        volatile float q = num / den;
        master[i] = p + q;
    }
    const auto gm = download<float>(dm, n), gmm = download<float>(dmm, n), gv = download<float>(dv, n);
    const auto gval = download<uint16_t>(val, n);
    bool same = std::memcmp(gm.data(), master.data(), n * 4) == 0 && std::memcmp(gmm.data(), m.data(), n * 4) == 0 &&
                std::memcmp(gv.data(), v.data(), n * 4) == 0;
    bool rounded = true;
    for (int64_t i = 0; i < n; ++i) rounded &= gval[i] == f32_to_bf16(gm[i]);
    std::printf("adamw_update n=%lld wd=%g: master/m/v %s, value = bf16(master) %s\n", (long long)n, wd,
                same ? "bitwise" : "DIFFER", rounded ? "yes" : "NO");
    EXPECT(same, "adamw_update differs from the float32 formula");
    EXPECT(rounded, "value must be bf16(master), nearest even");
}

void test_sum_squares(Device& d, std::mt19937& rng) {
    Keep k{d, {}};
    const int64_t sizes[] = {0, 1, 3, 1000, 4096, 4097, 1000003, 5000000};
    std::vector<GradSpan> spans;
    double ref = 0;
    for (int64_t n : sizes) {
        const auto g = random_f32(rng, n, 0.1f);
        for (float x : g) ref += static_cast<double>(x) * x;
        spans.push_back({n ? k.up(g) : nullptr, n});
    }
    DeviceBuffer scratch;
    const double a = sum_squares(d, spans.data(), static_cast<int64_t>(spans.size()), scratch);
    const double b = sum_squares(d, spans.data(), static_cast<int64_t>(spans.size()), scratch);
    const double none = sum_squares(d, spans.data(), 1, scratch);  // one empty span
    std::printf("sum_squares %zu spans: rel err %.2e, repeat %s\n", spans.size(), std::fabs(a - ref) / ref,
                a == b ? "bitwise" : "DIFFERS");
    // Both are double sums of n = 6e6 positive terms: each within (n - 1) 2^-53 of the exact sum.
    EXPECT(std::fabs(a - ref) <= 2e-9 * ref, "double sums of float32 squares");
    EXPECT(a == b, "sum_squares is not repeatable");
    EXPECT(none == 0.0, "an empty span sums to 0");
}

void test_small_ops(Device& d) {
    Keep k{d, {}};
    float* buf = k.zeros<float>(1000);
    fill_f32(d, buf, 999, 2.5f);
    const auto f = download<float>(buf, 1000);
    bool ok = f[999] == 0.0f;
    for (int i = 0; i < 999; ++i) ok &= f[i] == 2.5f;
    EXPECT(ok, "fill_f32 writes exactly n values");

    const std::vector<float> ce{123.25f}, stats{0.5f, 0.2f, 0.25f, 0.3f, 0.125f, 0.1f};
    float* loss = k.zeros<float>(2);
    loss_finish(d, k.up(ce), k.up(stats), 3, 50, loss);
    const auto l = download<float>(loss, 2);
    const double ce_mean = 123.25 / 50;
    double total = ce_mean;  // the kernel's order
    for (int i = 0; i < 3; ++i) total += stats[2 * i];
    EXPECT(l[0] == static_cast<float>(total) && l[1] == static_cast<float>(ce_mean),
           "loss_finish: got %.9g %.9g", l[0], l[1]);

    const std::vector<int32_t> counts{3, 0, 7, 1};
    float* rf = k.zeros<float>(1);
    routed_fraction(d, k.up(counts), 4, 9, rf);
    EXPECT(download<float>(rf, 1)[0] == static_cast<float>(11.0 / 36.0), "routed_fraction = sum(counts) / (B S)");

    // noise_free_fraction (router bias control's measure): l > 0 strictly, so 0, -0 and negatives do
    // not count and the smallest denormal does; more rows than the block's 256 threads, a ragged end.
    std::vector<float> logits(100003);
    std::mt19937 rng(99);
    std::normal_distribution<float> normal(-0.8f, 1.0f);
    for (float& v : logits) v = normal(rng);
    logits[0] = 0.0f;
    logits[1] = -0.0f;
    logits[2] = 1e-45f;
    logits[3] = -1e-45f;
    logits[100002] = 3.0f;
    long long positive = 0;
    for (float v : logits) positive += v > 0.0f ? 1 : 0;
    float* nf = k.zeros<float>(1);
    noise_free_fraction(d, k.up(logits), static_cast<int64_t>(logits.size()), nf);
    const float got = download<float>(nf, 1)[0];
    const float want = static_cast<float>(static_cast<double>(positive) / static_cast<double>(logits.size()));
    EXPECT(got == want, "noise_free_fraction = count(l > 0) / N: got %.9g, want %.9g (%lld of %zu)",
           static_cast<double>(got), static_cast<double>(want), positive, logits.size());
}

}  // namespace

int main() {
    return run_on_device([](Device& d) {
        std::mt19937 rng(4321);
        test_embedding_forward(d, rng, 1000, 72, 5000);  // 16-byte rows
        test_embedding_forward(d, rng, 97, 13, 333);     // element by element

        std::vector<int32_t> t;
        t.assign(10000, 5);  // one run across all 157 chunks
        test_embedding_backward(d, rng, "one token", 256, 40, t);
        // Sorted: token 1 rows [0, 32), 3 [32, 96) (crosses the 64 edge), 9 [96, 128) (ends on an edge),
        // 200 [128, 256) (starts on an edge, fills two chunks, ends at N).
        t.resize(256);
        for (int i = 0; i < 256; ++i) t[i] = i < 64 ? 3 : i < 96 ? 9 : i < 128 ? 1 : 200;
        test_embedding_backward(d, rng, "runs on chunk edges", 256, 136, t);
        t.assign(1, 255);
        test_embedding_backward(d, rng, "one row", 256, 8, t);
        t.resize(100000);  // byte-like skew: 40% one token, the rest uniform over 65536
        for (auto& x : t) x = rng() % 5 < 2 ? 4242 : static_cast<int32_t>(rng() % 65536);
        test_embedding_backward(d, rng, "skewed, V 65536", 65536, 40, t);
        for (auto& x : t) x = static_cast<int32_t>(rng() % 7);  // few tokens, each spanning chunks
        test_embedding_backward(d, rng, "7 tokens", 7, 64, t);

        test_cross_entropy(d, rng, 333, 97, 40, true, true);     // warp per row, ragged last block
        test_cross_entropy(d, rng, 4000, 5000, 64, true, true);    // block per row, chunks 3328 + 672
        test_cross_entropy(d, rng, 7000, 5000, 64, false, false);  // loss only, chunks 3328 + 3328 + 344
        test_cross_entropy(d, rng, 600, 65536, 16, false, true);   // chunks 256 + 256 + 88
        test_final_norm_backward(d, rng, 100, 72);
        test_final_norm_backward(d, rng, 37, 13);
        test_adamw(d, rng, 100003, 0.1f);
        test_adamw(d, rng, 1000, 0.0f);
        test_sum_squares(d, rng);
        test_small_ops(d);
    });
}
