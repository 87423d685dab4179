#include <cmath>

#include "ops.h"

namespace hspmn::cpu {

void rope_table(int64_t S, int64_t Dh, float base, float* cos_out, float* sin_out) {
    const int64_t half = Dh / 2;
    for (int64_t i = 0; i < half; ++i) {
        const double inv_freq = std::pow(static_cast<double>(base), -2.0 * static_cast<double>(i) / static_cast<double>(Dh));
        for (int64_t p = 0; p < S; ++p) {
            const double angle = static_cast<double>(p) * inv_freq;
            cos_out[p * half + i] = static_cast<float>(std::cos(angle));
            sin_out[p * half + i] = static_cast<float>(std::sin(angle));
        }
    }
}

void rope_rows(const int32_t* pos, int64_t n, int64_t Dh, float base, float* cos_out, float* sin_out) {
    const int64_t half = Dh / 2;
    for (int64_t i = 0; i < half; ++i) {
        const double inv_freq = std::pow(static_cast<double>(base), -2.0 * static_cast<double>(i) / static_cast<double>(Dh));
        for (int64_t r = 0; r < n; ++r) {
            const double angle = static_cast<double>(pos[r]) * inv_freq;
            cos_out[r * half + i] = static_cast<float>(std::cos(angle));
            sin_out[r * half + i] = static_cast<float>(std::sin(angle));
        }
    }
}

namespace {

// sign = +1 rotates by +angle (forward), -1 by -angle (the transpose, for backward).
void rope_apply(ThreadPool& pool, float* x, int64_t R, int64_t heads, int64_t Dh, const int32_t* pos,
                const float* cos_t, const float* sin_t, float sign) {
    const int64_t half = Dh / 2;
    pool.parallel_for(R, 64, [&](int64_t begin, int64_t end, int) {
        for (int64_t r = begin; r < end; ++r) {
            const float* c = cos_t + static_cast<int64_t>(pos[r]) * half;
            const float* s = sin_t + static_cast<int64_t>(pos[r]) * half;
            for (int64_t h = 0; h < heads; ++h) {
                float* x1 = x + r * heads * Dh + h * Dh;
                float* x2 = x1 + half;
                for (int64_t i = 0; i < half; ++i) {
                    const float a = x1[i], b = x2[i], si = sign * s[i];
                    x1[i] = a * c[i] - b * si;
                    x2[i] = b * c[i] + a * si;
                }
            }
        }
    });
}

}  // namespace

void rope_forward(ThreadPool& pool, float* x, int64_t R, int64_t heads, int64_t Dh, const int32_t* pos,
                  const float* cos_t, const float* sin_t) {
    rope_apply(pool, x, R, heads, Dh, pos, cos_t, sin_t, 1.0f);
}

void rope_backward(ThreadPool& pool, float* dx, int64_t R, int64_t heads, int64_t Dh, const int32_t* pos,
                   const float* cos_t, const float* sin_t) {
    rope_apply(pool, dx, R, heads, Dh, pos, cos_t, sin_t, -1.0f);
}

}  // namespace hspmn::cpu
