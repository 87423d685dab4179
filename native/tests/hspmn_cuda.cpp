// The CUDA runtime pieces on a real device: cuBLASLt gemm against a float64 host product for odd
// shapes, every transpose and both output types, and the embedded Triton attention (forward and
// backward) against a float64 host reference. Without a device it prints "skipped: no device" and
// exits 0 (CI builds CUDA on machines without a GPU).
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
#include "../src/cuda/runtime.h"

using namespace hspmn;
using namespace hspmn::cuda;

static int g_failures = 0;

#define EXPECT(cond, ...)                                          \
    do {                                                           \
        if (!(cond)) {                                             \
            ++g_failures;                                          \
            std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            std::printf(__VA_ARGS__);                              \
            std::printf("\n");                                     \
        }                                                          \
    } while (0)

static std::vector<uint16_t> random_bf16(std::mt19937& rng, std::size_t n) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<uint16_t> v(n);
    for (auto& x : v) x = f32_to_bf16(dist(rng));
    return v;
}

template <class T>
static T* upload(Device& d, const std::vector<T>& host, std::vector<DeviceBuffer>& keep) {
    keep.emplace_back(d, host.size() * sizeof(T));
    check(cudaMemcpy(keep.back().data(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
    return keep.back().as<T>();
}

template <class T>
static std::vector<T> download(const void* p, std::size_t n) {
    std::vector<T> v(n);
    check(cudaDeviceSynchronize(), "sync");
    check(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return v;
}

// C[M, N] = op(A) op(B) (+ C when accumulating), row-major, padded leading dimensions.
static void test_gemm(Device& d, std::mt19937& rng, int64_t M, int64_t N, int64_t K, bool ta, bool tb, DType ct,
                      bool accumulate) {
    const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
    const int64_t lda = a_cols + 3, ldb = b_cols + 5, ldc = N + 1;  // odd strides: no hidden packing assumption
    std::vector<uint16_t> A = random_bf16(rng, static_cast<std::size_t>(a_rows * lda));
    std::vector<uint16_t> B = random_bf16(rng, static_cast<std::size_t>(b_rows * ldb));
    std::vector<float> C0(static_cast<std::size_t>(M * ldc));
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (auto& x : C0) x = bf16_to_f32(f32_to_bf16(dist(rng)));  // representable in both output types
    std::vector<DeviceBuffer> keep;
    auto* dA = upload(d, A, keep);
    auto* dB = upload(d, B, keep);
    void* dC;
    if (ct == DType::F32) {
        dC = upload(d, C0, keep);
    } else {
        std::vector<uint16_t> c16(C0.size());
        for (std::size_t i = 0; i < c16.size(); ++i) c16[i] = f32_to_bf16(C0[i]);
        dC = upload(d, c16, keep);
    }
    gemm(d, ta, tb, M, N, K, 1.0f, reinterpret_cast<const __nv_bfloat16*>(dA), lda,
         reinterpret_cast<const __nv_bfloat16*>(dB), ldb, accumulate ? 1.0f : 0.0f, dC, ct, ldc);
    std::vector<float> got(C0.size());
    if (ct == DType::F32) {
        got = download<float>(dC, C0.size());
    } else {
        auto g16 = download<uint16_t>(dC, C0.size());
        for (std::size_t i = 0; i < got.size(); ++i) got[i] = bf16_to_f32(g16[i]);
    }
    double worst = 0;
    bool padding_kept = true;
    for (int64_t i = 0; i < M; ++i) {
        for (int64_t j = 0; j < N; ++j) {
            double ref = accumulate ? C0[i * ldc + j] : 0.0, mag = std::fabs(ref);
            for (int64_t k = 0; k < K; ++k) {
                double a = bf16_to_f32(ta ? A[k * lda + i] : A[i * lda + k]);
                double b = bf16_to_f32(tb ? B[j * ldb + k] : B[k * ldb + j]);
                ref += a * b;
                mag += std::fabs(a * b);
            }
            // fp32 accumulation: at most K float roundings of the running magnitude (2x margin).
            // A bf16 output adds one rounding, half a bf16 ulp (2^-8 relative): gemm restricts
            // split-K to float32 partials (bf16 partials passed half an ulp: BENCHMARKS.md).
            double bound = 2.0 * K * std::ldexp(mag, -24) + (ct == DType::BF16 ? std::ldexp(std::fabs(ref), -8) : 0.0);
            double err = std::fabs(got[i * ldc + j] - ref);
            worst = std::max(worst, bound > 0 ? err / bound : err);
        }
        for (int64_t j = N; j < ldc; ++j) padding_kept &= got[i * ldc + j] == C0[i * ldc + j] ||
                                                         (ct == DType::BF16 && got[i * ldc + j] == bf16_to_f32(f32_to_bf16(C0[i * ldc + j])));
    }
    std::printf("gemm M=%lld N=%lld K=%lld ta=%d tb=%d C=%s beta=%d: worst err/bound %.3f\n",
                static_cast<long long>(M), static_cast<long long>(N), static_cast<long long>(K), ta, tb,
                ct == DType::F32 ? "f32" : "bf16", accumulate, worst);
    EXPECT(worst <= 1.0, "error above the fp32-accumulation bound");
    EXPECT(padding_kept, "gemm wrote past N into the row padding");
}

// sqdk_attention forward + backward against float64 on the host (the math of
// native/kernels/triton/README.md), ragged counts, GQA, S not a multiple of any tile.
static void test_attention(Device& d, std::mt19937& rng, int64_t Dh) {
    const int64_t B = 2, C = 150, S = 201, H = 4, Hkv = 2, G = H / Hkv;
    const std::vector<int32_t> counts = {150, 37};
    std::vector<int32_t> pos(static_cast<std::size_t>(B * C), -1);
    for (int64_t b = 0; b < B; ++b) {
        std::vector<int32_t> all(static_cast<std::size_t>(S));
        for (int64_t s = 0; s < S; ++s) all[s] = static_cast<int32_t>(s);
        std::shuffle(all.begin(), all.end(), rng);
        std::sort(all.begin(), all.begin() + counts[b]);
        for (int64_t c = 0; c < counts[b]; ++c) pos[b * C + c] = all[c];
    }
    auto q = random_bf16(rng, B * C * H * Dh), k = random_bf16(rng, B * S * Hkv * Dh),
         v = random_bf16(rng, B * S * Hkv * Dh), dout = random_bf16(rng, B * C * H * Dh);
    std::vector<DeviceBuffer> keep;
    auto* dq_in = reinterpret_cast<__nv_bfloat16*>(upload(d, q, keep));
    auto* dk_in = reinterpret_cast<__nv_bfloat16*>(upload(d, k, keep));
    auto* dv_in = reinterpret_cast<__nv_bfloat16*>(upload(d, v, keep));
    auto* ddo = reinterpret_cast<__nv_bfloat16*>(upload(d, dout, keep));
    auto* dpos = upload(d, pos, keep);
    auto* dcounts = upload(d, counts, keep);
    keep.emplace_back(d, B * C * H * Dh * 2);
    auto* o = keep.back().as<__nv_bfloat16>();
    keep.emplace_back(d, B * H * C * 4);
    auto* lse = keep.back().as<float>();
    keep.emplace_back(d, B * C * H * Dh * 2);
    auto* gq = keep.back().as<__nv_bfloat16>();
    keep.emplace_back(d, B * S * Hkv * Dh * 2);
    auto* gk = keep.back().as<__nv_bfloat16>();
    keep.emplace_back(d, B * S * Hkv * Dh * 2);
    auto* gv = keep.back().as<__nv_bfloat16>();
    AttentionShape shape{B, C, S, H, Hkv, Dh};
    sqdk_attention_forward(d, shape, dq_in, dpos, dcounts, dk_in, dv_in, o, lse);
    sqdk_attention_backward(d, shape, dq_in, dpos, dcounts, dk_in, dv_in, o, lse, ddo, gq, gk, gv);
    auto o_got = download<uint16_t>(o, B * C * H * Dh);
    auto lse_got = download<float>(lse, B * H * C);
    auto gq_got = download<uint16_t>(gq, B * C * H * Dh);
    auto gk_got = download<uint16_t>(gk, B * S * Hkv * Dh);
    auto gv_got = download<uint16_t>(gv, B * S * Hkv * Dh);

    const double scale = 1.0 / std::sqrt(static_cast<double>(Dh));
    auto at = [&](const std::vector<uint16_t>& t, std::size_t i) { return static_cast<double>(bf16_to_f32(t[i])); };
    std::vector<double> o_ref(q.size(), 0.0), lse_ref(B * H * C, 0.0), gq_ref(q.size(), 0.0), gk_ref(k.size(), 0.0),
        gv_ref(v.size(), 0.0);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < counts[b]; ++c)
            for (int64_t h = 0; h < H; ++h) {
                const int64_t kh = h / G, n = pos[b * C + c] + 1;
                const std::size_t qi = ((b * C + c) * H + h) * Dh;
                std::vector<double> p(n);
                double mx = -1e300;
                for (int64_t s = 0; s < n; ++s) {
                    double dot = 0;
                    for (int64_t e = 0; e < Dh; ++e) dot += at(q, qi + e) * at(k, ((b * S + s) * Hkv + kh) * Dh + e);
                    p[s] = dot * scale;
                    mx = std::max(mx, p[s]);
                }
                double sum = 0;
                for (auto& x : p) sum += (x = std::exp(x - mx));
                lse_ref[(b * H + h) * C + c] = mx + std::log(sum);
                for (auto& x : p) x /= sum;
                for (int64_t s = 0; s < n; ++s)
                    for (int64_t e = 0; e < Dh; ++e) o_ref[qi + e] += p[s] * at(v, ((b * S + s) * Hkv + kh) * Dh + e);
                // backward, from the bf16 o the kernels saw (delta = rowsum(dO * O))
                double delta = 0;
                for (int64_t e = 0; e < Dh; ++e) delta += at(dout, qi + e) * at(o_got, qi + e);
                for (int64_t s = 0; s < n; ++s) {
                    const std::size_t ki = ((b * S + s) * Hkv + kh) * Dh;
                    double dp = 0;
                    for (int64_t e = 0; e < Dh; ++e) dp += at(dout, qi + e) * at(v, ki + e);
                    const double ds = p[s] * (dp - delta) * scale;
                    for (int64_t e = 0; e < Dh; ++e) {
                        gq_ref[qi + e] += ds * at(k, ki + e);
                        gk_ref[ki + e] += ds * at(q, qi + e);
                        gv_ref[ki + e] += p[s] * at(dout, qi + e);
                    }
                }
            }
    auto rel = [](const std::vector<uint16_t>& got, const std::vector<double>& ref) {
        double num = 0, den = 0;
        for (std::size_t i = 0; i < ref.size(); ++i) {
            double e = bf16_to_f32(got[i]) - ref[i];
            num += e * e;
            den += ref[i] * ref[i];
        }
        return std::sqrt(num / std::max(den, 1e-300));
    };
    double lse_err = 0;
    bool padding_zero = true;
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
            for (int64_t c = 0; c < C; ++c) {
                const std::size_t i = (b * H + h) * C + c;
                if (c < counts[b]) lse_err = std::max(lse_err, std::fabs(lse_got[i] - lse_ref[i]));
                else padding_zero &= lse_got[i] == 0.0f;
            }
    for (int64_t b = 0; b < B; ++b)
        for (int64_t i = counts[b] * H * Dh; i < C * H * Dh; ++i)
            padding_zero &= o_got[b * C * H * Dh + i] == 0 && gq_got[b * C * H * Dh + i] == 0;
    const double eo = rel(o_got, o_ref), eq = rel(gq_got, gq_ref), ek = rel(gk_got, gk_ref), ev = rel(gv_got, gv_ref);
    std::printf("sqdk_attention Dh=%lld: rel err o %.2e dq %.2e dk %.2e dv %.2e, max |lse err| %.2e\n",
                static_cast<long long>(Dh), eo, eq, ek, ev, lse_err);
    // bf16 inputs are exact in the reference; what remains is bf16 rounding of p before P.V / dS.K
    // inside the kernels (2^-9 relative per element) and of the outputs: MODEL.md's 1e-2 for bf16 paths.
    EXPECT(eo < 1e-2 && eq < 1e-2 && ek < 1e-2 && ev < 1e-2, "attention error above 1e-2");
    EXPECT(lse_err < 1e-3, "lse is float32 all the way");
    EXPECT(padding_zero, "rows past counts[b] must be written as 0");
}

int main() {
    const hspmn_alloc_stats before = stats_snapshot();
    Device* d = nullptr;
    try {
        d = new Device(0);
    } catch (const Error& e) {
        if (e.status == HSPMN_ERR_NO_DEVICE) {
            std::printf("skipped: no device (%s)\n", e.message.c_str());
            return 0;
        }
        std::printf("FAIL: Device(0): %s\n", e.message.c_str());
        return 1;
    }
    try {
        std::printf("device %d: sm_%d, %d SMs\n", d->ordinal, d->arch, d->sm_count);
        std::mt19937 rng(1234);
        const int64_t shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 33, 65}, {129, 67, 255}, {256, 768, 2048}};
        for (const auto& s : shapes)
            for (int t = 0; t < 4; ++t) {
                test_gemm(*d, rng, s[0], s[1], s[2], t & 1, t & 2, DType::F32, false);
                test_gemm(*d, rng, s[0], s[1], s[2], t & 1, t & 2, DType::BF16, false);
            }
        test_gemm(*d, rng, 129, 67, 255, false, true, DType::F32, true);  // weight-gradient accumulation
        test_gemm(*d, rng, 40, 24, 0, false, true, DType::F32, false);    // K = 0 zeroes C
        // exact variants (16, 64, 128) and padded ones of each tile width (8, 12, 24, 48, 96)
        for (int64_t dh : {8, 12, 16, 24, 48, 64, 96, 128}) {
            if (!attention_supports_head_dim(dh)) {
                std::printf("sqdk_attention Dh=%lld: not built\n", static_cast<long long>(dh));
                continue;
            }
            test_attention(*d, rng, dh);
        }
        for (int64_t dh : {0, 6, 13, 127, 130, 256})  // odd, or outside 8..128
            EXPECT(!attention_supports_head_dim(dh), "no kernel serves Dh %lld", static_cast<long long>(dh));
        bool threw = false;
        try {
            Device bad(1 << 20);
        } catch (const Error& e) {
            threw = e.status == HSPMN_ERR_INVALID_ARGUMENT;
        }
        EXPECT(threw, "an ordinal past the device count is INVALID_ARGUMENT");
    } catch (const Error& e) {
        std::printf("FAIL: %s (status %d)\n", e.message.c_str(), e.status);
        ++g_failures;
    }
    delete d;
    const hspmn_alloc_stats after = stats_snapshot();
    EXPECT(after.live_bytes == before.live_bytes, "leak: %lld bytes live after the device was destroyed",
           static_cast<long long>(after.live_bytes - before.live_bytes));
    std::printf("%s (%d failure(s))\n", g_failures ? "FAILED" : "ok", g_failures);
    return g_failures ? 1 : 0;
}
