// Declarations shared by the micro-kernel files; kept free of inline code (see gemm_kernel_avx2.cpp).
#pragma once

#include <stdint.h>

namespace hspmn::cpu {

struct MicroKernel {
    int mr, nr;
    void (*fn)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int m, int n, bool accumulate);
    const char* name;
};

extern const MicroKernel kGenericKernel;
extern const MicroKernel kAvx2Kernel;  // defined only when HSPMN_GEMM_AVX2 is compiled in

}  // namespace hspmn::cpu
