// The language model's byte embedding: a row gather forward; a deterministic scatter-add backward.
//
// embedding_backward has no atomics, so a gradient (and a resumed run) is bitwise repeatable:
//  1. a stable radix sort of (token, row) pairs: every token's rows become one run of the sorted
//     order, in increasing row order;
//  2. the sorted positions are cut into fixed chunks (partial_rows(N): at most 256 of at least 64
//     rows, set by N alone). A block (chunk x 128 columns) sums each run piece inside its chunk in
//     sorted order. A run that lies wholly inside the chunk is added to d_table directly (no other
//     block touches that token); a run's piece that continues from the previous chunk goes to
//     head[chunk], the first piece of a run that goes on past the chunk to tail[chunk];
//  3. for each chunk holding a tail, one pass adds tail + the following chunks' heads in chunk
//     order and adds that to d_table.
// A run longer than a chunk (a frequent byte) is thus spread over many blocks, and the extra memory
// is 2 x chunks x D floats plus the sort's [N] buffers, whatever V is.
#include <cub/device/device_radix_sort.cuh>

#include "../../core/error.h"
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

constexpr int kColThreads = 128;  // columns of one block in the backward
constexpr int kPrefetch = 8;      // independent row loads in flight per thread

// x[r] = table[tokens[r]], 8 bf16 a thread (kVec: D % 8 == 0, 16-byte aligned rows).
// table: [V, D] bf16  tokens: [N] i32  x: [N, D] bf16
template <bool kVec>
__global__ void embedding_forward_kernel(const __nv_bfloat16* __restrict__ table, const int32_t* __restrict__ tokens,
                                         int64_t N, int64_t D, __nv_bfloat16* __restrict__ x) {
    const int64_t per_row = kVec ? D / 8 : D;
    const int64_t total = N * per_row;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += stride) {
        const int64_t r = i / per_row, c = i - r * per_row;
        const int64_t src = static_cast<int64_t>(tokens[r]) * D;
        if (kVec)
            reinterpret_cast<uint4*>(x + r * D)[c] = reinterpret_cast<const uint4*>(table + src)[c];
        else
            x[r * D + c] = table[src + c];
    }
}

// seq[i] = i.  seq: [N] i32
__global__ void iota_kernel(int32_t* __restrict__ seq, int64_t N) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N; i += (int64_t)gridDim.x * blockDim.x)
        seq[i] = static_cast<int32_t>(i);
}

// Step 2. keys: [N] i32 sorted tokens  rows: [N] i32 their dx rows  dx: [N, D] bf16
// head, tail: [chunks, D] f32  d_table: [V, D] f32 (+)=.  grid: (ceil(D / kColThreads), chunks)
__global__ void __launch_bounds__(kColThreads)
    embedding_backward_chunk_kernel(const __nv_bfloat16* __restrict__ dx, const int32_t* __restrict__ keys,
                                    const int32_t* __restrict__ rows, int64_t N, int64_t D, int64_t chunk_rows,
                                    float* __restrict__ head, float* __restrict__ tail, float* __restrict__ d_table) {
    const int64_t col = blockIdx.x * (int64_t)kColThreads + threadIdx.x;
    if (col >= D) return;
    const int64_t chunk = blockIdx.y;
    const int64_t a0 = chunk * chunk_rows, a1 = a0 + chunk_rows < N ? a0 + chunk_rows : N;
    // A piece [start, end) of token t's run ends: route its sum by where the run continues.
    auto flush = [&](int32_t t, int64_t start, int64_t end, float acc) {
        const bool from_prev = start == a0 && a0 > 0 && keys[a0 - 1] == t;
        const bool to_next = end == a1 && a1 < N && keys[a1] == t;
        if (from_prev)
            head[chunk * D + col] = acc;
        else if (to_next)
            tail[chunk * D + col] = acc;
        else
            d_table[static_cast<int64_t>(t) * D + col] += acc;
    };
    int32_t cur = keys[a0];
    int64_t start = a0;
    float acc = 0.0f;
    for (int64_t i = a0; i < a1; i += kPrefetch) {
        float v[kPrefetch];
        int32_t t[kPrefetch];
#pragma unroll
        for (int j = 0; j < kPrefetch; ++j) {
            if (i + j < a1) {
                t[j] = keys[i + j];
                v[j] = kern::ld(dx + static_cast<int64_t>(rows[i + j]) * D + col);
            }
        }
#pragma unroll
        for (int j = 0; j < kPrefetch; ++j) {
            if (i + j >= a1) break;
            if (t[j] != cur) {
                flush(cur, start, i + j, acc);
                cur = t[j];
                start = i + j;
                acc = 0.0f;
            }
            acc += v[j];
        }
    }
    flush(cur, start, a1, acc);
}

// Step 3: a chunk whose last run starts in it and continues collects the following chunks' heads.
// grid: (ceil(D / kColThreads), chunks)
__global__ void __launch_bounds__(kColThreads)
    embedding_backward_carry_kernel(const int32_t* __restrict__ keys, int64_t N, int64_t D, int64_t chunk_rows,
                                    int64_t chunks, const float* __restrict__ head, const float* __restrict__ tail,
                                    float* __restrict__ d_table) {
    const int64_t col = blockIdx.x * (int64_t)kColThreads + threadIdx.x;
    if (col >= D) return;
    const int64_t chunk = blockIdx.y;
    const int64_t a0 = chunk * chunk_rows, a1 = a0 + chunk_rows < N ? a0 + chunk_rows : N;
    if (a1 >= N) return;
    const int32_t t = keys[a1 - 1];
    if (keys[a1] != t) return;                                 // the last run ends in this chunk
    if (a0 > 0 && keys[a0] == t && keys[a0 - 1] == t) return;  // it started in an earlier chunk: not ours
    float acc = tail[chunk * D + col];
    for (int64_t k = chunk + 1; k < chunks; ++k) {
        acc += head[k * D + col];
        const int64_t end = (k + 1) * chunk_rows;
        if (end >= N || keys[end] != t) break;  // chunk k is where the run ends
    }
    d_table[static_cast<int64_t>(t) * D + col] += acc;
}

std::size_t align256(std::size_t n) { return (n + 255) & ~std::size_t(255); }

}  // namespace

void embedding_forward(Device& d, const __nv_bfloat16* table, const int32_t* tokens, int64_t N, int64_t D,
                       __nv_bfloat16* x) {
    if (N <= 0 || D <= 0) return;
    const bool vec = D % 8 == 0 && reinterpret_cast<uintptr_t>(table) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(x) % 16 == 0;
    if (vec)
        embedding_forward_kernel<true><<<kern::grid_for(N * (D / 8), 256), 256, 0, stream(d)>>>(table, tokens, N, D, x);
    else
        embedding_forward_kernel<false><<<kern::grid_for(N * D, 256), 256, 0, stream(d)>>>(table, tokens, N, D, x);
    check_launch("embedding_forward");
}

void embedding_backward(Device& d, const __nv_bfloat16* dx, const int32_t* tokens, int64_t N, int64_t D,
                        float* d_table, DeviceBuffer& scratch) {
    if (N <= 0 || D <= 0) return;
    if (N > INT32_MAX)  // cub's item count and the row indices are int32
        fail(HSPMN_ERR_SHAPE, "embedding_backward: %lld rows exceed the int32 sort", static_cast<long long>(N));
    const int n = static_cast<int>(N);
    const int64_t chunk_rows = partial_rows(N), chunks = (N + chunk_rows - 1) / chunk_rows;

    std::size_t sort_bytes = 0;
    check(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const int32_t*>(nullptr),
                                          static_cast<int32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                          static_cast<int32_t*>(nullptr), n, 0, 32, stream(d)),
          "cub::DeviceRadixSort::SortPairs (size)");
    const std::size_t ints = align256(static_cast<std::size_t>(N) * sizeof(int32_t));
    const std::size_t parts = align256(static_cast<std::size_t>(chunks * D) * sizeof(float));
    scratch.ensure(d, 3 * ints + 2 * parts + align256(sort_bytes));
    char* base = scratch.as<char>();
    int32_t* keys = reinterpret_cast<int32_t*>(base);
    int32_t* seq = reinterpret_cast<int32_t*>(base + ints);
    int32_t* rows = reinterpret_cast<int32_t*>(base + 2 * ints);
    float* head = reinterpret_cast<float*>(base + 3 * ints);
    float* tail = reinterpret_cast<float*>(base + 3 * ints + parts);
    void* sort_tmp = base + 3 * ints + 2 * parts;

    iota_kernel<<<kern::grid_for(N, 256), 256, 0, stream(d)>>>(seq, N);
    check_launch("embedding_backward_iota");
    // All 32 bits: nothing assumes a bound on the token values here (LSD radix sort is stable).
    check(cub::DeviceRadixSort::SortPairs(sort_tmp, sort_bytes, tokens, keys, seq, rows, n, 0, 32, stream(d)),
          "cub::DeviceRadixSort::SortPairs");
    const dim3 grid(static_cast<unsigned>((D + kColThreads - 1) / kColThreads), static_cast<unsigned>(chunks));
    embedding_backward_chunk_kernel<<<grid, kColThreads, 0, stream(d)>>>(dx, keys, rows, N, D, chunk_rows, head,
                                                                         tail, d_table);
    check_launch("embedding_backward_chunk");
    embedding_backward_carry_kernel<<<grid, kColThreads, 0, stream(d)>>>(keys, N, D, chunk_rows, chunks, head, tail,
                                                                         d_table);
    check_launch("embedding_backward_carry");
}

}  // namespace hspmn::cuda
