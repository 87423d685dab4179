// aux_loss forward/backward: one 1024-thread block sums p and the entropy over all N tokens in f64
// (N is a few hundred thousand at most per block call; one pass is cheaper than a second launch).
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ double softplus(double x) { return (x > 0 ? x : 0.0) + log1p(exp(-fabs(x))); }
__device__ __forceinline__ double sigmoid(double x) {
    return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

// l: [N] f32  aux: [1] f32.  One block.
__global__ void __launch_bounds__(kThreads) aux_loss_forward_kernel(const float* __restrict__ l, int64_t N,
                                                                    float target, float lambda_s, float lambda_e,
                                                                    float* aux) {
    __shared__ double scratch[32];
    double sum_p = 0.0, sum_h = 0.0;
    for (int64_t i = threadIdx.x; i < N; i += kThreads) {
        const double li = l[i], p = sigmoid(li);
        sum_p += p;
        sum_h += p * softplus(-li) + (1.0 - p) * softplus(li);
    }
    sum_p = kern::block_sum(sum_p, scratch);
    sum_h = kern::block_sum(sum_h, scratch);
    if (threadIdx.x == 0) {
        const double dev = sum_p / static_cast<double>(N) - static_cast<double>(target);
        aux[0] = static_cast<float>(static_cast<double>(lambda_s) * dev * dev +
                                    static_cast<double>(lambda_e) * sum_h / static_cast<double>(N));
    }
}

// dl[i] = d_aux (2 lambda_s dev / N - lambda_e l / N) p(1-p), p(1-p) as e/(1+e)^2.  dl: [N] f32 (overwritten)
__global__ void __launch_bounds__(kThreads) aux_loss_backward_kernel(const float* __restrict__ l, int64_t N,
                                                                     float target, float lambda_s, float lambda_e,
                                                                     const float* __restrict__ d_aux,
                                                                     float* __restrict__ dl) {
    __shared__ double scratch[32];
    double sum_p = 0.0;
    for (int64_t i = threadIdx.x; i < N; i += kThreads) sum_p += sigmoid(l[i]);
    sum_p = kern::block_sum(sum_p, scratch);
    const double inv_n = 1.0 / static_cast<double>(N);
    const double dev = sum_p * inv_n - static_cast<double>(target);
    const double g_aux = d_aux ? static_cast<double>(*d_aux) : 0.0;
    for (int64_t i = threadIdx.x; i < N; i += kThreads) {
        const double li = l[i], e = exp(-fabs(li)), dp = e / ((1.0 + e) * (1.0 + e));
        const double g = 2.0 * static_cast<double>(lambda_s) * dev * inv_n * dp -
                         static_cast<double>(lambda_e) * inv_n * li * dp;
        dl[i] = static_cast<float>(g_aux * g);
    }
}

}  // namespace

void aux_loss_forward(Device& d, const float* l, int64_t N, float target, float lambda_s, float lambda_e, float* aux) {
    aux_loss_forward_kernel<<<1, kThreads, 0, stream(d)>>>(l, N, target, lambda_s, lambda_e, aux);
    check_launch("aux_loss_forward");
}

void aux_loss_backward(Device& d, const float* l, int64_t N, float target, float lambda_s, float lambda_e,
                       const float* d_aux, float* dl) {
    aux_loss_backward_kernel<<<1, kThreads, 0, stream(d)>>>(l, N, target, lambda_s, lambda_e, d_aux, dl);
    check_launch("aux_loss_backward");
}

}  // namespace hspmn::cuda
