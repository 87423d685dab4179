// swiglu_gemm's sm_90a kernel: act = bf16(silu(bf16(c W_gate^T)) * bf16(c W_up^T)) for c [N, D] and
// W_gate, W_up [F, D] (bf16, K-major rows), written by hand with the Hopper instructions cuBLASLt uses:
// TMA (cp.async.bulk.tensor) brings tiles of c, W_gate and W_up into shared memory (128-byte swizzle),
// wgmma multiplies them from there into f32 registers. One CTA per SM walks output tiles (persistent);
// warpgroup 0 is the producer (one thread issues the copies), warpgroups 1 and 2 each own 64 of a
// tile's 128 rows. A tile is 128 rows x 128 columns of act: the MMA's N = 256 is 128 rows of W_gate
// followed by the same 128 rows of W_up, so a thread holds gate and up of the same (row, column) and
// the activation is computed in registers: gate/up never go to memory unless training asks for them.
// The arithmetic after the accumulators is swiglu_forward's (kernels/swiglu.cu): gate and up rounded
// to bf16, then g * sigmoid(g) * u in f32 with 1 / (1 + expf(-g)), rounded once.
//
// Compiled only for sm_90a (wgmma and setmaxnreg exist nowhere else); see swiglu_gemm.cpp for the
// tensor maps and the checks that make every launch here valid.
//
// The epilogue's arithmetic (an expf and an IEEE division per element) costs about a tenth of a tile's
// MMA time, so the consumers do not do it: they round their accumulators to bf16 into a shared-memory
// hand-off buffer and go on to the next tile's MMAs, while warps 1-3 of the producer warpgroup (idle
// otherwise: one thread issues every copy) compute act from the buffer and write act (and, training,
// gate and up) to global memory in 16-byte stores along rows. The buffer holds half a tile per
// consumer (32 KiB in all), which leaves room for 4 stages of copies: with 3 beside a whole-tile buffer
// the consumers waited on the copies for about a third of their time (ncu, BENCHMARKS.md 2026-12-07).
// The second half waits in the consumer's registers (32 of them) until the middle of the next tile, by
// when the epilogue warps have emptied the buffer.
//
// The same kernel serves the backward (swiglu_backward_gemm): d_act = bf16(alpha dm W_down) for dm
// [N, D] against W_down^T [F, D] (the caller's transposed copy, K-major like W_gate), and the epilogue
// warps turn it into d_gate and d_up with swiglu_backward's arithmetic, reading the gate and up that
// the training forward kept: d_act never goes to memory. A tile is then 128 rows x 256 columns of d_act
// (the MMA's N = 256 is 256 rows of W_down^T, taken as two boxes of 128), so the epilogue has twice the
// forward's values per MMA and two loads besides each one's stores.
#include "swiglu_gemm_wgmma.h"

#include <cuda_bf16.h>

#include "persistent_launch.h"
#include "wgmma_ops.cuh"

namespace hspmn::cuda::sm90a {

namespace {

using bf16 = __nv_bfloat16;
using namespace ops;

// What a launch computes (its epilogue): act (inference), act with gate | up kept (training), or
// d_gate | d_up (backward).
enum Mode { kInfer = 0, kTrain = 1, kBackward = 2 };

// The epilogue's tensors, all bf16 rows of ld elements except act's (F). Forward: act, and for kTrain
// gate and up (outputs). kBackward: gate and up are d_gate and d_up (outputs), g and u the forward's
// gate and up (inputs), alpha the scale of the product before it is rounded (the dropout's 1 / (1 - p)).
struct Epilogue {
    bf16* act;
    bf16* gate;
    bf16* up;
    const bf16* g;
    const bf16* u;
    int64_t ld;
    float alpha;
};

// Columns of the GEMM's output per tile: 128 of act (each from a gate and an up row), 256 of d_act.
template <int kMode>
constexpr int kTileCols = kMode == kBackward ? 2 * kBlockF : kBlockF;

constexpr int kTileA = kBlockM * kBlockK * 2;      // 16 KiB of c
constexpr int kTileW = kBlockF * kBlockK * 2;      // 16 KiB each of W_gate and W_up
constexpr int kStageBytes = kTileA + 2 * kTileW;   // 48 KiB
constexpr int kConsumerWarps = 8;
constexpr int kEpilogueThreads = 96;  // warps 1-3 of warpgroup 0
// A consumer hands off half a tile at a time: its 64 rows x 64 columns of gate and of up, bf16, a row
// of 256 bytes (8 chunks of 16 bytes of gate, then 8 of up). Chunk c of row r sits at chunk c ^ (r % 8)
// so that a warp's accumulator stores (8 rows, one chunk each) hit 32 different banks.
constexpr int kHalfCols = kBlockF / 2;
constexpr int kHandRow = 2 * kHalfCols * 2;
constexpr int kHandBytes = 64 * kHandRow;
// The consumers hand the first half off at a tile's end and keep the second half in registers (bf16
// pairs) until the middle k-block of the next tile: each half then has half a tile's MMA time for the
// epilogue warps. They are close to the limit: in the thirteenth session's kernel (ncu, BENCHMARKS.md
// 2026-12-07) they were busy for ~85 % of the kernel and the consumers waited on them for ~8 % of
// their samples, hence the branch-free sigmoid8.
static_assert(kSmemBytes >= kStages * kStageBytes + 2 * kHandBytes + 1024 + (2 * kStages + 4) * 8,
              "swiglu_gemm_wgmma.h's kSmemBytes is too small");

__device__ __forceinline__ int hand_offset(int row, int chunk) { return row * kHandRow + ((chunk ^ (row & 7)) << 4); }

// sigmoid of 8 values with swiglu_forward's bits, without a branch per value. nvcc compiles 1.0f / y
// (IEEE) as: if y's exponent is in range, rcp.approx then one Newton step (the sequence below, as in
// its SASS: MUFU.RCP, FFMA, FADD.FTZ, FFMA), else a call to a slow path; that branch per element keeps
// the compiler from interleaving the 8 chains. Here the 8 take the fast sequence together and only a
// group with a value out of range (y >= 2^126, i.e. x < -87: rare) redoes those values with 1.0f / y.
__device__ __forceinline__ bool rcp_fast_in_range(float y) {
    return ((__float_as_uint(y) + 0x01800000u) & 0x7f800000u) > 0x01ffffffu;
}
__device__ __forceinline__ float rcp_fast(float y) {
    float r;
    asm("{\n"
        ".reg .f32 a, e;\n"
        "rcp.approx.ftz.f32 a, %1;\n"
        "fma.rn.f32 e, %1, a, 0fBF800000;\n"
        "neg.f32 e, e;\n"
        "fma.rn.f32 %0, a, e, a;\n"
        "}"
        : "=f"(r)
        : "f"(y));
    return r;
}
__device__ __forceinline__ void sigmoid8(const float (&x)[8], float (&s)[8]) {
    float y[8];
    bool slow = false;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        y[i] = 1.0f + expf(-x[i]);
        s[i] = rcp_fast(y[i]);
        slow |= !rcp_fast_in_range(y[i]);
    }
    if (slow) {
#pragma unroll
        for (int i = 0; i < 8; ++i)
            if (!rcp_fast_in_range(y[i])) s[i] = 1.0f / y[i];
    }
}

// 8 bf16 <-> 16 bytes.
struct alignas(16) Bf16x8 {
    __nv_bfloat162 h[4];
};
__device__ __forceinline__ Bf16x8 ld_shared_16(uint32_t addr) {
    uint32_t v[4];
    asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3])
                 : "r"(addr)
                 : "memory");
    Bf16x8 b;
#pragma unroll
    for (int q = 0; q < 4; ++q) b.h[q] = *reinterpret_cast<const __nv_bfloat162*>(&v[q]);
    return b;
}
__device__ __forceinline__ void st_shared_u32(uint32_t addr, uint32_t v) {
    asm volatile("st.shared.b32 [%0], %1;" ::"r"(addr), "r"(v) : "memory");
}

__device__ __forceinline__ void unpack8(const Bf16x8& b, float (&f)[8]) {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        const float2 v = __bfloat1622float2(b.h[q]);
        f[2 * q] = v.x, f[2 * q + 1] = v.y;
    }
}

// act for 8 columns: swiglu_forward's arithmetic on the rounded gate and up.
__device__ __forceinline__ Bf16x8 swiglu8(const Bf16x8& g8, const Bf16x8& u8) {
    float g[8], u[8], sg[8];
    unpack8(g8, g);
    unpack8(u8, u);
    sigmoid8(g, sg);
    Bf16x8 a8;
#pragma unroll
    for (int q = 0; q < 4; ++q)
        a8.h[q] = __floats2bfloat162_rn(g[2 * q] * sg[2 * q] * u[2 * q], g[2 * q + 1] * sg[2 * q + 1] * u[2 * q + 1]);
    return a8;
}

// d_gate and d_up for 8 columns from the rounded d_act and the kept gate and up: swiglu_backward's
// arithmetic (kernels/swiglu.cu), term for term, so the bits match its.
__device__ __forceinline__ void swiglu_backward8(const Bf16x8& da8, const Bf16x8& g8, const Bf16x8& u8, Bf16x8& dg8,
                                                 Bf16x8& du8) {
    float a[8], g[8], u[8], s[8];
    unpack8(da8, a);
    unpack8(g8, g);
    unpack8(u8, u);
    sigmoid8(g, s);
    float dg[8], du[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const float silu = g[i] * s[i];
        dg[i] = a[i] * u[i] * (s[i] + silu * (1.0f - s[i]));
        du[i] = a[i] * silu;
    }
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        dg8.h[q] = __floats2bfloat162_rn(dg[2 * q], dg[2 * q + 1]);
        du8.h[q] = __floats2bfloat162_rn(du[2 * q], du[2 * q + 1]);
    }
}

// kCluster 2: CTA pairs (a cluster) take row tiles 2p and 2p + 1 of the same columns; each loads its own
// rows of c, and rank 0 copies the W_gate tile, rank 1 the W_up tile, into both CTAs at once (TMA
// multicast): W crosses from L2 once per pair. A slot is free only when the consumers of both CTAs
// have read it, so each consumer warp arrives on both CTAs' empty barriers. (kBackward: map_g and map_u
// are both W_down^T, and the two boxes are its rows 256 tf and 256 tf + 128.)
template <int kMode, int kCluster>
__global__ void __launch_bounds__(kThreads, 1)
    swiglu_gemm_kernel(const __grid_constant__ CUtensorMap map_c, const __grid_constant__ CUtensorMap map_g,
                       const __grid_constant__ CUtensorMap map_u, int N, int F, int D, const Epilogue epi) {
    static_assert(kCluster == 1 || kCluster == 2, "a pair splits the W tile in two: gate from rank 0, up from rank 1");
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int kCols = kTileCols<kMode>;
    // The column of the GEMM's output where each of the stage's two W boxes starts, relative to the tile's
    // first: gate and up rows of the same columns (forward), or the tile's two halves (backward).
    constexpr int kSecondBox = kMode == kBackward ? kBlockF : 0;
    extern __shared__ uint8_t smem_raw[];
    // The 128-byte swizzle repeats every 1024 bytes: tiles start 1024-aligned.
    uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
    uint8_t* hand = smem + kStages * kStageBytes;  // two hand-off buffers, one per consumer
    uint64_t* full = reinterpret_cast<uint64_t*>(hand + 2 * kHandBytes);
    uint64_t* empty = full + kStages;
    uint64_t* hand_full = empty + kStages;  // [2]: a consumer wrote its buffer
    uint64_t* hand_empty = hand_full + 2;   // [2]: the epilogue warps have read it

    // Units of work: kCluster row tiles x one column tile; the cluster's CTAs walk them together.
    const int tiles_m = (N + kBlockM - 1) / kBlockM, tiles_f = (F + kCols - 1) / kCols;
    const int units_m = (tiles_m + kCluster - 1) / kCluster;
    const int units = units_m * tiles_f, nk = (D + kBlockK - 1) / kBlockK;
    const int first = blockIdx.x / kCluster, stride = gridDim.x / kCluster;
    const uint32_t rank = kCluster > 1 ? cluster_rank() : 0;
    const int wg = threadIdx.x / 128, lane = threadIdx.x % 32;

    if (threadIdx.x == 0) {
        for (int s = 0; s < kStages; ++s) {
            bar_init(&full[s], 1);  // the producer's arrive, plus the copies' bytes
            bar_init(&empty[s], kConsumerWarps * kCluster);  // every consumer warp of the cluster, once done
        }
        for (int c = 0; c < 2; ++c) {
            bar_init(&hand_full[c], 128);  // every thread of the consumer, after its stores
            bar_init(&hand_empty[c], kEpilogueThreads);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    if (kCluster > 1)
        cluster_sync();  // the peer's barriers exist before anything arrives on them
    else
        __syncthreads();

    if (wg == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 88;");
        if (threadIdx.x == 0) {
            produce<kStages, kStageBytes, kCluster, kBlockM, kBlockK>(
                smem, full, empty, &map_c, first, stride, units, units_m, tiles_f, kGroupM, nk, rank,
                [&](uint8_t* st, uint64_t* bar, int k, int tf) {
                    if (kCluster > 1) {
                        tma_load_multicast(st + kTileA + rank * kTileW, rank == 0 ? &map_g : &map_u, bar,
                                           k * kBlockK, tf * kCols + rank * kSecondBox,
                                           uint16_t((1u << kCluster) - 1));
                    } else {
                        tma_load(st + kTileA, &map_g, bar, k * kBlockK, tf * kCols);
                        tma_load(st + kTileA + kTileW, &map_u, bar, k * kBlockK, tf * kCols + kSecondBox);
                    }
                });
        } else if (threadIdx.x >= 32) {
            // The epilogue: per tile the first halves of both consumers, then their second halves; a half is
            // 64 rows x 2 x 64 values of the buffer (gate and up of 64 act columns, or 128 d_act columns:
            // 64 from each W box), taken as 512 pairs of 8 along a row.
            const int et = threadIdx.x - 32;
            uint32_t parity = 0;  // bit c: the phase of hand_full[c] (bits, not an array: c's loop may stay a loop)
            for (int t = first; t < units; t += stride) {
                int um, tf;
                tile_coords(t, units_m, tiles_f, kGroupM, um, tf);
                const int tm = um * kCluster + rank;
                for (int hf = 0; hf < 2; ++hf)
                    for (int c = 0; c < 2; ++c) {
                        bar_wait(&hand_full[c], (parity >> c) & 1u);
                        parity ^= 1u << c;
                        const uint32_t hb = smem_addr(hand + c * kHandBytes);
                        const int64_t row0 = int64_t(tm) * kBlockM + c * 64;
                        for (int i = et; i < 64 * (kHalfCols / 8); i += kEpilogueThreads) {
                            const int r = i / (kHalfCols / 8), piece = i % (kHalfCols / 8);
                            const int64_t row = row0 + r;
                            const int col = tf * kCols + hf * kHalfCols + piece * 8;
                            // F % 8 == 0: a piece is wholly in or out.
                            if (row >= N || col >= F) continue;
                            const Bf16x8 first8 = ld_shared_16(hb + hand_offset(r, piece));
                            const Bf16x8 second8 = ld_shared_16(hb + hand_offset(r, kHalfCols / 8 + piece));
                            if (kMode != kBackward) {
                                *reinterpret_cast<Bf16x8*>(epi.act + row * F + col) = swiglu8(first8, second8);
                                if (kMode == kTrain) {
                                    *reinterpret_cast<Bf16x8*>(epi.gate + row * epi.ld + col) = first8;
                                    *reinterpret_cast<Bf16x8*>(epi.up + row * epi.ld + col) = second8;
                                }
                            } else {
                                // d_act columns col (first box) and col + 128 (second box).
#pragma unroll
                                for (int b = 0; b < 2; ++b) {
                                    const int64_t at = row * epi.ld + col + b * kBlockF;
                                    if (col + b * kBlockF >= F) continue;
                                    const Bf16x8 g8 = *reinterpret_cast<const Bf16x8*>(epi.g + at);
                                    const Bf16x8 u8 = *reinterpret_cast<const Bf16x8*>(epi.u + at);
                                    Bf16x8 dg8, du8;
                                    swiglu_backward8(b ? second8 : first8, g8, u8, dg8, du8);
                                    *reinterpret_cast<Bf16x8*>(epi.gate + at) = dg8;
                                    *reinterpret_cast<Bf16x8*>(epi.up + at) = du8;
                                }
                            }
                        }
                        bar_arrive(&hand_empty[c]);
                    }
            }
        }
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 208;");
        const int half = wg - 1;  // rows [64 half, 64 half + 64) of each tile
        const int warp = (threadIdx.x % 128) / 32;
        const uint32_t hb = smem_addr(hand + half * kHandBytes);
        // Accumulator layout of m64nNk16 (f32): register 4j + 2h + e holds row 16 warp + lane / 4 + 8h,
        // column 8j + 2 (lane % 4) + e of N = 256 (j < 16: the first W box's rows, then the second's). A
        // half of the tile is j in [8 hf, 8 hf + 8) of each box: 16 bf16 pairs of each per thread.
        const int r0 = warp * 16 + lane / 4, q4 = 4 * (lane % 4);
        // The backward scales the product before rounding it, as cuBLASLt's alpha does; the forward's
        // accumulators are rounded as they are.
        const float scale = kMode == kBackward ? epi.alpha : 1.0f;
        auto pack = [&](float lo, float hi) {
            return kMode == kBackward ? pack_bf16x2(scale * lo, scale * hi) : pack_bf16x2(lo, hi);
        };
        uint32_t empty_parity = 1;  // a fresh barrier: the wait on the phase before it returns at once
        auto hand_off = [&](const uint32_t (&g)[16], const uint32_t (&u)[16]) {
            bar_wait(&hand_empty[half], empty_parity);
            empty_parity ^= 1;
#pragma unroll
            for (int jj = 0; jj < 8; ++jj)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    st_shared_u32(hb + hand_offset(r0 + 8 * h, jj) + q4, g[2 * jj + h]);
                    st_shared_u32(hb + hand_offset(r0 + 8 * h, 8 + jj) + q4, u[2 * jj + h]);
                }
            bar_arrive(&hand_full[half]);
        };
        float d[128];
#pragma unroll
        for (int i = 0; i < 128; ++i) d[i] = 0.0f;  // never read before the first MMA overwrites it
        uint32_t second_g[16], second_u[16];  // the last tile's second half, until it is handed off
        bool second_pending = false;
        const int second_at = nk / 2;  // <= nk - 1 for every nk >= 1
        int s = 0;
        uint32_t phase = 0;
        static_assert(kBlockK == 64, "mma_tile multiplies k-blocks of 64");
        for (int t = first; t < units; t += stride) {
            mma_tile<kStages, kStageBytes>(d, smem, full, empty, s, phase, nk, half * 64 * 128, kTileA, lane,
                                           release_slot<kCluster>,
                                           [&](int k) {
                                               if (second_pending && k == second_at) {
                                                   hand_off(second_g, second_u);
                                                   second_pending = false;
                                               }
                                           });

            // The first half goes now, the second waits in registers; both rounded to bf16.
            uint32_t g[16], u[16];
#pragma unroll
            for (int jj = 0; jj < 8; ++jj)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    g[2 * jj + h] = pack(d[4 * jj + 2 * h], d[4 * jj + 2 * h + 1]);
                    u[2 * jj + h] = pack(d[64 + 4 * jj + 2 * h], d[64 + 4 * jj + 2 * h + 1]);
                    second_g[2 * jj + h] = pack(d[32 + 4 * jj + 2 * h], d[32 + 4 * jj + 2 * h + 1]);
                    second_u[2 * jj + h] = pack(d[96 + 4 * jj + 2 * h], d[96 + 4 * jj + 2 * h + 1]);
                }
            hand_off(g, u);
            second_pending = true;
        }
        if (second_pending) hand_off(second_g, second_u);
    }
    // No CTA leaves while its peer may still arrive on its barriers (not .aligned: warp 0's lanes come
    // here from different branches).
    if (kCluster > 1) asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;" ::: "memory");
#endif
}

template <int kMode>
cudaError_t launch_mode(cudaStream_t stream, int sm_count, int cluster, int& pairs_fit, const CUtensorMap& map_c,
                        const CUtensorMap& map_g, const CUtensorMap& map_u, int N, int F, int D, const Epilogue& epi) {
    if (N == 0 || F == 0) return cudaSuccess;
    const int tiles_f = (F + kTileCols<kMode> - 1) / kTileCols<kMode>;
    if (cluster == 2) {
        bool no_pairs = false;
        const int units = (N + 2 * kBlockM - 1) / (2 * kBlockM) * tiles_f;
        const cudaError_t e = launch_persistent(swiglu_gemm_kernel<kMode, 2>, 2, units, kThreads, kSmemBytes, stream,
                                                sm_count, pairs_fit, &no_pairs, map_c, map_g, map_u, N, F, D, epi);
        if (!no_pairs) return e;
        // No pair fits (a partitioned GPU, say): one CTA a tile instead.
    }
    bool unused = false;
    return launch_persistent(swiglu_gemm_kernel<kMode, 1>, 1, (N + kBlockM - 1) / kBlockM * tiles_f, kThreads,
                             kSmemBytes, stream, sm_count, pairs_fit, &unused, map_c, map_g, map_u, N, F, D, epi);
}

}  // namespace

cudaError_t launch(cudaStream_t stream, int sm_count, int cluster, int& pairs_fit, const CUtensorMap& map_c,
                   const CUtensorMap& map_g, const CUtensorMap& map_u, int N, int F, int D, bf16* act, bf16* gate,
                   bf16* up, int64_t ld_gu) {
    const Epilogue epi{act, gate, up, nullptr, nullptr, ld_gu, 1.0f};
    return gate ? launch_mode<kTrain>(stream, sm_count, cluster, pairs_fit, map_c, map_g, map_u, N, F, D, epi)
                : launch_mode<kInfer>(stream, sm_count, cluster, pairs_fit, map_c, map_g, map_u, N, F, D, epi);
}

cudaError_t launch_backward(cudaStream_t stream, int sm_count, int cluster, int& pairs_fit, const CUtensorMap& map_dm,
                            const CUtensorMap& map_wt, int N, int F, int D, float alpha, const bf16* g, const bf16* u,
                            bf16* dg, bf16* du, int64_t ld) {
    const Epilogue epi{nullptr, dg, du, g, u, ld, alpha};
    return launch_mode<kBackward>(stream, sm_count, cluster, pairs_fit, map_dm, map_wt, map_wt, N, F, D, epi);
}

}  // namespace hspmn::cuda::sm90a
