// aux_loss forward/backward: the sums of p and of the entropy over all N tokens in f64, as the CPU
// does. Blocks of 256 threads each sum one chunk of the tokens into a pair of f64 partials (the device's
// aux_partials buffer); then one block (forward) or every block (backward, each for its own chunk of dl)
// sums the partials. A single 1024-thread block doing it all took 0.72 ms (forward) and 0.35 ms
// (backward) of a 160 ms training call at N = 262,144 (H100, BENCHMARKS.md 2026-12-07 training
// breakdown): one SM's f64 exp and log1p. The chunks depend on N alone, so the bits do not depend on
// the GPU.
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMinChunk = 2048;

__device__ __forceinline__ double softplus(double x) { return (x > 0 ? x : 0.0) + log1p(exp(-fabs(x))); }
__device__ __forceinline__ double sigmoid(double x) {
    return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

// Tokens per block: at least kMinChunk, and few enough blocks for the partials buffer.
int64_t chunk_for(int64_t N) {
    const int64_t per = (N + kAuxMaxBlocks - 1) / kAuxMaxBlocks;
    return per > kMinChunk ? per : kMinChunk;
}

// One block per chunk of l: part[2 b] = sum of p, part[2 b + 1] = sum of the entropy (kEntropy) or 0.
// l: [N] f32  part: [2 blocks] f64
template <bool kEntropy>
__global__ void __launch_bounds__(kThreads) aux_partials_kernel(const float* __restrict__ l, int64_t N, int64_t chunk,
                                                                double* __restrict__ part) {
    __shared__ double scratch[32];
    const int64_t begin = blockIdx.x * chunk, end = min(N, begin + chunk);
    double sum_p = 0.0, sum_h = 0.0;
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
        const double li = l[i], p = sigmoid(li);
        sum_p += p;
        if (kEntropy) sum_h += p * softplus(-li) + (1.0 - p) * softplus(li);
    }
    sum_p = kern::block_sum(sum_p, scratch);
    if (kEntropy) sum_h = kern::block_sum(sum_h, scratch);
    if (threadIdx.x == 0) {
        part[2 * blockIdx.x] = sum_p;
        part[2 * blockIdx.x + 1] = sum_h;
    }
}

// The sum of part[2 b + which] over the blocks, in one fixed order; every thread of the block gets it.
__device__ __forceinline__ double sum_partials(const double* __restrict__ part, int blocks, int which,
                                               double* scratch) {
    double s = 0.0;
    for (int b = threadIdx.x; b < blocks; b += kThreads) s += part[2 * b + which];
    return kern::block_sum(s, scratch);
}

// aux: [1] f32.  One block.
__global__ void __launch_bounds__(kThreads) aux_loss_forward_kernel(const double* __restrict__ part, int blocks,
                                                                    int64_t N, float target, float lambda_s,
                                                                    float lambda_e, float* aux) {
    __shared__ double scratch[32];
    const double sum_p = sum_partials(part, blocks, 0, scratch);
    const double sum_h = sum_partials(part, blocks, 1, scratch);
    if (threadIdx.x == 0) {
        const double dev = sum_p / static_cast<double>(N) - static_cast<double>(target);
        aux[0] = static_cast<float>(static_cast<double>(lambda_s) * dev * dev +
                                    static_cast<double>(lambda_e) * sum_h / static_cast<double>(N));
    }
}

// dl[i] = d_aux (2 lambda_s dev / N - lambda_e l / N) p(1-p), p(1-p) as e/(1+e)^2; block b writes chunk b.
// dl: [N] f32 (overwritten)
__global__ void __launch_bounds__(kThreads) aux_loss_backward_kernel(const float* __restrict__ l, int64_t N,
                                                                     int64_t chunk, const double* __restrict__ part,
                                                                     float target, float lambda_s, float lambda_e,
                                                                     const float* __restrict__ d_aux,
                                                                     float* __restrict__ dl) {
    __shared__ double scratch[32];
    const double sum_p = sum_partials(part, gridDim.x, 0, scratch);
    const double inv_n = 1.0 / static_cast<double>(N);
    const double dev = sum_p * inv_n - static_cast<double>(target);
    const double g_aux = d_aux ? static_cast<double>(*d_aux) : 0.0;
    const int64_t begin = blockIdx.x * chunk, end = min(N, begin + chunk);
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
        const double li = l[i], e = exp(-fabs(li)), dp = e / ((1.0 + e) * (1.0 + e));
        const double g = 2.0 * static_cast<double>(lambda_s) * dev * inv_n * dp -
                         static_cast<double>(lambda_e) * inv_n * li * dp;
        dl[i] = static_cast<float>(g_aux * g);
    }
}

}  // namespace

void aux_loss_forward(Device& d, const float* l, int64_t N, float target, float lambda_s, float lambda_e, float* aux) {
    const int64_t chunk = chunk_for(N);
    const int blocks = static_cast<int>((N + chunk - 1) / chunk);  // <= kAuxMaxBlocks; 0 when N is 0
    double* part = aux_partials(d);
    if (blocks > 0) {
        aux_partials_kernel<true><<<blocks, kThreads, 0, stream(d)>>>(l, N, chunk, part);
        check_launch("aux_loss_forward (partials)");
    }
    aux_loss_forward_kernel<<<1, kThreads, 0, stream(d)>>>(part, blocks, N, target, lambda_s, lambda_e, aux);
    check_launch("aux_loss_forward");
}

void aux_loss_backward(Device& d, const float* l, int64_t N, float target, float lambda_s, float lambda_e,
                       const float* d_aux, float* dl) {
    if (N <= 0) return;
    const int64_t chunk = chunk_for(N);
    const int blocks = static_cast<int>((N + chunk - 1) / chunk);
    double* part = aux_partials(d);
    aux_partials_kernel<false><<<blocks, kThreads, 0, stream(d)>>>(l, N, chunk, part);
    check_launch("aux_loss_backward (partials)");
    aux_loss_backward_kernel<<<blocks, kThreads, 0, stream(d)>>>(l, N, chunk, part, target, lambda_s, lambda_e, d_aux,
                                                                 dl);
    check_launch("aux_loss_backward");
}

}  // namespace hspmn::cuda
