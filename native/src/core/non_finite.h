// The NaN/Inf scan of host memory that every backend's find_non_finite uses for host tensors:
// an exponent of all ones is Inf or NaN in bf16 and f32 alike, so the bits decide, not the FPU.
#pragma once

#include <cstdint>

#include "hspmn.h"

namespace hspmn {

// Flat index of the first NaN/Inf among numel values of dtype (bf16 or f32; other dtypes have none), or -1.
inline int64_t host_find_non_finite(const void* data, int32_t dtype, int64_t numel) {
    if (dtype == HSPMN_DTYPE_BF16) {
        const uint16_t* p = static_cast<const uint16_t*>(data);
        for (int64_t i = 0; i < numel; ++i)
            if ((p[i] & 0x7f80u) == 0x7f80u) return i;
    } else if (dtype == HSPMN_DTYPE_F32) {
        const uint32_t* p = static_cast<const uint32_t*>(data);
        for (int64_t i = 0; i < numel; ++i)
            if ((p[i] & 0x7f800000u) == 0x7f800000u) return i;
    }
    return -1;
}

}  // namespace hspmn
