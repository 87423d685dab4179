// The Hopper pieces the hand-written sm_90a GEMM kernels share (swiglu_gemm_wgmma.cu,
// down_residual_wgmma.cu): mbarriers, TMA copies (multicast to a CTA pair included), wgmma on
// 128-byte-swizzled shared-memory tiles, and the grouped tile walk. Device code only; include it from
// .cu files compiled for sm_90a.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>

#include <cstdint>

namespace hspmn::cuda::sm90a::ops {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- mbarriers (one CTA) ----
__device__ __forceinline__ void bar_init(uint64_t* bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void bar_expect_tx(uint64_t* bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void bar_arrive(uint64_t* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}
// Returns once the phase of the given parity has completed (a fresh barrier is in phase 0, so waiting
// on parity 1 returns at once: the producer's first pass over the empty slots).
__device__ __forceinline__ void bar_wait(uint64_t* bar, uint32_t parity) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "WAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
        "@!p bra WAIT;\n"
        "}\n" ::"r"(smem_addr(bar)),
        "r"(parity)
        : "memory");
}

// Arrive on the barrier at the same place in CTA `rank` of the cluster: a consumer warp releases a slot
// to both producers that copy into it. Default (CTA-scope release) semantics, as CUTLASS's cluster
// barriers use: the warp's wgmma.wait_group has already retired the slot's reads. With
// .release.cluster here and .acquire.cluster on the producer's wait the kernel ran at about half speed
// (H100, BENCHMARKS.md 2026-12-07).
__device__ __forceinline__ void bar_arrive_cluster(uint64_t* bar, uint32_t rank) {
    asm volatile(
        "{\n"
        ".reg .b32 remote;\n"
        "mapa.shared::cluster.u32 remote, %0, %1;\n"
        "mbarrier.arrive.shared::cluster.b64 _, [remote];\n"
        "}\n" ::"r"(smem_addr(bar)),
        "r"(rank)
        : "memory");
}
__device__ __forceinline__ uint32_t cluster_rank() {
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}

// ---- TMA: a 2-D box of the tensor map at (x = column, y = row) into shared memory ----
__device__ __forceinline__ void tma_load(void* dst, const CUtensorMap* map, uint64_t* bar, int x, int y) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];"
        ::"r"(smem_addr(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(x), "r"(y)
        : "memory");
}

// tma_load with an L2 eviction priority (a policy from l2_evict_first / l2_evict_last) for the lines
// it reads; policy 0: no hint (plain tma_load).
__device__ __forceinline__ void tma_load(void* dst, const CUtensorMap* map, uint64_t* bar, int x, int y,
                                         uint64_t policy) {
    if (!policy) return tma_load(dst, map, bar, x, y);
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
        " [%0], [%1, {%3, %4}], [%2], %5;"
        ::"r"(smem_addr(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(x), "r"(y), "l"(policy)
        : "memory");
}

// L2 policies for the hinted copies: evict_first for an operand streamed once, evict_last for one that
// every tile in flight reads again.
__device__ __forceinline__ uint64_t l2_evict_first() {
    uint64_t p;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
    return p;
}
__device__ __forceinline__ uint64_t l2_evict_last() {
    uint64_t p;
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(p));
    return p;
}

// The same box into the same shared-memory offset of every CTA in `mask` (bit r: cluster rank r), each
// CTA's barrier at `bar`'s offset counting the bytes that land there.
__device__ __forceinline__ void tma_load_multicast(void* dst, const CUtensorMap* map, uint64_t* bar, int x, int y,
                                                   uint16_t mask) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
        " [%0], [%1, {%3, %4}], [%2], %5;"
        ::"r"(smem_addr(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(x), "r"(y), "h"(mask)
        : "memory");
}

// tma_load_multicast with an L2 eviction priority; policy 0: no hint.
__device__ __forceinline__ void tma_load_multicast(void* dst, const CUtensorMap* map, uint64_t* bar, int x, int y,
                                                   uint16_t mask, uint64_t policy) {
    if (!policy) return tma_load_multicast(dst, map, bar, x, y, mask);
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
        ".L2::cache_hint [%0], [%1, {%3, %4}], [%2], %5, %6;"
        ::"r"(smem_addr(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(x), "r"(y), "h"(mask),
          "l"(policy)
        : "memory");
}

// ---- wgmma ----
// Shared-memory matrix descriptor of a K-major tile written by TMA with the 128-byte swizzle: rows of
// 128 bytes, 8-row groups 1024 bytes apart (stride byte offset), the leading byte offset unused by
// this layout. Moving 16 elements along K is +32 bytes on the start address.
__device__ __forceinline__ uint64_t desc_sw128(uint32_t saddr) {
    return static_cast<uint64_t>((saddr & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) |
           (uint64_t(1) << 62);
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Keeps the compiler from moving reads or writes of the accumulators across the asynchronous MMAs.
__device__ __forceinline__ void fence_acc(float (&d)[128]) {
#pragma unroll
    for (int i = 0; i < 128; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
// d[64 x 256] (+)= A[64 x 16] B[256 x 16]^T, both from shared memory; accumulate == 0 overwrites d.
__device__ __forceinline__ void wgmma_m64n256k16(float (&d)[128], uint64_t a, uint64_t b, int accumulate) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63,"
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79,"
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95,"
        "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111,"
        "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
        "}, %128, %129, p, 1, 1, 0, 0;\n"
        "}\n"
        :
          "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
          "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
          "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
          "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
          "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
          "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
          "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
          "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]),
          "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]),
          "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]),
          "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]),
          "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]),
          "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]),
          "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]),
          "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]),
          "+f"(d[126]), "+f"(d[127])
        : "l"(a), "l"(b), "r"(accumulate));
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
}

// Tile t of the grid walk: groups of `group` row tiles, the row tile fastest inside a group, so the
// tiles in flight at once share a few row blocks of A and a few column blocks of W (both stay in L2).
__device__ __forceinline__ void tile_coords(int t, int tiles_m, int tiles_n, int group, int& tm, int& tn) {
    const int per_group = group * tiles_n;
    const int first = (t / per_group) * group;
    const int rows = min(tiles_m - first, group);
    const int r = t % per_group;
    tm = first + r % rows;
    tn = r / rows;
}

// A consumer warpgroup's main loop over one tile: for each of nk k-blocks, wait for its stage (a ring
// of kStages slots of kStageBytes, full/empty barriers, s and phase carried from tile to tile), multiply
// the stage's 64 rows at a_offset by its 256 rows at b_offset into d (64 x 256, f32; the first k-block
// overwrites d), keep one group of MMAs in flight, and hand the slot before it back through
// release(&empty[slot]) (lane 0 of each warp). at_k(k) runs after k-block k's MMAs are issued: the
// swiglu kernel's consumers hand off the last tile's second half there. On return every MMA of the
// tile is done and every slot released.
template <int kStages, int kStageBytes, class Release, class AtK>
__device__ __forceinline__ void mma_tile(float (&d)[128], uint8_t* smem, uint64_t* full, uint64_t* empty, int& s,
                                         uint32_t& phase, int nk, uint32_t a_offset, uint32_t b_offset, int lane,
                                         Release release, AtK at_k) {
    int prev = -1;
    for (int k = 0; k < nk; ++k) {
        bar_wait(&full[s], phase);
        const uint32_t base = smem_addr(smem + s * kStageBytes);
        const uint64_t da = desc_sw128(base + a_offset), db = desc_sw128(base + b_offset);
        fence_acc(d);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)  // a k-block is 64 wide: four k16 steps, +32 bytes each
            wgmma_m64n256k16(d, da + 2 * kk, db + 2 * kk, (k > 0 || kk > 0) ? 1 : 0);
        wgmma_commit();
        // One group stays in flight: the previous slot is free once its group is done.
        wgmma_wait<1>();
        fence_acc(d);
        if (prev >= 0 && lane == 0) release(&empty[prev]);
        prev = s;
        if (++s == kStages) {
            s = 0;
            phase ^= 1;
        }
        at_k(k);
    }
    wgmma_wait<0>();
    fence_acc(d);
    if (lane == 0) release(&empty[prev]);
}

// Hands a slot read by this warp back to every producer that writes into it: the CTA's own, and with
// kCluster 2 the peer's too (each copies one W box into both CTAs).
template <int kCluster>
__device__ __forceinline__ void release_slot(uint64_t* bar) {
    if (kCluster > 1) {
        for (uint32_t r = 0; r < kCluster; ++r) bar_arrive_cluster(bar, r);
    } else {
        bar_arrive(bar);
    }
}

// The producer thread's loop: for each tile of the CTA's walk (units first, first + stride, ...; a unit
// is kCluster row tiles of one column tile, rank r taking row tile kCluster um + r) and each of nk
// k-blocks, wait for a free slot, expect kStageBytes on its full barrier, copy the A box (kBlockM rows
// of map_a at row tile tm) to the slot's start (with L2 policy a_policy, none if 0), and let
// load_w(slot, &full[s], k, tn) copy the W boxes.
template <int kStages, int kStageBytes, int kCluster, int kBlockM, int kBlockK, class LoadW>
__device__ __forceinline__ void produce(uint8_t* smem, uint64_t* full, uint64_t* empty, const CUtensorMap* map_a,
                                        int first, int stride, int units, int units_m, int tiles_n, int group, int nk,
                                        uint32_t rank, LoadW load_w, uint64_t a_policy = 0) {
    int s = 0;
    uint32_t phase = 0;
    for (int t = first; t < units; t += stride) {
        int um, tn;
        tile_coords(t, units_m, tiles_n, group, um, tn);
        const int tm = um * kCluster + rank;
        for (int k = 0; k < nk; ++k) {
            bar_wait(&empty[s], phase ^ 1);
            bar_expect_tx(&full[s], kStageBytes);  // out-of-bounds parts arrive as zeros and count
            uint8_t* st = smem + s * kStageBytes;
            tma_load(st, map_a, &full[s], k * kBlockK, tm * kBlockM, a_policy);
            load_w(st, &full[s], k, tn);
            if (++s == kStages) {
                s = 0;
                phase ^= 1;
            }
        }
    }
}

}  // namespace hspmn::cuda::sm90a::ops
