// transpose_bf16: out = in^T for a bf16 matrix, through 32 x 32 tiles of shared memory so that both the
// reads and the writes go along rows (the backward's W_down^T for swiglu_backward_gemm: 32 MiB at the
// 1B shape, once per block backward).
#include "../../core/error.h"
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

constexpr int kTile = 32, kRowsPerPass = 8;

// in: [rows, cols]  out: [cols, rows]. Blocks of 32 x 8 threads; a block's tile is 32 x 32, each thread
// moving 4 elements; grid y walks the row tiles (a loop when there are more than 65535).
__global__ void transpose_bf16_kernel(const __nv_bfloat16* __restrict__ in, int64_t rows, int64_t cols,
                                      __nv_bfloat16* __restrict__ out) {
    __shared__ __nv_bfloat16 tile[kTile][kTile + 1];  // +1: a column of the tile spans all banks
    const int64_t c0 = int64_t(blockIdx.x) * kTile;
    for (int64_t r0 = int64_t(blockIdx.y) * kTile; r0 < rows; r0 += int64_t(gridDim.y) * kTile) {
        for (int i = threadIdx.y; i < kTile; i += kRowsPerPass) {
            const int64_t r = r0 + i, c = c0 + threadIdx.x;
            if (r < rows && c < cols) tile[i][threadIdx.x] = in[r * cols + c];
        }
        __syncthreads();
        for (int i = threadIdx.y; i < kTile; i += kRowsPerPass) {
            const int64_t c = c0 + i, r = r0 + threadIdx.x;
            if (c < cols && r < rows) out[c * rows + r] = tile[threadIdx.x][i];
        }
        __syncthreads();  // the tile is refilled by the next pass
    }
}

}  // namespace

void transpose_bf16(Device& d, const __nv_bfloat16* in, int64_t rows, int64_t cols, __nv_bfloat16* out) {
    if (rows <= 0 || cols <= 0) return;
    const int64_t col_tiles = (cols + kTile - 1) / kTile, row_tiles = (rows + kTile - 1) / kTile;
    if (col_tiles > 2147483647LL) fail(HSPMN_ERR_SHAPE, "transpose_bf16: %lld columns", static_cast<long long>(cols));
    const dim3 grid(static_cast<unsigned>(col_tiles), static_cast<unsigned>(row_tiles < 65535 ? row_tiles : 65535));
    transpose_bf16_kernel<<<grid, dim3(kTile, kRowsPerPass), 0, stream(d)>>>(in, rows, cols, out);
    check_launch("transpose_bf16");
}

}  // namespace hspmn::cuda
