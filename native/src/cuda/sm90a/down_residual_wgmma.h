// The sm_90a kernel of down_residual (down_residual_wgmma.cu): its tile shape and its launch. Built only
// when HSPMN_CUDA_ARCHS holds 90 (HSPMN_SM90A=1 then); down_residual.cpp makes the tensor maps and checks
// the shapes and pointers before anything here runs.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace hspmn::cuda::sm90a::down {

constexpr int kBlockM = 128;   // rows of act per tile: two consumer warpgroups of 64
constexpr int kBoxN = 128;     // rows of W_down per TMA box
constexpr int kBlockN = 256;   // output columns per tile: two boxes of W_down rows (the MMA's N)
constexpr int kBlockK = 64;    // 64 bf16 = 128 bytes, one row of the 128-byte swizzle
constexpr int kStages = 4;     // 48 KiB a stage
constexpr int kThreads = 384;  // producer warpgroup + two consumer warpgroups
constexpr int kSmemBytes = kStages * (kBlockM + kBlockN) * kBlockK * 2 + 1024 + 2 * kStages * 8;

// The tensor maps: act as [N, F] with boxes of kBlockM x kBlockK, W_down as [D, F] with boxes of
// kBoxN x kBlockK, bf16, 128-byte swizzle, zero fill. x, out: [N, D] bf16; row_slot: [N] (or null: every
// row is -1); res_sel: [Q, D] f32 for the rows whose slot is >= 0. cluster and pairs_fit as in
// swiglu_gemm_wgmma.h. group: units (kCluster row tiles) walked together (tile_coords; down_residual.cpp
// picks it, 2 by default); l2_hints 1: act's copies evict first from L2, W_down's last. Returns the
// launch's error.
cudaError_t launch(cudaStream_t stream, int sm_count, int cluster, int& pairs_fit, const CUtensorMap& map_a,
                   const CUtensorMap& map_w, int N, int D, int F, const __nv_bfloat16* x, const int32_t* row_slot,
                   __nv_bfloat16* out, float* res_sel, int group, int l2_hints);

}  // namespace hspmn::cuda::sm90a::down
