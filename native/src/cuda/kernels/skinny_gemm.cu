// skinny_gemm: y = x W^T for at most 32 rows of x (a decode step), streaming the weights once.
//
// At M <= 32 a GEMM is a pass over W [N, K] bf16: 2 bytes per weight for 2M flops, far below the
// tensor cores' intensity, so the only aim is to keep HBM busy. Each warp of a block streams its K
// quarter of the block's 16-row tile through a private cp.async pipeline (kStages tiles of 128 k in
// flight; each 16-byte copy of a warp covers 256 contiguous bytes of two rows, no registers held while
// the bytes travel), then multiplies it on the tensor cores: mma.sync m16n8k16 with W as the 16-row A
// operand (ldmatrix from the swizzled stage) and the tokens as the 8-column B operand (from x, which
// stays in L1/L2), so one pass over the weights serves up to 32 tokens.
//
// Split-K: a block's 4 warps split its tile's K four ways and sum in shared memory; gridDim.y blocks
// split it further, writing partials that the last block to finish (a per-tile counter) sums in
// order 0..y-1 and hands to the epilogue, so results are deterministic. Counters reset themselves.
#include <algorithm>
#include <cstdlib>

#include "../../core/error.h"
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

using bf16 = __nv_bfloat16;

constexpr int kWarps = 4;   // warps per block, each a quarter of the block's K range
constexpr int kTile = 16;   // output features per block (the mma's M)
constexpr int kKTile = 128;               // k per pipeline stage: 256 bytes of each row
constexpr int kRowBytes = kKTile * 2;
constexpr int kPieces = kTile * kKTile / 8;  // 16-byte pieces of one matrix's stage (256: 8 per lane)

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared without a register; bytes = 0 writes zeros (K's tail).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

// Row r's 16-byte piece c of a stage sits at piece c ^ (r % 8): the 8 rows an ldmatrix reads at one
// column fall in 8 different bank groups.
__device__ __forceinline__ int swizzle(int row, int piece) { return piece ^ (row & 7); }

__device__ __forceinline__ uint32_t ld_x32(const bf16* p) { return __ldg(reinterpret_cast<const unsigned int*>(p)); }

// c (16 x 8 f32) += a (16 x 16 bf16, row) * b (16 x 8 bf16, col)
__device__ __forceinline__ void mma(float* c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                    uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float round_bf16(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }
// As swiglu.cu: the same expression, so the same bits.
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

struct Args {
    const bf16* x;
    int64_t ldx;
    const int32_t* x_map;  // [M] row of x for token m (-1: a zero row) or null (row m)
    int M;
    const bf16* w0;
    const bf16* w1;        // the second matrix of a dual epilogue, else null
    int64_t N, K;
    float* partials;       // [gridDim.y, NW, N / 16, NT * 128] f32 when gridDim.y > 1
    unsigned* counters;    // [N / 16] zero between launches
    int interleave;        // 1: the warps' k tiles interleave (SkinnyTuning::interleave)
    SkinnyEpilogue ep;
};

// Token m = 8 t + 2 q + (i & 1), feature n = row0 + g + 8 (i >> 1) of fragment value i of tile t.
template <int kMode, int NW, int NT>
__device__ __forceinline__ void epilogue(const Args& a, int64_t row0, int g, int q, const float (&v)[NW][NT][4]) {
    const SkinnyEpilogue& e = a.ep;
#pragma unroll
    for (int t = 0; t < NT; ++t) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = 8 * t + 2 * q + (i & 1);
            if (m >= a.M) continue;
            const int64_t n = row0 + g + 8 * (i >> 1);
            const int64_t o = m * e.ldy + n;
            if constexpr (kMode == SKINNY_F32) {
                e.y_f32[o] = v[0][t][i];
            } else if constexpr (kMode == SKINNY_BF16) {
                e.y_bf16[o] = __float2bfloat16_rn(v[0][t][i]);
            } else if constexpr (kMode == SKINNY_SWIGLU) {
                // swiglu_forward reads gate and up as stored (bf16)
                const float gt = round_bf16(v[0][t][i]), up = round_bf16(v[NW - 1][t][i]);
                e.y_bf16[o] = __float2bfloat16_rn(gt * sigmoid(gt) * up);
            } else if constexpr (kMode == SKINNY_RESIDUAL) {
                // res = x + down(act): cuBLASLt's beta = 1 accumulation into f32(x)
                const float r = v[0][t][i] + __bfloat162float(e.residual[m * e.ld_residual + n]);
                e.y_f32[o] = r;
                e.y_bf16[o] = __float2bfloat16_rn(r);
            } else if constexpr (kMode == SKINNY_KV) {
                // K before RoPE in f32 (rope_step finishes it); V straight into the slot's cache row
                e.y_f32[o] = v[0][t][i];
                const int64_t rc = e.row_cache[m];
                if (rc >= 0) e.cache[rc * a.N + n] = __float2bfloat16_rn(v[NW - 1][t][i]);
            } else {  // SKINNY_SCATTER: out = res + o on the routed rows (gate_scatter_forward, y = 1)
                if (e.gate[m]) e.y_bf16[o] = __float2bfloat16_rn(e.residual_f32[o] + v[0][t][i]);
            }
        }
    }
}

template <int kMode, int NW, int NT, int STAGES>
__global__ void __launch_bounds__(kWarps * 32) skinny_gemm_kernel(Args a) {
    extern __shared__ __align__(128) unsigned char stages[];  // [kWarps][STAGES][NW][16 rows][256 B]
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    const int64_t tile = blockIdx.x, row0 = tile * kTile;
    const bf16* w[NW];
    w[0] = a.w0 + row0 * a.K;
    if constexpr (NW == 2) w[1] = a.w1 + row0 * a.K;
    unsigned char* mine = stages + static_cast<size_t>(warp) * STAGES * NW * kTile * kRowBytes;
    const int64_t ktiles = (a.K + kKTile - 1) / kKTile, splits = static_cast<int64_t>(gridDim.y) * kWarps;
    const int64_t split = static_cast<int64_t>(blockIdx.y) * kWarps + warp;
    // The warp's k tiles: a contiguous run (t0 + i), or, interleaved, every splits-th tile from its own
    // (split + i splits), so the warps of a tile read neighbouring 256-byte pieces of each row at once.
    const int64_t t0 = a.interleave ? split : split * ktiles / splits;
    const int64_t stride = a.interleave ? splits : 1;
    const int64_t count = a.interleave ? (split < ktiles ? (ktiles - split + splits - 1) / splits : 0)
                                       : (split + 1) * ktiles / splits - t0;

    // Stage `st` <- k tile t of every matrix: lane l copies pieces l + 32 i (row (l + 32 i) / 16).
    auto load = [&](int64_t t, int st) {
        const int64_t k0 = t * kKTile;
#pragma unroll
        for (int j = 0; j < NW; ++j) {
            unsigned char* dst = mine + (st * NW + j) * kTile * kRowBytes;
#pragma unroll
            for (int i = 0; i < kPieces / 32; ++i) {
                const int c = lane + 32 * i, row = c >> 4, piece = c & 15;
                const int64_t k = k0 + piece * 8;
                const bool in = k < a.K;
                cp_async16(smem_addr(dst + row * kRowBytes + swizzle(row, piece) * 16),
                           in ? w[j] + row * a.K + k : w[j], in ? 16 : 0);
            }
        }
    };
    // The weights do not depend on the kernels before this one: an ungated launch starts streaming
    // them while the previous kernel drains (programmatic launch), then waits for its input.
    if (!a.ep.gate) {
#pragma unroll
        for (int s = 0; s < STAGES - 1; ++s) {
            if (s < count) load(t0 + s * stride, s);
            cp_async_commit();  // empty groups keep the count uniform
        }
    }
    kern::pdl_wait();
    kern::pdl_launch_dependents();
    if (a.ep.reset_counts && blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x < a.M) {
        // the step's query counts go back to 0 once its attention has run (decode_step_pre sets them)
        const int32_t s = a.ep.reset_slots[threadIdx.x];
        if (s >= 0) a.ep.reset_counts[s] = 0;
    }
    if (a.ep.gate) {
        // Rows not gated in need no product; when none is, the weights are not read at all.
        bool any = false;
        for (int m = 0; m < a.M; ++m) any |= a.ep.gate[m] != 0;
        if (!any) return;
#pragma unroll
        for (int s = 0; s < STAGES - 1; ++s) {
            if (s < count) load(t0 + s * stride, s);
            cp_async_commit();
        }
    }

    // B operand rows: token 8 t + g of tile t (null: a zero row)
    const bf16* xrow[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        const int m = 8 * t + g;
        int64_t r = -1;
        if (m < a.M) r = a.x_map ? a.x_map[m] : m;
        xrow[t] = r >= 0 ? a.x + r * a.ldx : nullptr;
    }
    float acc[NW][NT][4];
#pragma unroll
    for (int j = 0; j < NW; ++j)
#pragma unroll
        for (int t = 0; t < NT; ++t)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[j][t][i] = 0.0f;

    // ldmatrix.x4 addresses: lane l gives row (l % 8) + 8 ((l / 8) % 2) of piece (kk / 8) + l / 16
    const int lrow = (lane & 7) + ((lane >> 3) & 1) * 8, lpiece = lane >> 4;
    for (int64_t i = 0; i < count; ++i) {
        cp_async_wait<STAGES - 2>();
        __syncwarp();  // every lane's copies of tile i landed; tile i-1's stage is free for reuse
        const int64_t in = i + STAGES - 1;
        if (in < count) load(t0 + in * stride, static_cast<int>(in % STAGES));
        cp_async_commit();
        const int64_t t = t0 + i * stride;
        const int st = static_cast<int>(i % STAGES);
        const int64_t k0 = t * kKTile;
#pragma unroll
        for (int kk = 0; kk < kKTile; kk += 16) {
            const int64_t k = k0 + kk;
            if (k >= a.K) break;
            uint32_t b[NT][2];
#pragma unroll
            for (int tt = 0; tt < NT; ++tt) {
                const bool has = xrow[tt] != nullptr;
                b[tt][0] = has && k + 2 * q < a.K ? ld_x32(xrow[tt] + k + 2 * q) : 0u;
                b[tt][1] = has && k + 2 * q + 8 < a.K ? ld_x32(xrow[tt] + k + 2 * q + 8) : 0u;
            }
#pragma unroll
            for (int j = 0; j < NW; ++j) {
                const unsigned char* base = mine + (st * NW + j) * kTile * kRowBytes;
                uint32_t a0, a1, a2, a3;
                ldmatrix_x4(smem_addr(base + lrow * kRowBytes + swizzle(lrow, (kk >> 3) + lpiece) * 16), a0, a1, a2, a3);
#pragma unroll
                for (int tt = 0; tt < NT; ++tt) mma(acc[j][tt], a0, a1, a2, a3, b[tt][0], b[tt][1]);
            }
        }
    }
    cp_async_wait<0>();

    // The block's four K quarters, summed by warp 0 in warp order.
    __shared__ float red[kWarps][NW][NT][4][32];
#pragma unroll
    for (int j = 0; j < NW; ++j)
#pragma unroll
        for (int t = 0; t < NT; ++t)
#pragma unroll
            for (int i = 0; i < 4; ++i) red[warp][j][t][i][lane] = acc[j][t][i];
    __syncthreads();
    if (warp != 0) return;
#pragma unroll
    for (int j = 0; j < NW; ++j)
#pragma unroll
        for (int t = 0; t < NT; ++t)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                float s = red[0][j][t][i][lane];
#pragma unroll
                for (int w = 1; w < kWarps; ++w) s += red[w][j][t][i][lane];
                acc[j][t][i] = s;
            }

    if (gridDim.y > 1) {
        const int64_t tiles = a.N / kTile, frag = NT * 4 * 32;
        auto slot = [&](int64_t y, int j) { return a.partials + ((y * NW + j) * tiles + tile) * frag; };
#pragma unroll
        for (int j = 0; j < NW; ++j)
#pragma unroll
            for (int t = 0; t < NT; ++t)
#pragma unroll
                for (int i = 0; i < 4; ++i) slot(blockIdx.y, j)[(t * 4 + i) * 32 + lane] = acc[j][t][i];
        __threadfence();  // the partial is visible before the counter says so
        unsigned done = 0;
        if (lane == 0) done = atomicAdd(&a.counters[tile], 1u);
        done = __shfl_sync(0xffffffffu, done, 0);
        if (done != gridDim.y - 1) return;
        __threadfence();  // the other blocks' partials, published before their counts
#pragma unroll
        for (int j = 0; j < NW; ++j)
#pragma unroll
            for (int t = 0; t < NT; ++t)
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    float s = 0.0f;
                    for (int64_t y = 0; y < gridDim.y; ++y) s += __ldcg(slot(y, j) + (t * 4 + i) * 32 + lane);
                    acc[j][t][i] = s;
                }
        if (lane == 0) a.counters[tile] = 0;
    }
    epilogue<kMode, NW, NT>(a, row0, g, q, acc);
}

template <int kMode, int NW, int NT, int STAGES>
void launch_stages(Device& d, const Args& a, dim3 grid) {
    constexpr int smem = kWarps * STAGES * NW * kTile * kRowBytes;
    static bool raised = false;  // per instantiation: over 48 KB needs the opt-in, once per process
    if (!raised) {
        check(cudaFuncSetAttribute(skinny_gemm_kernel<kMode, NW, NT, STAGES>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
              "cudaFuncSetAttribute (skinny_gemm)");
        raised = true;
    }
    kern::launch_pdl(skinny_gemm_kernel<kMode, NW, NT, STAGES>, grid, dim3(kWarps * 32), smem, stream(d), a);
}

template <int kMode, int NW, int NT>
void launch_nt(Device& d, const Args& a, dim3 grid) {
    const int stages = skinny_tuning().stages > 0 ? skinny_tuning().stages : 2;
    if (stages <= 2) launch_stages<kMode, NW, NT, 2>(d, a, grid);
    else if (stages == 3) launch_stages<kMode, NW, NT, 3>(d, a, grid);
    else launch_stages<kMode, NW, NT, 4>(d, a, grid);
}

template <int kMode, int NW>
void launch_mode(Device& d, const Args& a, dim3 grid) {
    if (a.M <= 8) launch_nt<kMode, NW, 1>(d, a, grid);
    else if (a.M <= 16) launch_nt<kMode, NW, 2>(d, a, grid);
    else launch_nt<kMode, NW, 4>(d, a, grid);
}

// Blocks along K: about blocks_per_sm blocks per multiprocessor, each warp at least one k tile. The
// defaults follow the sweep of tests/skinny_gemm_cuda --sweep on an H100 (BENCHMARKS.md): wide outputs
// stream best with one block per multiprocessor, narrow ones need more blocks along K.
int64_t splits_for(Device& d, int64_t N, int64_t K) {
    const int64_t tiles = N / kTile;
    const int bps = skinny_tuning().blocks_per_sm > 0 ? skinny_tuning().blocks_per_sm
                    : tiles >= 512                    ? 1
                    : tiles >= 128                    ? 4
                                                      : 8;
    const int64_t want = static_cast<int64_t>(bps) * sm_count(d);
    const int64_t by_k = std::max<int64_t>(1, (K + kKTile - 1) / kKTile / kWarps);
    return std::max<int64_t>(1, std::min({(want + tiles - 1) / tiles, by_k, int64_t{65535}}));
}

int nt_of(int64_t M) { return M <= 8 ? 1 : M <= 16 ? 2 : 4; }

// Split-K partials of a launch: [y, matrices, N / 16, NT * 128] f32 when it splits across blocks.
std::size_t partials_bytes(Device& d, int64_t M, int64_t N, int64_t K, int nw) {
    const int64_t y = splits_for(d, N, K);
    return y > 1 ? static_cast<std::size_t>(y * nw * (N / kTile) * nt_of(M) * 4 * 32) * sizeof(float) : 0;
}

}  // namespace

SkinnyTuning& skinny_tuning() {
    // HSPMN_SKINNY_INTERLEAVE=1 selects the interleaved k tiles in a whole process (benchmarks compare
    // the two assignments with it); read once.
    static SkinnyTuning t = [] {
        SkinnyTuning v;
        const char* e = std::getenv("HSPMN_SKINNY_INTERLEAVE");
        v.interleave = e && e[0] == '1' ? 1 : 0;
        return v;
    }();
    return t;
}

bool skinny_gemm_fits(int64_t M, int64_t N, int64_t K) {
    return M >= 1 && M <= kSkinnyMaxRows && N > 0 && N % kTile == 0 && N / kTile <= 0x7fffffff && K > 0 &&
           K % 8 == 0;
}

void skinny_gemm_scratch(Device& d, SkinnyScratch& s, int64_t M, int64_t N, int64_t K, int nw) {
    const std::size_t need = partials_bytes(d, M, N, K, nw);
    if (s.partials.bytes() < need) s.partials.ensure(d, need);
    const std::size_t cnt = static_cast<std::size_t>(N / kTile) * sizeof(unsigned);
    if (s.counters.bytes() < cnt) {
        s.counters.ensure(d, cnt);
        s.counters.zero(d);
    }
}

void skinny_gemm(Device& d, int64_t M, int64_t N, int64_t K, const __nv_bfloat16* x, int64_t ldx, const int32_t* x_map,
                 const __nv_bfloat16* w0, const __nv_bfloat16* w1, const SkinnyEpilogue& ep, SkinnyScratch& s) {
    if (!skinny_gemm_fits(M, N, K))
        fail(HSPMN_ERR_INTERNAL, "skinny_gemm: M %lld, N %lld, K %lld outside its shapes (M <= %d, N %% 16, K %% 8)",
             static_cast<long long>(M), static_cast<long long>(N), static_cast<long long>(K), kSkinnyMaxRows);
    const int nw = w1 ? 2 : 1;
    if ((ep.mode == SKINNY_SWIGLU || ep.mode == SKINNY_KV) != (nw == 2))
        fail(HSPMN_ERR_INTERNAL, "skinny_gemm: epilogue %d with %d weight matrices", ep.mode, nw);
    const int64_t y = splits_for(d, N, K);
    // The scratch is sized before any graph capture (skinny_gemm_scratch); growing here would move
    // it under a captured graph, so a launch that does not fit is a bug, not a reallocation.
    if (s.partials.bytes() < partials_bytes(d, M, N, K, nw) ||
        s.counters.bytes() < static_cast<std::size_t>(N / kTile) * sizeof(unsigned))
        fail(HSPMN_ERR_INTERNAL, "skinny_gemm: scratch not sized for M %lld, N %lld, K %lld", static_cast<long long>(M),
             static_cast<long long>(N), static_cast<long long>(K));
    Args a{x, ldx, x_map, static_cast<int>(M), w0, w1, N, K, s.partials.as<float>(), s.counters.as<unsigned>(),
           skinny_tuning().interleave > 0 ? 1 : 0, ep};
    const dim3 grid(static_cast<unsigned>(N / kTile), static_cast<unsigned>(y));
    switch (ep.mode) {
        case SKINNY_F32: launch_mode<SKINNY_F32, 1>(d, a, grid); break;
        case SKINNY_BF16: launch_mode<SKINNY_BF16, 1>(d, a, grid); break;
        case SKINNY_SWIGLU: launch_mode<SKINNY_SWIGLU, 2>(d, a, grid); break;
        case SKINNY_RESIDUAL: launch_mode<SKINNY_RESIDUAL, 1>(d, a, grid); break;
        case SKINNY_KV: launch_mode<SKINNY_KV, 2>(d, a, grid); break;
        case SKINNY_SCATTER: launch_mode<SKINNY_SCATTER, 1>(d, a, grid); break;
        default: fail(HSPMN_ERR_INTERNAL, "skinny_gemm: unknown epilogue %d", ep.mode);
    }
    check_launch("skinny_gemm");
}

}  // namespace hspmn::cuda
