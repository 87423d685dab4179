// loss_finish: the model's reported loss from the fused cross-entropy's sum and the layers' aux,
// on the device (one thread: L is at most 1024), so a training step reads nothing back.
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

// ce_sum: [1] f32  stats: [L, 2] f32 {aux, routed}  loss: [2] f32
__global__ void loss_finish_kernel(const float* __restrict__ ce_sum, const float* __restrict__ stats, int64_t L,
                                   int64_t N, float* __restrict__ loss) {
    const double ce = static_cast<double>(ce_sum[0]) / static_cast<double>(N);
    double total = ce;
    for (int64_t l = 0; l < L; ++l) total += static_cast<double>(stats[2 * l]);
    loss[0] = static_cast<float>(total);
    loss[1] = static_cast<float>(ce);
}

}  // namespace

void loss_finish(Device& d, const float* ce_sum, const float* stats, int64_t L, int64_t N, float* loss) {
    loss_finish_kernel<<<1, 1, 0, stream(d)>>>(ce_sum, stats, L, N, loss);
    check_launch("loss_finish");
}

}  // namespace hspmn::cuda
