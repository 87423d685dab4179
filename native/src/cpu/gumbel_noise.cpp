#include "../core/philox.h"
#include "ops.h"

namespace hspmn::cpu {

void gumbel_noise(ThreadPool& pool, uint64_t seed, int64_t step, int32_t layer, int64_t B, int64_t S, float* out,
                  int64_t row_offset) {
    pool.parallel_for(B * S, 1024, [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i) out[i] = gumbel_sample(seed, step, layer, row_offset + i / S, i % S);
    });
}

}  // namespace hspmn::cpu
