// Rows in chunks: only a [chunk, V] block of logits exists at a time (the point of fusing the loss
// with the tied head), and each chunk's gradient is folded into dh and d_table before the next.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/alloc.h"
#include "gemm.h"
#include "ops.h"

namespace hspmn::cpu {

namespace {
constexpr int64_t kChunkRows = 256;
}

double cross_entropy_fused(ThreadPool& pool, const float* h, const float* table, const int32_t* targets, int64_t N,
                           int64_t V, int64_t D, float grad_scale, float* dh, float* d_table) {
    const int64_t chunk = std::min<int64_t>(kChunkRows, N);
    Buffer<float> z(static_cast<std::size_t>(chunk * V));
    Buffer<double> row_loss(static_cast<std::size_t>(chunk));
    const bool want_grad = dh != nullptr || d_table != nullptr;
    double total = 0.0;
    for (int64_t r0 = 0; r0 < N; r0 += chunk) {
        const int64_t rows = std::min(chunk, N - r0);
        const float* hc = h + r0 * D;
        linear_forward(pool, hc, table, z.data(), rows, D, V);
        pool.parallel_for(rows, 16, [&](int64_t i0, int64_t i1, int) {
            for (int64_t i = i0; i < i1; ++i) {
                float* zi = z.data() + i * V;
                float mx = zi[0];
                for (int64_t j = 1; j < V; ++j) mx = std::max(mx, zi[j]);
                double se = 0.0;
                for (int64_t j = 0; j < V; ++j) se += std::exp(static_cast<double>(zi[j]) - mx);
                const double lse = mx + std::log(se);
                const int32_t t = targets[r0 + i];
                row_loss[i] = lse - zi[t];
                if (!want_grad) continue;
                for (int64_t j = 0; j < V; ++j)
                    zi[j] = static_cast<float>(std::exp(static_cast<double>(zi[j]) - lse)) * grad_scale;
                zi[t] -= grad_scale;
            }
        });
        for (int64_t i = 0; i < rows; ++i) total += row_loss[i];  // fixed order: thread-count independent
        if (dh) linear_backward_input(pool, z.data(), table, dh + r0 * D, rows, D, V);
        if (d_table) linear_backward_weight(pool, z.data(), hc, d_table, rows, D, V, true);
    }
    return total;
}

}  // namespace hspmn::cpu
