// Residual dropout on the device: the draws of core/philox.h dropout_bits (counter (d >> 2, s,
// row_offset + b, step),
// key (seed_lo ^ layer, seed_hi ^ tag)), one Philox call per thread for four consecutive features, so
// the CPU and CUDA backends drop the same elements. Backward redraws the masks rather than keeping
// them: 10 Philox rounds per 4 elements cost less than writing and reading a [B*S, D] mask.
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

constexpr int kThreads = 256;

struct Draw {
    uint32_t k0, k1, step, threshold;
    float scale;
    int64_t row_offset;  // DropoutKey::row_offset: row b draws as row row_offset + b
};

Draw make_draw(const DropoutKey& key, uint32_t tag) {
    return Draw{static_cast<uint32_t>(key.seed) ^ static_cast<uint32_t>(key.layer),
                static_cast<uint32_t>(key.seed >> 32) ^ tag,
                static_cast<uint32_t>(static_cast<uint64_t>(key.step) & 0xffffffffu), dropout_threshold(key.p),
                dropout_scale(key.p), key.row_offset};
}

// The token of row r: r itself (indices null) or selected row (b, j) of [B, C] lists; -1 for padding.
__device__ __forceinline__ int64_t row_token(int64_t r, int64_t S, const int32_t* indices, const int32_t* counts,
                                             int64_t C) {
    if (!indices) return r;
    const int64_t b = r / C, j = r - b * C;
    return j < counts[b] ? b * S + indices[r] : -1;
}

__device__ __forceinline__ uint4 draw4(const Draw& w, int64_t tok, int64_t S, int64_t g) {
    const int64_t b = tok / S, s = tok - b * S;
    return kern::philox4x32_10(
        make_uint4(static_cast<uint32_t>(g), static_cast<uint32_t>(s), static_cast<uint32_t>(w.row_offset + b), w.step), w.k0, w.k1);
}

__device__ __forceinline__ uint32_t word(const uint4& r, int j) { return j == 0 ? r.x : j == 1 ? r.y : j == 2 ? r.z : r.w; }

// x: [N, D] bf16  res: [N, D] f32 (m in, x + M m out)
__global__ void dropout_residual_kernel(Draw w, const __nv_bfloat16* __restrict__ x, float* __restrict__ res, int64_t N,
                                        int64_t S, int64_t D) {
    const int64_t G = (D + 3) / 4;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < N * G; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = e / G, g = e - r * G;
        const uint4 bits = draw4(w, r, S, g);
        for (int j = 0; j < 4 && g * 4 + j < D; ++j) {
            const int64_t i = r * D + g * 4 + j;
            // x + (M m) rounded as the CPU does it: the product first, no fused multiply-add.
            const float m = word(bits, j) >= w.threshold ? __fmul_rn(res[i], w.scale) : 0.0f;
            res[i] = __fadd_rn(kern::ld(x + i), m);
        }
    }
}

// v: [rows, D] f32 in place
__global__ void dropout_rows_f32_kernel(Draw w, float* __restrict__ v, int64_t rows, int64_t S, int64_t D,
                                        const int32_t* __restrict__ indices, const int32_t* __restrict__ counts,
                                        int64_t C) {
    const int64_t G = (D + 3) / 4;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < rows * G; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = e / G, g = e - r * G, tok = row_token(r, S, indices, counts, C);
        if (tok < 0) continue;
        const uint4 bits = draw4(w, tok, S, g);
        for (int j = 0; j < 4 && g * 4 + j < D; ++j) {
            const int64_t i = r * D + g * 4 + j;
            v[i] = word(bits, j) >= w.threshold ? __fmul_rn(v[i], w.scale) : 0.0f;
        }
    }
}

// src, dst: [rows, D] bf16 (may alias)
__global__ void dropout_mask_bf16_kernel(Draw w, const __nv_bfloat16* src, __nv_bfloat16* dst, int64_t rows, int64_t S,
                                         int64_t D, const int32_t* __restrict__ indices,
                                         const int32_t* __restrict__ counts, int64_t C) {
    const int64_t G = (D + 3) / 4;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < rows * G; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = e / G, g = e - r * G, tok = row_token(r, S, indices, counts, C);
        if (tok < 0) {
            for (int j = 0; j < 4 && g * 4 + j < D; ++j) dst[r * D + g * 4 + j] = src[r * D + g * 4 + j];
            continue;
        }
        const uint4 bits = draw4(w, tok, S, g);
        for (int j = 0; j < 4 && g * 4 + j < D; ++j) {
            const int64_t i = r * D + g * 4 + j;
            dst[i] = word(bits, j) >= w.threshold ? src[i] : kern::bf(0.0f);
        }
    }
}

}  // namespace

void dropout_residual(Device& d, const DropoutKey& key, const __nv_bfloat16* x, float* res, int64_t N, int64_t S,
                      int64_t D) {
    const int64_t work = N * ((D + 3) / 4);
    if (work <= 0) return;
    dropout_residual_kernel<<<kern::grid_for(work, kThreads), kThreads, 0, stream(d)>>>(
        make_draw(key, kDropoutTagReflex), x, res, N, S, D);
    check_launch("dropout_residual");
}

void dropout_rows_f32(Device& d, const DropoutKey& key, uint32_t tag, float* v, int64_t rows, int64_t S, int64_t D,
                      const int32_t* indices, const int32_t* counts, int64_t C) {
    const int64_t work = rows * ((D + 3) / 4);
    if (work <= 0) return;
    dropout_rows_f32_kernel<<<kern::grid_for(work, kThreads), kThreads, 0, stream(d)>>>(make_draw(key, tag), v, rows, S,
                                                                                         D, indices, counts, C);
    check_launch("dropout_rows_f32");
}

void dropout_mask_bf16(Device& d, const DropoutKey& key, uint32_t tag, const __nv_bfloat16* src, __nv_bfloat16* dst,
                       int64_t rows, int64_t S, int64_t D, const int32_t* indices, const int32_t* counts, int64_t C) {
    const int64_t work = rows * ((D + 3) / 4);
    if (work <= 0) return;
    dropout_mask_bf16_kernel<<<kern::grid_for(work, kThreads), kThreads, 0, stream(d)>>>(make_draw(key, tag), src, dst,
                                                                                          rows, S, D, indices, counts, C);
    check_launch("dropout_mask_bf16");
}

}  // namespace hspmn::cuda
