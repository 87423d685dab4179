// Baseline micro-kernel (SSE2 through GCC vector extensions): 6x8 tile, 12 accumulator registers.
#include "gemm_kernel.h"

namespace hspmn::cpu {
namespace {

typedef float v4 __attribute__((vector_size(16)));
constexpr int MR = 6, NR = 8;

void kernel_6x8(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int m, int n, bool accumulate) {
    v4 acc[MR][2] = {};
    for (int64_t k = 0; k < kc; ++k) {
        v4 b0, b1;
        __builtin_memcpy(&b0, b + k * NR, sizeof b0);
        __builtin_memcpy(&b1, b + k * NR + 4, sizeof b1);
        const float* ak = a + k * MR;
        for (int i = 0; i < MR; ++i) {
            v4 ai = {ak[i], ak[i], ak[i], ak[i]};
            acc[i][0] += ai * b0;
            acc[i][1] += ai * b1;
        }
    }
    for (int i = 0; i < m; ++i) {
        float row[NR];
        __builtin_memcpy(row, &acc[i][0], sizeof acc[i][0]);
        __builtin_memcpy(row + 4, &acc[i][1], sizeof acc[i][1]);
        float* ci = c + i * ldc;
        if (accumulate)
            for (int j = 0; j < n; ++j) ci[j] += row[j];
        else
            for (int j = 0; j < n; ++j) ci[j] = row[j];
    }
}

}  // namespace

const MicroKernel kGenericKernel = {MR, NR, kernel_6x8, "sse 6x8"};

}  // namespace hspmn::cpu
