// The cached-decoding ops of CudaBlock::decode (core/backend.h DecodeCall): row positions, routing
// into per-sequence query lists, the causal conv over [conv cache, new rows], and the cache writes.
// Everything else decode runs is the forward's own kernels. Rows are grouped by sequence (row_start);
// a row finds its sequence by binary search over row_start (seqs is small: the decoder's slots).
#include <cub/block/block_scan.cuh>

#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

// The sequence j with row_start[j] <= r < row_start[j + 1] (rows of empty sequences belong to none).
__device__ __forceinline__ int seq_of(const DecodeMeta& m, int64_t r) {
    int lo = 0, hi = m.seqs - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (m.row_start[mid] <= r) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// One thread per (row r, rotary pair i): row_pos: [n] i32 = pos0[j] + (r - row_start[j]),
// row_cache: [n] i64 = slot[j] * max_len + row_pos[r] (written by i == 0), and the rotary table's
// row at that position: cos_rows, sin_rows: [n, half] f32.
__global__ void decode_rows_kernel(DecodeMeta m, int64_t n, int64_t max_len, int64_t Dh, double base,
                                   int32_t* __restrict__ row_pos, int64_t* __restrict__ row_cache,
                                   float* __restrict__ cos_rows, float* __restrict__ sin_rows) {
    const int64_t half = Dh / 2;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n * half; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = e / half, i = e - r * half;
        const int j = seq_of(m, r);
        const int64_t p = static_cast<int64_t>(m.pos0[j]) + (r - m.row_start[j]);
        if (i == 0) {
            row_pos[r] = static_cast<int32_t>(p);
            row_cache[r] = static_cast<int64_t>(m.slot[j]) * max_len + p;
        }
        kern::rope_entry(p, i, Dh, base, cos_rows + e, sin_rows + e);
    }
}

constexpr int kChunkThreads = 256;

// The first j in [lo, hi) with sel[j] >= v (sel increasing), else hi.
__device__ __forceinline__ int64_t lower_bound(const int32_t* sel, int64_t lo, int64_t hi, int64_t v) {
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (sel[mid] < v) lo = mid + 1; else hi = mid;
    }
    return lo;
}

// One block: the chunk's part of one sequence's selection, and its one-sequence DecodeMeta.
// sel: [count] i32 increasing  meta: [5] i32  qpos, qrow: [T] i32 (-1 past qcnt)  qcnt: [1] i32
__global__ void __launch_bounds__(kChunkThreads) chunk_select_kernel(const int32_t* __restrict__ sel,
                                                                     const int32_t* __restrict__ count, int64_t s0,
                                                                     int64_t T, int32_t* __restrict__ meta,
                                                                     int32_t* __restrict__ qpos,
                                                                     int32_t* __restrict__ qrow,
                                                                     int32_t* __restrict__ qcnt) {
    __shared__ int64_t range[2];
    if (threadIdx.x == 0) {
        const int64_t c = *count;
        range[0] = lower_bound(sel, 0, c, s0);
        range[1] = lower_bound(sel, range[0], c, s0 + T);
        meta[0] = 0;  // row_start {0, T}, slot {0}, pos0 {s0}, qblock {0}
        meta[1] = static_cast<int32_t>(T);
        meta[2] = 0;
        meta[3] = static_cast<int32_t>(s0);
        meta[4] = 0;
        *qcnt = static_cast<int32_t>(range[1] - range[0]);
    }
    __syncthreads();
    const int64_t lo = range[0], k = range[1] - range[0];
    for (int64_t j = threadIdx.x; j < T; j += kChunkThreads) {
        const int32_t p = j < k ? sel[lo + j] : -1;
        qpos[j] = p;
        qrow[j] = j < k ? static_cast<int32_t>(p - s0) : -1;
    }
}

constexpr int kSelectThreads = 256;

// One block per sequence j, writing query block qb = qblock[j]: route_select's threshold rule
// (n > 0, so NaN is never selected) and its in-order compaction. n: [rows] f32
// qpos, qrow: [seqs, C] i32 (position, row; -1 past the count)  qcnt: [seqs] i32  routed: [rows] i32 or null
__global__ void __launch_bounds__(kSelectThreads) decode_select_kernel(const float* __restrict__ n, DecodeMeta m,
                                                                       int64_t C, int32_t* __restrict__ qpos,
                                                                       int32_t* __restrict__ qrow,
                                                                       int32_t* __restrict__ qcnt,
                                                                       int32_t* __restrict__ routed) {
    using Scan = cub::BlockScan<int, kSelectThreads>;
    __shared__ typename Scan::TempStorage scan_storage;
    const int j = blockIdx.x;
    const int64_t r0 = m.row_start[j], r1 = m.row_start[j + 1], qb = m.qblock[j];
    int32_t* pb = qpos + qb * C;
    int32_t* rb = qrow + qb * C;
    int base = 0;
    for (int64_t s0 = r0; s0 < r1; s0 += kSelectThreads) {
        const int64_t r = s0 + threadIdx.x;
        int flag = 0;
        if (r < r1) {
            flag = n[r] > 0.0f;
            if (routed) routed[r] = flag;
        }
        int offset, total;
        Scan(scan_storage).ExclusiveSum(flag, offset, total);
        if (flag) {
            pb[base + offset] = static_cast<int32_t>(m.pos0[j] + (r - r0));
            rb[base + offset] = static_cast<int32_t>(r);
        }
        base += total;
        __syncthreads();  // scan_storage is reused by the next chunk
    }
    for (int64_t c = base + threadIdx.x; c < C; c += kSelectThreads) {
        pb[c] = -1;
        rb[c] = -1;
    }
    if (threadIdx.x == 0) qcnt[qb] = base;
}

// Where tap `back` of row r reads h: a new row of this call or the slot's conv cache (oldest first,
// K-1 rows). Returns null for positions before 0, which the forward skips (its zero padding).
struct ConvRow {
    int64_t pos, local, seq_first;
    int64_t cache_base;  // slot * (K-1) rows
};
__device__ __forceinline__ ConvRow conv_row(const DecodeMeta& m, int64_t r, int64_t K) {
    const int j = seq_of(m, r);
    const int64_t local = r - m.row_start[j];
    return {static_cast<int64_t>(m.pos0[j]) + local, local, m.row_start[j], static_cast<int64_t>(m.slot[j]) * (K - 1)};
}
__device__ __forceinline__ const __nv_bfloat16* conv_src(const ConvRow& cr, const __nv_bfloat16* h,
                                                         const __nv_bfloat16* cache, int64_t back, int64_t D,
                                                         int64_t K) {
    if (cr.pos < back) return nullptr;
    const int64_t i = cr.local - back;
    if (i >= 0) return h + (cr.seq_first + i) * D;
    return cache + (cr.cache_base + (K - 1) + i) * D;  // i in [-(K-1), -1]
}

// causal_conv_forward_kernel's arithmetic (taps j ascending, same skips) with the taps before the
// call's rows read from the cache.  h, c: [n, D] bf16  w: [D, K] bf16  cache: [max_seqs, K-1, D] bf16
__global__ void decode_causal_conv_kernel(const __nv_bfloat16* __restrict__ h, const __nv_bfloat16* __restrict__ cache,
                                          const __nv_bfloat16* __restrict__ w, DecodeMeta m, int64_t N, int64_t D,
                                          int64_t K, __nv_bfloat16* __restrict__ c) {
    const int64_t d = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (d >= D) return;
    for (int64_t i = blockIdx.y; i < N; i += gridDim.y) {
        const ConvRow cr = conv_row(m, i, K);
        float acc = 0.0f;
        for (int64_t j = 0; j < K; ++j) {
            const __nv_bfloat16* src = conv_src(cr, h, cache, (K - 1) - j, D, K);
            if (!src) continue;
            acc += kern::ld(w + d * K + j) * kern::ld(src + d);
        }
        c[i * D + d] = kern::bf(acc);
    }
}

constexpr int kMaxVecK = kern::kConvVecK;  // as causal_conv.cu's vector kernel

// causal_conv.cu's vector forward arithmetic (D % 8 == 0, K <= 8: taps ascending, 8 channels a thread).
__global__ void __launch_bounds__(128) decode_causal_conv_vec_kernel(const __nv_bfloat16* __restrict__ h,
                                                                     const __nv_bfloat16* __restrict__ cache,
                                                                     const __nv_bfloat16* __restrict__ w, DecodeMeta m,
                                                                     int64_t N, int64_t D, int K,
                                                                     __nv_bfloat16* __restrict__ c) {
    const int64_t d0 = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) * 8;
    if (d0 >= D) return;
    float wr[kMaxVecK][8];
    kern::conv_taps8(w, d0, K, wr);
    for (int64_t i = blockIdx.y; i < N; i += gridDim.y) {
        const ConvRow cr = conv_row(m, i, K);
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
#pragma unroll
        for (int j = 0; j < kMaxVecK; ++j) {
            if (j >= K) continue;
            const __nv_bfloat16* src = conv_src(cr, h, cache, (K - 1) - j, D, K);
            if (!src) continue;
            float f[8];
            kern::load8(src + d0, f);
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[e] += wr[j][e] * f[e];
        }
        kern::store8(c + i * D + d0, acc);
    }
}

// The slot's last K-1 inputs after the call: cache row q is the sequence's input at local index
// T - (K-1) + q, from the new rows when >= 0 else from cache row q + T. q ascends, so a row is read
// (q + T > q) before this thread overwrites it. One thread per (sequence, channel).
// h: [n, D] bf16  cache: [max_seqs, K-1, D] bf16
__global__ void decode_conv_cache_update_kernel(const __nv_bfloat16* __restrict__ h, DecodeMeta m, int64_t D,
                                                int64_t K, __nv_bfloat16* __restrict__ cache) {
    const int64_t d = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (d >= D) return;
    for (int64_t j = blockIdx.y; j < m.seqs; j += gridDim.y) {
        const int64_t first = m.row_start[j], T = m.row_start[j + 1] - first;
        __nv_bfloat16* cb = cache + static_cast<int64_t>(m.slot[j]) * (K - 1) * D;
        for (int64_t q = 0; q < K - 1; ++q) {
            const int64_t i = T - (K - 1) + q;
            cb[q * D + d] = i >= 0 ? h[(first + i) * D + d] : cb[(q + T) * D + d];
        }
    }
}

// k_cache[row_cache[r]] = k[r], likewise v.  k, v: [n, KV] bf16  caches: [max_seqs * max_len, KV] bf16
__global__ void decode_kv_write_kernel(const __nv_bfloat16* __restrict__ k, const __nv_bfloat16* __restrict__ v,
                                       const int64_t* __restrict__ row_cache, int64_t N, int64_t KV,
                                       __nv_bfloat16* __restrict__ k_cache, __nv_bfloat16* __restrict__ v_cache) {
    const bool vec = KV % 8 == 0;
    const int64_t per_row = vec ? KV / 8 : KV;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < N * per_row;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = e / per_row, col = e - r * per_row, dst = row_cache[r] * KV;
        if (vec) {
            const int64_t o = col * 8;
            *reinterpret_cast<kern::Bf16x8*>(k_cache + dst + o) = *reinterpret_cast<const kern::Bf16x8*>(k + r * KV + o);
            *reinterpret_cast<kern::Bf16x8*>(v_cache + dst + o) = *reinterpret_cast<const kern::Bf16x8*>(v + r * KV + o);
        } else {
            k_cache[dst + col] = k[r * KV + col];
            v_cache[dst + col] = v[r * KV + col];
        }
    }
}

// As causal_conv.cu's rows_grid: channel blocks of 128 (x), about 8192 blocks in all (y loops rows).
dim3 rows_grid(int64_t N, int64_t D, int64_t per_thread = 1) {
    const int64_t gx = (D + 128 * per_thread - 1) / (128 * per_thread), cap = 8192 / gx > 1 ? 8192 / gx : 1;
    return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(N < cap ? N : cap));
}

}  // namespace

void decode_rows(Device& d, const DecodeMeta& m, int64_t n, int64_t max_len, int64_t Dh, float rope_base,
                 int32_t* row_pos, int64_t* row_cache, float* cos_rows, float* sin_rows) {
    if (n <= 0) return;
    decode_rows_kernel<<<kern::grid_for(n * (Dh / 2), 256), 256, 0, stream(d)>>>(
        m, n, max_len, Dh, static_cast<double>(rope_base), row_pos, row_cache, cos_rows, sin_rows);
    check_launch("decode_rows");
}

void chunk_select(Device& d, const int32_t* sel, const int32_t* count, int64_t s0, int64_t T, int32_t* meta,
                  int32_t* qpos, int32_t* qrow, int32_t* qcnt) {
    chunk_select_kernel<<<1, kChunkThreads, 0, stream(d)>>>(sel, count, s0, T, meta, qpos, qrow, qcnt);
    check_launch("chunk_select");
}

void decode_select(Device& d, const float* n, const DecodeMeta& m, int64_t C, int32_t* qpos, int32_t* qrow,
                   int32_t* qcnt, int32_t* routed) {
    if (m.seqs <= 0) return;
    decode_select_kernel<<<static_cast<unsigned>(m.seqs), kSelectThreads, 0, stream(d)>>>(n, m, C, qpos, qrow, qcnt,
                                                                                         routed);
    check_launch("decode_select");
}

void decode_causal_conv(Device& d, const __nv_bfloat16* h, const __nv_bfloat16* conv_cache,
                        const __nv_bfloat16* w, const DecodeMeta& m, int64_t n, int64_t D, int64_t K,
                        __nv_bfloat16* c) {
    if (n <= 0) return;
    // The same choice of kernel as causal_conv_forward: the same arithmetic for the same D and K.
    if (D % 8 == 0 && K <= kMaxVecK)
        decode_causal_conv_vec_kernel<<<rows_grid(n, D, 8), 128, 0, stream(d)>>>(h, conv_cache, w, m, n, D,
                                                                                 static_cast<int>(K), c);
    else
        decode_causal_conv_kernel<<<rows_grid(n, D), 128, 0, stream(d)>>>(h, conv_cache, w, m, n, D, K, c);
    check_launch("decode_causal_conv");
}

void decode_conv_cache_update(Device& d, const __nv_bfloat16* h, const DecodeMeta& m, int64_t D, int64_t K,
                              __nv_bfloat16* conv_cache) {
    if (m.seqs <= 0 || K <= 1) return;
    const dim3 g(static_cast<unsigned>((D + 127) / 128), static_cast<unsigned>(m.seqs < 65535 ? m.seqs : 65535));
    decode_conv_cache_update_kernel<<<g, 128, 0, stream(d)>>>(h, m, D, K, conv_cache);
    check_launch("decode_conv_cache_update");
}

void decode_kv_write(Device& d, const __nv_bfloat16* k, const __nv_bfloat16* v, const int64_t* row_cache, int64_t n,
                     int64_t KV, __nv_bfloat16* k_cache, __nv_bfloat16* v_cache) {
    if (n <= 0) return;
    const int64_t work = n * (KV % 8 == 0 ? KV / 8 : KV);
    decode_kv_write_kernel<<<kern::grid_for(work, 256), 256, 0, stream(d)>>>(k, v, row_cache, n, KV, k_cache, v_cache);
    check_launch("decode_kv_write");
}

}  // namespace hspmn::cuda
