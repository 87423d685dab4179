#include "gemm.h"

#include <algorithm>
#include <cstring>

#include "../core/alloc.h"

namespace hspmn::cpu {
namespace {

// Tile sizes, in one place. KC x NR of B (16 KiB for NR = 16) stays in L1 while a kernel streams an
// MR-row panel of A; the MC x KC block of A (96 KiB) stays in L2 across all of a tile's columns.
constexpr int64_t KC = 256;
constexpr int64_t MC_PANELS = 16;  // MC = 16 * MR
constexpr int64_t NC = 512;

void pack_a(const float* A, int64_t lda, bool trans, int64_t i0, int64_t m, int64_t k0, int64_t kc, int mr,
            float* dst) {
    for (int64_t p = 0; p < m; p += mr) {
        float* panel = dst + p * kc;
        const int64_t rows = std::min<int64_t>(mr, m - p);
        if (!trans) {
            for (int64_t ii = 0; ii < rows; ++ii) {
                const float* src = A + (i0 + p + ii) * lda + k0;
                for (int64_t k = 0; k < kc; ++k) panel[k * mr + ii] = src[k];
            }
        } else {
            for (int64_t k = 0; k < kc; ++k) {
                const float* src = A + (k0 + k) * lda + i0 + p;
                for (int64_t ii = 0; ii < rows; ++ii) panel[k * mr + ii] = src[ii];
            }
        }
        for (int64_t ii = rows; ii < mr; ++ii)
            for (int64_t k = 0; k < kc; ++k) panel[k * mr + ii] = 0.0f;
    }
}

void pack_b_panel(const float* B, int64_t ldb, bool trans, int64_t j0, int64_t n, int64_t k0, int64_t kc, int nr,
                  float* panel) {
    const int64_t cols = std::min<int64_t>(nr, n - j0);
    if (trans) {
        for (int64_t jj = 0; jj < cols; ++jj) {
            const float* src = B + (j0 + jj) * ldb + k0;
            for (int64_t k = 0; k < kc; ++k) panel[k * nr + jj] = src[k];
        }
    } else {
        for (int64_t k = 0; k < kc; ++k) {
            const float* src = B + (k0 + k) * ldb + j0;
            for (int64_t jj = 0; jj < cols; ++jj) panel[k * nr + jj] = src[jj];
        }
    }
    for (int64_t jj = cols; jj < nr; ++jj)
        for (int64_t k = 0; k < kc; ++k) panel[k * nr + jj] = 0.0f;
}

#if defined(HSPMN_GEMM_AVX2)
bool cpu_has_avx2_fma() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

}  // namespace

const MicroKernel& gemm_kernel() {
#if defined(HSPMN_GEMM_AVX2)
    static const MicroKernel& k = cpu_has_avx2_fma() ? kAvx2Kernel : kGenericKernel;
    return k;
#else
    return kGenericKernel;
#endif
}

void gemm(ThreadPool& pool, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
          int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (!accumulate)
            for (int64_t i = 0; i < M; ++i) std::memset(C + i * ldc, 0, static_cast<std::size_t>(N) * sizeof(float));
        return;
    }
    const MicroKernel& uk = gemm_kernel();
    const int64_t mr = uk.mr, nr = uk.nr, mc = MC_PANELS * mr;
    const int64_t n_panels = (N + nr - 1) / nr;
    const int64_t kc_max = std::min(K, KC);
    Buffer<float> packed_b(static_cast<std::size_t>(n_panels * nr * kc_max));
    const int threads = pool.size();
    const int64_t a_block = mc * kc_max;
    Buffer<float> packed_a(static_cast<std::size_t>(a_block * threads));

    const int64_t m_tiles = (M + mc - 1) / mc, n_tiles = (N + NC - 1) / NC;
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
        const int64_t kc = std::min(KC, K - k0);
        const bool acc = accumulate || k0 > 0;
        float* pb = packed_b.data();
        pool.parallel_for(n_panels, 8, [&](int64_t begin, int64_t end, int) {
            for (int64_t p = begin; p < end; ++p) pack_b_panel(B, ldb, trans_b, p * nr, N, k0, kc, static_cast<int>(nr), pb + p * nr * kc);
        });
        pool.parallel_for(m_tiles * n_tiles, 1, [&](int64_t begin, int64_t end, int worker) {
            float* pa = packed_a.data() + a_block * worker;
            for (int64_t t = begin; t < end; ++t) {
                const int64_t it = t / n_tiles, jt = t % n_tiles;
                const int64_t i0 = it * mc, m = std::min(mc, M - i0);
                const int64_t j0 = jt * NC, n = std::min(NC, N - j0);
                pack_a(A, lda, trans_a, i0, m, k0, kc, static_cast<int>(mr), pa);
                for (int64_t j = 0; j < n; j += nr) {
                    const float* bpanel = pb + ((j0 + j) / nr) * nr * kc;
                    const int nn = static_cast<int>(std::min(nr, n - j));
                    for (int64_t i = 0; i < m; i += mr) {
                        const int mm = static_cast<int>(std::min(mr, m - i));
                        uk.fn(kc, pa + i * kc, bpanel, C + (i0 + i) * ldc + j0 + j, ldc, mm, nn, acc);
                    }
                }
            }
        });
    }
}

}  // namespace hspmn::cpu
