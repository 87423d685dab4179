// sum_squares: the global gradient norm's sum of g^2 over many float32 arrays (every parameter's
// gradient), in double, deterministic: each span gets a fixed number of blocks (set by its length),
// every block writes one partial, and one block sums the partials in index order. One launch for all
// spans (a device table maps a block to its span), so a 24-layer model's ~300 gradients cost two
// kernels, not 300.
#include <vector>

#include "../../core/error.h"
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kPerBlock = 16 * kThreads;  // elements a block takes before another block is added
constexpr int64_t kMaxBlocksPerSpan = 1024;

struct SpanRow {
    const float* data;
    int64_t numel;
    int64_t first_block;  // blocks [first_block, next span's first_block) are this span's
};

// table: [count] SpanRow  partials: [total blocks] f64.  grid: total blocks
__global__ void __launch_bounds__(kThreads)
    sum_squares_partials_kernel(const SpanRow* __restrict__ table, int64_t count, double* __restrict__ partials) {
    __shared__ double scratch[32];
    const int64_t b = blockIdx.x;
    int64_t lo = 0, hi = count - 1;  // the last span whose first_block <= b
    while (lo < hi) {
        const int64_t mid = (lo + hi + 1) / 2;
        if (table[mid].first_block <= b) lo = mid; else hi = mid - 1;
    }
    const SpanRow s = table[lo];
    const int64_t blocks = (lo + 1 < count ? table[lo + 1].first_block : gridDim.x) - s.first_block;
    const int64_t stride = blocks * kThreads;
    double acc = 0.0;
    for (int64_t i = (b - s.first_block) * kThreads + threadIdx.x; i < s.numel; i += stride) {
        const double g = static_cast<double>(s.data[i]);
        acc += g * g;
    }
    acc = kern::block_sum(acc, scratch);
    if (threadIdx.x == 0) partials[b] = acc;
}

// out[0] = sum of partials in a fixed order.  One block of 1024.
__global__ void __launch_bounds__(1024) sum_partials_kernel(const double* __restrict__ partials, int64_t n,
                                                           double* __restrict__ out) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += 1024) acc += partials[i];
    acc = kern::block_sum(acc, scratch);
    if (threadIdx.x == 0) out[0] = acc;
}

}  // namespace

double sum_squares(Device& d, const GradSpan* spans, int64_t count, DeviceBuffer& scratch) {
    std::vector<SpanRow, TrackedAllocator<SpanRow>> table;
    int64_t blocks = 0;
    for (int64_t i = 0; i < count; ++i) {
        if (spans[i].numel <= 0) continue;
        int64_t nb = (spans[i].numel + kPerBlock - 1) / kPerBlock;
        if (nb > kMaxBlocksPerSpan) nb = kMaxBlocksPerSpan;
        table.push_back({spans[i].data, spans[i].numel, blocks});
        blocks += nb;
    }
    if (table.empty()) return 0.0;
    if (blocks > INT32_MAX)
        fail(HSPMN_ERR_SHAPE, "sum_squares: %lld blocks exceed the grid", static_cast<long long>(blocks));
    const std::size_t table_bytes = (table.size() * sizeof(SpanRow) + 255) / 256 * 256;
    scratch.ensure(d, table_bytes + static_cast<std::size_t>(blocks + 1) * sizeof(double));
    auto* dev_table = scratch.as<SpanRow>();
    auto* partials = reinterpret_cast<double*>(scratch.as<char>() + table_bytes);
    double* dev_out = partials + blocks;
    // From pageable memory: returns once the table is staged, so `table` may go out of scope.
    check(cudaMemcpyAsync(dev_table, table.data(), table.size() * sizeof(SpanRow), cudaMemcpyHostToDevice, stream(d)),
          "cudaMemcpyAsync (sum_squares table)");
    sum_squares_partials_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream(d)>>>(
        dev_table, static_cast<int64_t>(table.size()), partials);
    check_launch("sum_squares_partials");
    sum_partials_kernel<<<1, 1024, 0, stream(d)>>>(partials, blocks, dev_out);
    check_launch("sum_squares_total");
    double result = 0.0;
    check(cudaMemcpyAsync(&result, dev_out, sizeof(double), cudaMemcpyDeviceToHost, stream(d)),
          "cudaMemcpyAsync (sum_squares result)");
    check(cudaStreamSynchronize(stream(d)), "cudaStreamSynchronize (sum_squares)");
    return result;
}

}  // namespace hspmn::cuda
