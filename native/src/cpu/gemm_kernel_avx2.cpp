// AVX2+FMA micro-kernel: 6x16 tile, 12 ymm accumulators. This file alone is compiled with
// -mavx2 -mfma and is called only after a CPUID check, so it includes nothing but the intrinsics
// (always-inline) and defines nothing inline: no AVX code can leak into shared template instances.
#include <immintrin.h>

#include "gemm_kernel.h"

namespace hspmn::cpu {
namespace {

constexpr int MR = 6, NR = 16;

void kernel_6x16(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int m, int n, bool accumulate) {
    __m256 acc[MR][2];
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; ++k) {
        __m256 b0 = _mm256_loadu_ps(b + k * NR);
        __m256 b1 = _mm256_loadu_ps(b + k * NR + 8);
        const float* ak = a + k * MR;
        for (int i = 0; i < MR; ++i) {
            __m256 ai = _mm256_broadcast_ss(ak + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    if (m == MR && n == NR) {
        for (int i = 0; i < MR; ++i) {
            float* ci = c + i * ldc;
            if (accumulate) {
                acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_loadu_ps(ci));
                acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_loadu_ps(ci + 8));
            }
            _mm256_storeu_ps(ci, acc[i][0]);
            _mm256_storeu_ps(ci + 8, acc[i][1]);
        }
        return;
    }
    for (int i = 0; i < m; ++i) {
        float row[NR];
        _mm256_storeu_ps(row, acc[i][0]);
        _mm256_storeu_ps(row + 8, acc[i][1]);
        float* ci = c + i * ldc;
        if (accumulate)
            for (int j = 0; j < n; ++j) ci[j] += row[j];
        else
            for (int j = 0; j < n; ++j) ci[j] = row[j];
    }
}

}  // namespace

const MicroKernel kAvx2Kernel = {MR, NR, kernel_6x16, "avx2 6x16"};

}  // namespace hspmn::cpu
