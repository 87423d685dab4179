#include <cstring>

#include "ops.h"

namespace hspmn::cpu {

void gather_rows(ThreadPool& pool, const float* src, int64_t cols, const int64_t* rows, int64_t n, float* dst) {
    pool.parallel_for(n, 64, [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i)
            std::memcpy(dst + i * cols, src + rows[i] * cols, static_cast<std::size_t>(cols) * sizeof(float));
    });
}

void scatter_add_rows(ThreadPool& pool, const float* src, int64_t cols, const int64_t* rows, int64_t n, float* dst) {
    pool.parallel_for(n, 64, [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i) axpy_f32(1.0f, src + i * cols, dst + rows[i] * cols, cols);
    });
}

void gate_scatter_forward(ThreadPool& pool, const float* o, int64_t cols, const int64_t* rows, int64_t n,
                          float* out) {
    // y = 1 - sg(sigma) + sigma is exactly 1 in value; computing it in float could give 1 - ulp.
    scatter_add_rows(pool, o, cols, rows, n, out);
}

void gate_scatter_backward(ThreadPool& pool, const float* o, const float* d_out, int64_t cols, const int64_t* rows,
                           int64_t n, float* d_o, float* dy) {
    pool.parallel_for(n, 64, [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i) {
            const float* g = d_out + rows[i] * cols;
            std::memcpy(d_o + i * cols, g, static_cast<std::size_t>(cols) * sizeof(float));
            dy[i] = dot_f32(g, o + i * cols, cols);
        }
    });
}

}  // namespace hspmn::cpu
