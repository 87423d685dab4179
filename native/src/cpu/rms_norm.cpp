#include <algorithm>
#include <cmath>

#include "../core/alloc.h"
#include "ops.h"

namespace hspmn::cpu {

namespace {

// rstd of every row of x, then write(i, xi, r) for the row's outputs: the single and the pair forward
// share the sum of squares, so both norms of one x get the same rstd bit for bit.
template <class Write>
void norm_rows(ThreadPool& pool, const float* x, float eps, int64_t N, int64_t D, float* rstd, Write write) {
    pool.parallel_for(N, 16, [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i) {
            const float* xi = x + i * D;
            const float r = 1.0f / std::sqrt(dot_f32(xi, xi, D) / static_cast<float>(D) + eps);
            rstd[i] = r;
            write(i, xi, r);
        }
    });
}

}  // namespace

void rms_norm_forward(ThreadPool& pool, const float* x, const float* w, float eps, int64_t N, int64_t D, float* y,
                      float* rstd) {
    norm_rows(pool, x, eps, N, D, rstd, [&](int64_t i, const float* xi, float r) {
        float* yi = y + i * D;
        for (int64_t d = 0; d < D; ++d) yi[d] = xi[d] * r * w[d];
    });
}

void rms_norm_pair_forward(ThreadPool& pool, const float* x, const float* w_h, const float* w_a, float eps, int64_t N,
                           int64_t D, float* h, float* a, float* rstd) {
    norm_rows(pool, x, eps, N, D, rstd, [&](int64_t i, const float* xi, float r) {
        float* hi = h + i * D;
        float* ai = a + i * D;
        for (int64_t d = 0; d < D; ++d) {
            hi[d] = xi[d] * r * w_h[d];
            ai[d] = xi[d] * r * w_a[d];
        }
    });
}

void rms_norm_backward(ThreadPool& pool, const float* x, const float* w, const float* rstd, const float* dy,
                       int64_t N, int64_t D, float* dx, float* dw) {
    // dw is a sum over rows: one partial sum per fixed chunk of rows, added in chunk order, so the
    // result depends neither on scheduling nor on the thread count.
    constexpr int64_t grain = 64;
    const int64_t chunks = (N + grain - 1) / grain;
    Buffer<float> part(static_cast<std::size_t>(chunks * D));
    part.fill(0.0f);
    pool.parallel_for(N, grain, [&](int64_t begin, int64_t end, int) {
        float* pw = part.data() + (begin / grain) * D;
        for (int64_t i = begin; i < end; ++i) {
            const float* xi = x + i * D;
            const float* gi = dy + i * D;
            const float r = rstd[i];
            // xhat = x r; dxhat = dy w; dx = r (dxhat - xhat mean(dxhat xhat))
            float s = 0.0f;
            for (int64_t d = 0; d < D; ++d) {
                s += gi[d] * w[d] * xi[d];
                pw[d] += gi[d] * xi[d] * r;
            }
            const float c = s * r * r / static_cast<float>(D);
            float* dxi = dx + i * D;
            for (int64_t d = 0; d < D; ++d) dxi[d] += r * (gi[d] * w[d] - xi[d] * c);
        }
    });
    for (int64_t c = 0; c < chunks; ++c)
        for (int64_t d = 0; d < D; ++d) dw[d] += part[c * D + d];
}

// The two single passes: the pair's contract is their result bit for bit (the CUDA kernel is the one
// that saves a read of x).
void rms_norm_pair_backward(ThreadPool& pool, const float* x, const float* w_a, const float* w_h, const float* rstd,
                            const float* dy_a, const float* dy_h, int64_t N, int64_t D, float* dx, float* dw_a,
                            float* dw_h) {
    rms_norm_backward(pool, x, w_a, rstd, dy_a, N, D, dx, dw_a);
    rms_norm_backward(pool, x, w_h, rstd, dy_h, N, D, dx, dw_h);
}

}  // namespace hspmn::cpu
