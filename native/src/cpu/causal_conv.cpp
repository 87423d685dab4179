#include <algorithm>
#include <cstring>

#include "ops.h"

namespace hspmn::cpu {

// Work is split over channel ranges: channels are independent, so dw needs no reduction across threads.
namespace {
constexpr int64_t kChannelGrain = 64;
}

void causal_conv_forward(ThreadPool& pool, const float* h, const float* w, int64_t B, int64_t S, int64_t D,
                         int64_t K, float* c) {
    pool.parallel_for(D, kChannelGrain, [&](int64_t d0, int64_t d1, int) {
        for (int64_t b = 0; b < B; ++b)
            for (int64_t t = 0; t < S; ++t) {
                float* ct = c + (b * S + t) * D;
                for (int64_t d = d0; d < d1; ++d) ct[d] = 0.0f;
                for (int64_t j = 0; j < K; ++j) {
                    const int64_t src = t - (K - 1) + j;
                    if (src < 0) continue;
                    const float* hs = h + (b * S + src) * D;
                    for (int64_t d = d0; d < d1; ++d) ct[d] += w[d * K + j] * hs[d];
                }
            }
    });
}

void causal_conv_backward(ThreadPool& pool, const float* h, const float* w, const float* dc, int64_t B, int64_t S,
                          int64_t D, int64_t K, float* dh, float* dw) {
    pool.parallel_for(D, kChannelGrain, [&](int64_t d0, int64_t d1, int) {
        for (int64_t b = 0; b < B; ++b)
            for (int64_t s = 0; s < S; ++s) {
                // h[s] fed c[t] for t = s + (K-1) - j, j = 0..K-1
                float* dhs = dh + (b * S + s) * D;
                const float* hs = h + (b * S + s) * D;
                for (int64_t d = d0; d < d1; ++d) dhs[d] = 0.0f;
                for (int64_t j = 0; j < K; ++j) {
                    const int64_t t = s + (K - 1) - j;
                    if (t >= S) continue;
                    const float* dct = dc + (b * S + t) * D;
                    for (int64_t d = d0; d < d1; ++d) {
                        dhs[d] += w[d * K + j] * dct[d];
                        dw[d * K + j] += dct[d] * hs[d];
                    }
                }
            }
    });
}

}  // namespace hspmn::cpu
