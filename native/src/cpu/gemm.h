// Blocked, packed, multithreaded float32 matrix product; the one GEMM every CPU op uses.
#pragma once

#include <cstdint>

#include "gemm_kernel.h"
#include "thread_pool.h"

namespace hspmn::cpu {

// C[M, N] (+)= op(A)[M, K] * op(B)[K, N], row-major with leading dimensions lda/ldb/ldc.
//   op(A)(i, k) = trans_a ? A[k*lda + i] : A[i*lda + k]
//   op(B)(k, j) = trans_b ? B[j*ldb + k] : B[k*ldb + j]
// accumulate = false overwrites C (its old contents may be garbage).
void gemm(ThreadPool& pool, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
          int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate);

// Linear layers with PyTorch's [out, in] weights.
// y: [M, out] (+)= x: [M, in] · wᵀ
inline void linear_forward(ThreadPool& pool, const float* x, const float* w, float* y, int64_t M, int64_t in,
                           int64_t out, bool accumulate = false) {
    gemm(pool, false, true, M, out, in, x, in, w, in, y, out, accumulate);
}
// dx: [M, in] (+)= dy: [M, out] · w
inline void linear_backward_input(ThreadPool& pool, const float* dy, const float* w, float* dx, int64_t M,
                                  int64_t in, int64_t out, bool accumulate = false) {
    gemm(pool, false, false, M, in, out, dy, out, w, in, dx, in, accumulate);
}
// dw: [out, in] (+)= dyᵀ · x
inline void linear_backward_weight(ThreadPool& pool, const float* dy, const float* x, float* dw, int64_t M,
                                   int64_t in, int64_t out, bool accumulate) {
    gemm(pool, true, false, out, in, M, dy, out, x, in, dw, in, accumulate);
}

// The widest kernel the running CPU supports (AVX2+FMA when present, else SSE2 baseline).
const MicroKernel& gemm_kernel();

}  // namespace hspmn::cpu
