// dot/axpy with independent partial sums so the compiler can vectorise a float reduction without
// -ffast-math (which would license reassociation everywhere else too).
#include "ops.h"

namespace hspmn::cpu {

float dot_f32(const float* a, const float* b, int64_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}

void axpy_f32(float alpha, const float* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace hspmn::cpu

namespace hspmn::cpu {

double sum_squares_f32(const float* a, int64_t n) {
    double acc[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; ++j) acc[j] += static_cast<double>(a[i + j]) * a[i + j];
    double s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for (; i < n; ++i) s += static_cast<double>(a[i]) * a[i];
    return s;
}

}  // namespace hspmn::cpu
