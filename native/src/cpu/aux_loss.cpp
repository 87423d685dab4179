#include <cmath>

#include "ops.h"

namespace hspmn::cpu {

namespace {

double softplus(double x) { return (x > 0 ? x : 0.0) + std::log1p(std::exp(-std::fabs(x))); }
double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }

}  // namespace

// Entropy as p softplus(-l) + (1-p) softplus(l): -p ln p - (1-p) ln(1-p) without 0 * inf (README).
float aux_loss_forward(const float* l, int64_t N, float target, float lambda_s, float lambda_e) {
    double sum_p = 0.0, sum_h = 0.0;
    for (int64_t i = 0; i < N; ++i) {
        const double li = l[i], p = sigmoid(li);
        sum_p += p;
        sum_h += p * softplus(-li) + (1.0 - p) * softplus(li);
    }
    const double mean_p = sum_p / static_cast<double>(N), dev = mean_p - static_cast<double>(target);
    return static_cast<float>(static_cast<double>(lambda_s) * dev * dev +
                              static_cast<double>(lambda_e) * sum_h / static_cast<double>(N));
}

void aux_loss_backward(const float* l, int64_t N, float target, float lambda_s, float lambda_e, float d_aux,
                       float* dl) {
    double sum_p = 0.0;
    for (int64_t i = 0; i < N; ++i) sum_p += sigmoid(l[i]);
    const double inv_n = 1.0 / static_cast<double>(N);
    const double dev = sum_p * inv_n - static_cast<double>(target);
    for (int64_t i = 0; i < N; ++i) {
        // p (1 - p) as e / (1 + e)^2: 1 - p cancels once p rounds near 1.
        const double li = l[i], e = std::exp(-std::fabs(li)), dp = e / ((1.0 + e) * (1.0 + e));
        // d/dl of the entropy form is p(1-p)(softplus(-l) - softplus(l)) = -l p(1-p)
        const double g = 2.0 * static_cast<double>(lambda_s) * dev * inv_n * dp -
                         static_cast<double>(lambda_e) * inv_n * li * dp;
        dl[i] += static_cast<float>(static_cast<double>(d_aux) * g);
    }
}

}  // namespace hspmn::cpu
