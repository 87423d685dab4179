// cross_entropy_fused (native/reference/README.md): the tied head's logits, the next-token loss and
// both gradients in one pass over row chunks, so no [N, V] logits exist. Per chunk of R rows:
//   z  = h_c . table^T              GEMM, f32 [R, ld] (ld = V rounded up to 8: aligned rows)
//   per row (cross_entropy_rows_kernel): m = max z, lse = m + ln sum exp(z - m) (one online pass),
//        loss_rows[r] = lse - z[t]; dz = grad_scale * (exp(z - lse) - onehot(t)) in bf16
//   dh_c      = dz . table          GEMM, f32 (overwritten)
//   d_table  += dz^T . h_c          GEMM, f32, beta = 1 (chunks in order)
// then loss_sum = sum of loss_rows by one block in a fixed order. No atomics anywhere: the loss and
// both gradients are bitwise repeatable. dz is bf16 because the GEMMs take bf16 operands (a
// relative rounding of 2^-9 per element, inside MODEL.md's bf16-path bound).
#include <cmath>

#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

constexpr int kThreads = 256;
// Logits held per chunk (f32 + the bf16 dz: 6 bytes each): 2^24 -> 96 MiB, and R >= 64 rows.
constexpr int64_t kChunkElems = int64_t(1) << 24;

// (m, s) of a softmax denominator: s = sum exp(z - m). Joins two partial ones.
__device__ __forceinline__ void ms_join(float& m, float& s, float m2, float s2) {
    const float mx = fmaxf(m, m2);
    if (mx == -INFINITY) return;  // both empty
    s = s * expf(m - mx) + s2 * expf(m2 - mx);
    m = mx;
}

// kRow threads per row (32: a warp, 8 rows a block; 256: the whole block). NaN in z reaches s, so
// lse and the loss become NaN rather than dropping it (fmaxf would).
// z: [rows, ld] f32  targets: [rows] i32  loss_rows: [rows] f32  dz: [rows, ld] bf16 (kGrad)
template <int kRow, bool kGrad>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_rows_kernel(const float* __restrict__ z, int64_t ld, const int32_t* __restrict__ targets,
                              int64_t rows, int64_t V, float grad_scale, float* __restrict__ loss_rows,
                              __nv_bfloat16* __restrict__ dz) {
    constexpr int kRowsPerBlock = kThreads / kRow;
    __shared__ float sh_m[kThreads / 32], sh_s[kThreads / 32];
    const int lane = threadIdx.x % kRow;
    const int64_t row = blockIdx.x * (int64_t)kRowsPerBlock + threadIdx.x / kRow;
    const bool active = row < rows;
    const float* zr = z + (active ? row : 0) * ld;
    float m = -INFINITY, s = 0.0f;
    if (active) {
        for (int64_t v = lane; v < V; v += kRow) {
            const float x = zr[v];
            if (x > m) {
                s = s * expf(m - x) + 1.0f;
                m = x;
            } else if (x != -INFINITY) {  // exp(-inf - -inf) would be NaN
                s += expf(x - m);
            }
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        ms_join(m, s, m2, s2);
    }
    if (kRow > 32) {  // join the block's warps (one row per block)
        const int warp = threadIdx.x >> 5;
        if ((threadIdx.x & 31) == 0) {
            sh_m[warp] = m;
            sh_s[warp] = s;
        }
        __syncthreads();
        m = sh_m[0];
        s = sh_s[0];
        for (int w = 1; w < kThreads / 32; ++w) ms_join(m, s, sh_m[w], sh_s[w]);
    }
    if (!active) return;
    const float lse = m + logf(s);
    const int32_t t = targets[row];
    const bool t_ok = t >= 0 && t < V;
    if (lane == 0) loss_rows[row] = t_ok ? lse - zr[t] : NAN;
    if (kGrad) {
        __nv_bfloat16* dr = dz + row * ld;
        for (int64_t v = lane; v < V; v += kRow) {
            const float p = expf(zr[v] - lse);
            dr[v] = kern::bf(grad_scale * (v == t ? p - 1.0f : p));
        }
    }
}

// loss_sum[0] = sum of x in a fixed order (double).  x: [n] f32.  One block of 1024.
__global__ void __launch_bounds__(1024) sum_rows_kernel(const float* __restrict__ x, int64_t n, float* loss_sum) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += 1024) acc += static_cast<double>(x[i]);
    acc = kern::block_sum(acc, scratch);
    if (threadIdx.x == 0) loss_sum[0] = static_cast<float>(acc);
}

template <int kRow>
void launch_rows(Device& d, bool grad, const float* z, int64_t ld, const int32_t* targets, int64_t rows, int64_t V,
                 float grad_scale, float* loss_rows, __nv_bfloat16* dz) {
    constexpr int64_t per_block = kThreads / kRow;
    const unsigned grid = static_cast<unsigned>((rows + per_block - 1) / per_block);
    if (grad)
        cross_entropy_rows_kernel<kRow, true>
            <<<grid, kThreads, 0, stream(d)>>>(z, ld, targets, rows, V, grad_scale, loss_rows, dz);
    else
        cross_entropy_rows_kernel<kRow, false>
            <<<grid, kThreads, 0, stream(d)>>>(z, ld, targets, rows, V, grad_scale, loss_rows, dz);
    check_launch("cross_entropy_rows");
}

}  // namespace

int64_t cross_entropy_chunk_rows(int64_t N, int64_t V) {
    const int64_t ld = (V + 7) / 8 * 8;
    int64_t r = kChunkElems / ld;
    r = r < 64 ? 64 : r / 64 * 64;
    return r < N ? r : (N > 0 ? N : 1);
}

void cross_entropy_fused(Device& d, const __nv_bfloat16* h, const __nv_bfloat16* table, const int32_t* targets,
                         int64_t N, int64_t V, int64_t D, float grad_scale, float* loss_sum, float* dh,
                         float* d_table, CrossEntropyScratch& scratch) {
    if (N <= 0) {
        check(cudaMemsetAsync(loss_sum, 0, sizeof(float), stream(d)), "cudaMemsetAsync (cross_entropy loss_sum)");
        return;
    }
    const bool grad = dh != nullptr || d_table != nullptr;
    const int64_t ld = (V + 7) / 8 * 8, R = cross_entropy_chunk_rows(N, V);
    scratch.logits.ensure(d, static_cast<std::size_t>(R * ld) * sizeof(float));
    if (grad) scratch.dz.ensure(d, static_cast<std::size_t>(R * ld) * sizeof(__nv_bfloat16));
    scratch.loss_rows.ensure(d, static_cast<std::size_t>(N) * sizeof(float));
    float* z = scratch.logits.as<float>();
    __nv_bfloat16* dz = grad ? scratch.dz.as<__nv_bfloat16>() : nullptr;
    float* loss_rows = scratch.loss_rows.as<float>();

    for (int64_t r0 = 0; r0 < N; r0 += R) {
        const int64_t rows = N - r0 < R ? N - r0 : R;
        const __nv_bfloat16* hc = h + r0 * D;
        gemm(d, false, true, rows, V, D, 1.0f, hc, D, table, D, 0.0f, z, DType::F32, ld);
        if (V <= 4096)
            launch_rows<32>(d, grad, z, ld, targets + r0, rows, V, grad_scale, loss_rows + r0, dz);
        else
            launch_rows<kThreads>(d, grad, z, ld, targets + r0, rows, V, grad_scale, loss_rows + r0, dz);
        if (dh) gemm(d, false, false, rows, D, V, 1.0f, dz, ld, table, D, 0.0f, dh + r0 * D, DType::F32, D);
        if (d_table) gemm(d, true, false, V, D, rows, 1.0f, dz, ld, hc, D, 1.0f, d_table, DType::F32, D);
    }
    sum_rows_kernel<<<1, 1024, 0, stream(d)>>>(loss_rows, N, loss_sum);
    check_launch("cross_entropy_sum_rows");
}

}  // namespace hspmn::cuda
