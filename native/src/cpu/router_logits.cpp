#include "ops.h"

namespace hspmn::cpu {

// float64 dot products: l decides routing, so its rounding should not add to the reference's.
void router_logits(ThreadPool& pool, const float* x, const float* w, float b, int64_t N, int64_t D, float* l) {
    pool.parallel_for(N, 64, [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i) {
            const float* xi = x + i * D;
            double acc[4] = {0, 0, 0, 0};
            int64_t d = 0;
            for (; d + 4 <= D; d += 4)
                for (int j = 0; j < 4; ++j) acc[j] += static_cast<double>(xi[d + j]) * static_cast<double>(w[d + j]);
            double s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
            for (; d < D; ++d) s += static_cast<double>(xi[d]) * static_cast<double>(w[d]);
            l[i] = static_cast<float>(s + static_cast<double>(b));
        }
    });
}

float noise_free_fraction(const float* l, int64_t N) {
    int64_t n = 0;
    for (int64_t i = 0; i < N; ++i) n += l[i] > 0.0f ? 1 : 0;
    return static_cast<float>(static_cast<double>(n) / static_cast<double>(N));
}

}  // namespace hspmn::cpu
