// down_residual's sm_90a kernel: the MLP's down projection m = act W_down^T (act [N, F], W_down [D, F],
// bf16, f32 accumulators) with the block's residual in its epilogue, so m never goes to memory:
//   a row with row_slot[r] < 0 (not routed to attention): out[r] = bf16(m[r] + x[r]), residual_out's
//     arithmetic for such a row (kernels/gather_scatter.cu);
//   a row with slot q = row_slot[r] >= 0: res_sel[q] = m[r] + x[r] in f32, to which
//     residual_out_selected adds o[q] and rounds once, as residual_out does, when o exists.
// Same skeleton as swiglu_gemm_wgmma.cu (wgmma_ops.cuh): persistent CTAs, TMA into 4 stages of 48 KiB,
// one producer thread, two consumer warpgroups of 64 rows, a 128 x 256 output tile whose MMA N = 256
// is two TMA boxes of 128 W_down rows; CTA pairs share each W tile through multicast.
//
// The consumers do the epilogue themselves: a tile is F / 64 k-blocks (128 at F = 8192, four times
// the gate/up kernel's at D = 2048), so the epilogue's loads and stores are a small part of it. While
// they run, warps 1-3 of the producer warpgroup (idle otherwise) have already asked L2 for the x rows
// of the tile (cp.async.bulk.prefetch.L2 at the tile's start), so the consumers' loads of x hit L2.
#include "down_residual_wgmma.h"

#include <cuda_bf16.h>

#include "persistent_launch.h"
#include "wgmma_ops.cuh"

namespace hspmn::cuda::sm90a::down {

namespace {

using bf16 = __nv_bfloat16;
using namespace ops;

constexpr int kTileA = kBlockM * kBlockK * 2;   // 16 KiB of act
constexpr int kTileW = kBoxN * kBlockK * 2;     // 16 KiB a box of W_down
constexpr int kStageBytes = kTileA + 2 * kTileW;
constexpr int kConsumerWarps = 8;
constexpr int kPrefetchThreads = 96;  // warps 1-3 of warpgroup 0
static_assert(kBlockN == 2 * kBoxN && kBlockK == 64, "the MMA's N = 256 is two boxes; mma_tile's k-blocks are 64");
static_assert(kSmemBytes >= kStages * kStageBytes + 1024 + 2 * kStages * 8, "down_residual_wgmma.h's kSmemBytes");

__device__ __forceinline__ void prefetch_l2(const void* p, uint32_t bytes) {
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
}

// kCluster 2: CTA pairs take row tiles 2p and 2p + 1 of the same output columns; rank r copies W box r
// of the tile into both CTAs (multicast), each its own rows of act.
template <int kCluster>
__global__ void __launch_bounds__(kThreads, 1)
    down_residual_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_w, int N,
                         int D, int F, const bf16* x, const int32_t* __restrict__ row_slot, bf16* out,
                         float* __restrict__ res_sel, int group, int l2_hints) {
    // x and out are not __restrict__: out may be x (each element of x is read, by the thread that writes
    // its out, before that store).
    static_assert(kCluster == 1 || kCluster == 2, "a pair splits the W tile in its two boxes");
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ uint8_t smem_raw[];
    // The 128-byte swizzle repeats every 1024 bytes: tiles start 1024-aligned.
    uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
    uint64_t* full = reinterpret_cast<uint64_t*>(smem + kStages * kStageBytes);
    uint64_t* empty = full + kStages;

    const int tiles_m = (N + kBlockM - 1) / kBlockM, tiles_n = (D + kBlockN - 1) / kBlockN;
    const int units_m = (tiles_m + kCluster - 1) / kCluster;
    const int units = units_m * tiles_n, nk = (F + kBlockK - 1) / kBlockK;
    const int first = blockIdx.x / kCluster, stride = gridDim.x / kCluster;
    const uint32_t rank = kCluster > 1 ? cluster_rank() : 0;
    const int wg = threadIdx.x / 128, lane = threadIdx.x % 32;

    if (threadIdx.x == 0) {
        for (int s = 0; s < kStages; ++s) {
            bar_init(&full[s], 1);
            bar_init(&empty[s], kConsumerWarps * kCluster);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    if (kCluster > 1)
        cluster_sync();
    else
        __syncthreads();

    if (wg == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 88;");
        if (threadIdx.x == 0) {
            // l2_hints: act is read by the tiles_n tiles of its row block, W_down by every row block.
            const uint64_t pa = l2_hints ? l2_evict_first() : 0, pw = l2_hints ? l2_evict_last() : 0;
            produce<kStages, kStageBytes, kCluster, kBlockM, kBlockK>(
                smem, full, empty, &map_a, first, stride, units, units_m, tiles_n, group, nk, rank,
                [&](uint8_t* st, uint64_t* bar, int k, int tn) {
                    if (kCluster > 1) {
                        tma_load_multicast(st + kTileA + rank * kTileW, &map_w, bar, k * kBlockK,
                                           tn * kBlockN + rank * kBoxN, uint16_t((1u << kCluster) - 1), pw);
                    } else {
                        tma_load(st + kTileA, &map_w, bar, k * kBlockK, tn * kBlockN, pw);
                        tma_load(st + kTileA + kTileW, &map_w, bar, k * kBlockK, tn * kBlockN + kBoxN, pw);
                    }
                },
                pa);
        } else if (threadIdx.x >= 32 && (reinterpret_cast<uintptr_t>(x) & 15) == 0) {
            // Each tile's x rows (their 256 columns, 512 bytes) into L2 when the tile starts: its epilogue
            // comes F / 64 k-blocks later. A hint: nothing waits on it. The bulk prefetch needs 16-byte
            // aligned addresses and sizes: x's rows are (D % 8 == 0), x itself may not be (then none).
            const int pt = threadIdx.x - 32;
            for (int t = first; t < units; t += stride) {
                int um, tn;
                tile_coords(t, units_m, tiles_n, group, um, tn);
                const int tm = um * kCluster + rank;
                const int col = tn * kBlockN, cols = min(kBlockN, D - col);
                for (int r = pt; r < kBlockM; r += kPrefetchThreads) {
                    const int64_t row = int64_t(tm) * kBlockM + r;
                    if (row < N) prefetch_l2(x + row * D + col, static_cast<uint32_t>(cols) * 2);
                }
            }
        }
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 208;");
        const int half = wg - 1;  // rows [64 half, 64 half + 64) of each tile
        const int warp = (threadIdx.x % 128) / 32;
        // Accumulator layout of m64n256k16 (f32): register 4j + 2h + e holds row 16 warp + lane / 4 + 8h,
        // column 8j + 2 (lane % 4) + e of the tile's 256 (j < 16: the first box of W rows, then the second).
        const int r0 = warp * 16 + lane / 4, c2 = 2 * (lane % 4);
        float d[128];
#pragma unroll
        for (int i = 0; i < 128; ++i) d[i] = 0.0f;  // never read before the first MMA overwrites it
        int s = 0;
        uint32_t phase = 0;
        for (int t = first; t < units; t += stride) {
            int um, tn;
            tile_coords(t, units_m, tiles_n, group, um, tn);
            const int tm = um * kCluster + rank;
            mma_tile<kStages, kStageBytes>(d, smem, full, empty, s, phase, nk, half * 64 * 128, kTileA, lane,
                                           release_slot<kCluster>, [](int) {});
            const int col0 = tn * kBlockN + c2;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int64_t row = int64_t(tm) * kBlockM + half * 64 + r0 + 8 * h;
                if (row >= N) continue;
                const int slot = row_slot ? row_slot[row] : -1;
                const bf16* xr = x + row * D;
                bf16* orow = out + row * D;
                float* rrow = res_sel + int64_t(slot < 0 ? 0 : slot) * D;
                // 16 loads of x at a time, in flight together (32 would not fit beside the accumulators).
#pragma unroll
                for (int j0 = 0; j0 < 32; j0 += 16) {
                    __nv_bfloat162 xv[16];
#pragma unroll
                    for (int j = 0; j < 16; ++j) {
                        const int col = col0 + 8 * (j0 + j);  // D % 8 == 0: a pair is wholly in or out
                        xv[j] = col < D ? *reinterpret_cast<const __nv_bfloat162*>(xr + col)
                                        : __floats2bfloat162_rn(0.0f, 0.0f);
                    }
#pragma unroll
                    for (int j = 0; j < 16; ++j) {
                        const int col = col0 + 8 * (j0 + j), a = 4 * (j0 + j) + 2 * h;
                        if (col >= D) continue;
                        const float2 xf = __bfloat1622float2(xv[j]);
                        const float v0 = d[a] + xf.x, v1 = d[a + 1] + xf.y;  // residual_out's m + x
                        if (slot < 0)
                            *reinterpret_cast<__nv_bfloat162*>(orow + col) = __floats2bfloat162_rn(v0, v1);
                        else
                            *reinterpret_cast<float2*>(rrow + col) = make_float2(v0, v1);
                    }
                }
            }
        }
    }
    // No CTA leaves while its peer may still arrive on its barriers.
    if (kCluster > 1) asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;" ::: "memory");
#endif
}

}  // namespace

cudaError_t launch(cudaStream_t stream, int sm_count, int cluster, int& pairs_fit, const CUtensorMap& map_a,
                   const CUtensorMap& map_w, int N, int D, int F, const bf16* x, const int32_t* row_slot, bf16* out,
                   float* res_sel, int group, int l2_hints) {
    if (N == 0 || D == 0) return cudaSuccess;
    const int tiles_n = (D + kBlockN - 1) / kBlockN;
    if (cluster == 2) {
        bool no_pairs = false;
        const int units = (N + 2 * kBlockM - 1) / (2 * kBlockM) * tiles_n;
        const cudaError_t e = launch_persistent(down_residual_kernel<2>, 2, units, kThreads, kSmemBytes, stream,
                                                sm_count, pairs_fit, &no_pairs, map_a, map_w, N, D, F, x, row_slot,
                                                out, res_sel, group, l2_hints);
        if (!no_pairs) return e;
    }
    bool unused = false;
    return launch_persistent(down_residual_kernel<1>, 1, (N + kBlockM - 1) / kBlockM * tiles_n, kThreads, kSmemBytes,
                             stream, sm_count, pairs_fit, &unused, map_a, map_w, N, D, F, x, row_slot, out, res_sel,
                             group, l2_hints);
}

}  // namespace hspmn::cuda::sm90a::down
