// The sm_90a kernel of swiglu_gemm and swiglu_backward_gemm (swiglu_gemm_wgmma.cu): its tile shape and
// its launches. Built only when HSPMN_CUDA_ARCHS holds 90 (HSPMN_SM90A=1 then); swiglu_gemm.cpp makes
// the tensor maps and checks the shapes and pointers before anything here runs.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace hspmn::cuda::sm90a {

constexpr int kBlockM = 128;  // rows of c per tile: two consumer warpgroups of 64
constexpr int kBlockF = 128;  // columns of act per tile (128 rows each of W_gate and W_up: the MMA's N = 256)
constexpr int kBlockK = 64;   // 64 bf16 = 128 bytes, one row of the 128-byte swizzle
constexpr int kStages = 4;    // 48 KiB a stage (beside 32 KiB of hand-off buffers)
constexpr int kGroupM = 16;   // row tiles walked together (tile order, swiglu_gemm_wgmma.cu)
constexpr int kThreads = 384; // producer (+ epilogue) warpgroup + two consumer warpgroups
constexpr int kSmemBytes = kStages * (kBlockM + 2 * kBlockF) * kBlockK * 2 + 2 * 64 * (2 * kBlockF) + 1024 +
                           (2 * kStages + 4) * 8;

// The tensor maps: c as [N, D] with boxes of kBlockM x kBlockK, W_gate and W_up as [F, D] with boxes
// of kBlockF x kBlockK, all bf16 with the 128-byte swizzle and zero fill. gate and up (both or neither):
// the training outputs, rows ld_gu elements apart (a multiple of 8). cluster: 1, or 2 for CTA pairs that
// share each W tile through TMA multicast; pairs_fit: how many pairs fit at once, asked (and kept there)
// when 0, -1 when none does (then single CTAs run). Returns the launch's error.
cudaError_t launch(cudaStream_t stream, int sm_count, int cluster, int& pairs_fit, const CUtensorMap& map_c,
                   const CUtensorMap& map_g, const CUtensorMap& map_u, int N, int F, int D, __nv_bfloat16* act,
                   __nv_bfloat16* gate, __nv_bfloat16* up, int64_t ld_gu);

// The backward launch (swiglu_backward_gemm): d_gate | d_up = swiglu_backward(g, u, bf16(alpha dm W_down))
// with map_dm dm as [N, D] (boxes of kBlockM x kBlockK) and map_wt W_down^T as [F, D] (boxes of kBlockF x
// kBlockK), both like the forward's maps; g, u (inputs) and dg, du (outputs) rows of ld elements (a
// multiple of 8). cluster and pairs_fit as launch's.
cudaError_t launch_backward(cudaStream_t stream, int sm_count, int cluster, int& pairs_fit, const CUtensorMap& map_dm,
                            const CUtensorMap& map_wt, int N, int F, int D, float alpha, const __nv_bfloat16* g,
                            const __nv_bfloat16* u, __nv_bfloat16* dg, __nv_bfloat16* du, int64_t ld);

}  // namespace hspmn::cuda::sm90a
