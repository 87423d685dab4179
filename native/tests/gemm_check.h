// gemm (src/cuda/gemm.cpp) against a float64 host product: what hspmn_cuda and gemm_search_cuda share.
#pragma once

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "../src/core/bf16.h"
#include "../src/cuda/device.h"
#include "../src/cuda/runtime.h"
#include "cuda_check.h"

namespace hspmn::cuda {

// C[M, N] = op(A) op(B) (+ C when accumulating), row-major, padded leading dimensions, against a
// float64 host product; returns C as gemm left it (rows of ldc, as float) for bitwise comparisons.
inline std::vector<float> test_gemm(Device& d, std::mt19937& rng, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
                                    DType ct, bool accumulate) {
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
    return got;
}

}  // namespace hspmn::cuda
