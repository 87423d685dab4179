// router_logits, temperature, scores n and probs forward; the gate and router-parameter gradients
// backward. Dot products and the sums that feed parameter gradients in f64, as the CPU does.
#include "../../core/env_choice.h"
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

constexpr int kRowsPerBlock = 8;

// One warp per row.  x: [N, D] bf16  w: [D] bf16  b, log_temp: [1] bf16  noise: [N] f32 or null
// l, n: [N] f32  temp: [2] f32
__global__ void router_forward_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w,
                                      const __nv_bfloat16* __restrict__ b, const __nv_bfloat16* __restrict__ log_temp,
                                      const float* __restrict__ noise, int64_t N, int64_t D, float* __restrict__ l,
                                      float* __restrict__ n, float* __restrict__ temp) {
    const int64_t row = blockIdx.x * (int64_t)kRowsPerBlock + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    bool inside;
    const float t = kern::router_temperature(log_temp, &inside);
    if (row == 0 && lane == 0) {
        temp[0] = t;
        temp[1] = inside ? 1.0f : 0.0f;
    }
    if (row >= N) return;
    const double acc = kern::router_dot(x + row * D, w, D, lane);
    if (lane == 0) {
        const float li = static_cast<float>(acc + static_cast<double>(kern::ld(b)));
        l[row] = li;
        n[row] = noise ? (li + noise[row]) / t : li / t;
    }
}

// l, p: [N] f32
__global__ void router_probs_kernel(const float* __restrict__ l, int64_t N, float* __restrict__ p) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N; i += (int64_t)gridDim.x * blockDim.x)
        p[i] = 1.0f / (1.0f + expf(-l[i]));
}

// One thread per selected slot (b, j).  dy: [B, C] f32  n, dl: [B*S] f32  dt_part: [B*C] f64
__global__ void router_gate_backward_kernel(const float* __restrict__ dy, const float* __restrict__ n,
                                            const int32_t* __restrict__ indices, const int32_t* __restrict__ counts,
                                            const float* __restrict__ temp, int64_t B, int64_t S, int64_t C,
                                            float* __restrict__ dl, double* __restrict__ dt_part) {
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < B * C; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t b = e / C, j = e - b * C;
        if (j >= counts[b]) {
            dt_part[e] = 0.0;
            continue;
        }
        const int64_t row = b * S + indices[e];
        const double t = temp[0], nv = n[row];
        // sigmoid'(n) = e / (1 + e)^2, e = exp(-|n|): s (1 - s) loses every digit once s rounds to 1.
        const double ex = exp(-fabs(nv));
        const double dn = static_cast<double>(dy[e]) * (ex / ((1.0 + ex) * (1.0 + ex)));
        dl[row] += static_cast<float>(dn / t);  // selected rows are distinct: no race
        dt_part[e] = -dn * nv / t;
    }
}

// One block: g_log_temp += t * sum dt_part (when inside), g_b += sum dl, both summed in f64.
__global__ void router_scalar_grads_kernel(const double* __restrict__ dt_part, int64_t BC, const float* __restrict__ dl,
                                           int64_t N, const float* __restrict__ temp, float* g_b, float* g_log_temp) {
    __shared__ double scratch[32];
    double dt = 0.0, db = 0.0;
    for (int64_t i = threadIdx.x; i < BC; i += blockDim.x) dt += dt_part[i];
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) db += dl[i];
    dt = kern::block_sum(dt, scratch);
    db = kern::block_sum(db, scratch);
    if (threadIdx.x == 0) {
        if (temp[1] != 0.0f) *g_log_temp += static_cast<float>(dt * static_cast<double>(temp[0]));
        *g_b += static_cast<float>(db);
    }
}

// part[chunk, d] = sum over the chunk's rows of dl[i] x[i, d] (f64).  grid: (ceil(D/256), chunks)
__global__ void router_w_partial_kernel(const float* __restrict__ dl, const __nv_bfloat16* __restrict__ x, int64_t N,
                                        int64_t D, int64_t rows, double* __restrict__ part) {
    const int64_t d = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (d >= D) return;
    const int64_t r0 = blockIdx.y * rows, r1 = r0 + rows < N ? r0 + rows : N;
    double acc = 0.0;
    for (int64_t i = r0; i < r1; ++i) acc += static_cast<double>(dl[i]) * static_cast<double>(kern::ld(x + i * D + d));
    part[blockIdx.y * D + d] = acc;
}

// g_w[d] += sum over chunks of part[., d].  part: [chunks, D] f64
__global__ void router_w_reduce_kernel(const double* __restrict__ part, int64_t chunks, int64_t D, float* g_w) {
    const int64_t d = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (d >= D) return;
    double acc = 0.0;
    for (int64_t c = 0; c < chunks; ++c) acc += part[c * D + d];
    g_w[d] += static_cast<float>(acc);
}

}  // namespace

void router_forward(Device& d, const __nv_bfloat16* x, const __nv_bfloat16* w, const __nv_bfloat16* b,
                    const __nv_bfloat16* log_temp, const float* noise, int64_t N, int64_t D, float* l, float* n,
                    float* temp) {
    const unsigned grid = static_cast<unsigned>(N > 0 ? (N + kRowsPerBlock - 1) / kRowsPerBlock : 1);
    router_forward_kernel<<<grid, kRowsPerBlock * 32, 0, stream(d)>>>(x, w, b, log_temp, noise, N, D, l, n, temp);
    check_launch("router_forward");
}

void router_probs(Device& d, const float* l, int64_t N, float* p) {
    if (N <= 0) return;
    router_probs_kernel<<<kern::grid_for(N, 256), 256, 0, stream(d)>>>(l, N, p);
    check_launch("router_probs");
}

void router_backward(Device& d, const float* dy, const float* n, const int32_t* indices, const int32_t* counts,
                     const float* temp, int64_t B, int64_t S, int64_t C, const __nv_bfloat16* x, int64_t D,
                     float* dl, float* g_w, float* g_b, float* g_log_temp, DeviceBuffer& scratch) {
    const int64_t N = B * S, BC = B * C;
    const int64_t rows = partial_rows(N), chunks = (N + rows - 1) / rows;
    scratch.ensure(d, static_cast<std::size_t>(BC + chunks * D) * sizeof(double));
    double* dt_part = scratch.as<double>();
    double* w_part = dt_part + BC;
    if (BC > 0) {
        router_gate_backward_kernel<<<kern::grid_for(BC, 256), 256, 0, stream(d)>>>(dy, n, indices, counts, temp, B,
                                                                                      S, C, dl, dt_part);
        check_launch("router_gate_backward");
    }
    router_scalar_grads_kernel<<<1, 1024, 0, stream(d)>>>(dt_part, BC, dl, N, temp, g_b, g_log_temp);
    check_launch("router_scalar_grads");
    if (!g_w) return;  // the caller sums dl x with the pair norm's weight gradients (rms_norm_pair_backward_out)
    const dim3 g(static_cast<unsigned>((D + 255) / 256), static_cast<unsigned>(chunks));
    router_w_partial_kernel<<<g, 256, 0, stream(d)>>>(dl, x, N, D, rows, w_part);
    check_launch("router_w_partial");
    router_w_reduce(d, w_part, chunks, D, g_w);
}

bool router_w_fold_wanted() {
    return env_choice("HSPMN_ROUTER_W_FOLD", {"0", "1"}, 1,
                      "1 or unset (the block backward sums the router's weight gradient in the pair norm's dw pass) "
                      "or 0 (router_backward's own pass over x)") == 1;
}

void router_w_reduce(Device& d, const double* part, int64_t chunks, int64_t D, float* g_w) {
    if (D <= 0) return;
    router_w_reduce_kernel<<<static_cast<unsigned>((D + 255) / 256), 256, 0, stream(d)>>>(part, chunks, D, g_w);
    check_launch("router_w_reduce");
}

}  // namespace hspmn::cuda
