#include "../core/bf16.h"
#include "ops.h"

namespace hspmn::cpu {

void bf16_to_f32_array(ThreadPool& pool, const uint16_t* src, float* dst, int64_t n) {
    pool.parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i) dst[i] = bf16_to_f32(src[i]);
    });
}

void f32_to_bf16_array(ThreadPool& pool, const float* src, uint16_t* dst, int64_t n) {
    pool.parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i) dst[i] = f32_to_bf16(src[i]);
    });
}

}  // namespace hspmn::cpu
