#include <cmath>

#include "ops.h"

namespace hspmn::cpu {

namespace {
constexpr int64_t kGrain = 16384;
inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
}  // namespace

void swiglu_forward(ThreadPool& pool, const float* g, const float* u, int64_t n, float* a) {
    pool.parallel_for(n, kGrain, [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i) a[i] = g[i] * sigmoid(g[i]) * u[i];
    });
}

void swiglu_backward(ThreadPool& pool, const float* g, const float* u, const float* da, int64_t n, float* dg,
                     float* du) {
    pool.parallel_for(n, kGrain, [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i) {
            const float s = sigmoid(g[i]);
            const float silu = g[i] * s;
            du[i] = da[i] * silu;
            dg[i] = da[i] * u[i] * (s + silu * (1.0f - s));
        }
    });
}

}  // namespace hspmn::cpu
