// Placeholders for cuda_block.h until cuda_block.cu exists (CMake compiles this file only then):
// the library links and a CUDA context works for tensors, while blocks answer NOT_BUILT.
#include "../core/error.h"
#include "cuda_block.h"

namespace hspmn::cuda {

BlockImpl* create_cuda_block(Device&, const BlockConfig&, uint64_t) {
    fail(HSPMN_ERR_NOT_BUILT, "the CUDA block is not implemented in this build (no cuda_block.cu)");
}

void gumbel_noise(Device&, uint64_t, int64_t, int32_t, int64_t, int64_t, float*) {
    fail(HSPMN_ERR_NOT_BUILT, "CUDA gumbel_noise is not implemented in this build (no cuda_block.cu)");
}

int64_t find_non_finite(Device&, const void*, int32_t, int64_t) {
    fail(HSPMN_ERR_NOT_BUILT, "CUDA find_non_finite is not implemented in this build (no cuda_block.cu)");
}

}  // namespace hspmn::cuda
