#include <cstring>

#include "../core/bf16.h"
#include "ops.h"

namespace hspmn::cpu {

void embedding_forward(ThreadPool& pool, const uint16_t* table, const int32_t* tokens, int64_t N, int64_t D,
                       uint16_t* x) {
    pool.parallel_for(N, 256, [&](int64_t r0, int64_t r1, int) {
        for (int64_t r = r0; r < r1; ++r)
            std::memcpy(x + r * D, table + static_cast<int64_t>(tokens[r]) * D, static_cast<std::size_t>(D) * 2);
    });
}

void embedding_backward(ThreadPool& pool, const uint16_t* dx, const int32_t* tokens, int64_t N, int64_t D,
                        float* d_table) {
    // Threads own column ranges and every thread walks the rows in order, so the sum into a row that
    // many tokens hit is the same for any thread count (bitwise resume depends on it).
    pool.parallel_for(D, 64, [&](int64_t c0, int64_t c1, int) {
        for (int64_t r = 0; r < N; ++r) {
            float* dst = d_table + static_cast<int64_t>(tokens[r]) * D;
            const uint16_t* src = dx + r * D;
            for (int64_t c = c0; c < c1; ++c) dst[c] += bf16_to_f32(src[c]);
        }
    });
}

}  // namespace hspmn::cpu
