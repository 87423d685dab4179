// bfloat16 <-> float32. Round to nearest even, NaN stays NaN (quieted), as PyTorch's .to(bfloat16).
#pragma once

#include <cstdint>
#include <cstring>

namespace hspmn {

inline float bf16_to_f32(uint16_t h) noexcept {
    uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline uint16_t f32_to_bf16(float f) noexcept {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>(u >> 16);
}

}  // namespace hspmn
