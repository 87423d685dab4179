// The scalar pieces of the sampling definition (native/README.md "Sampling"), for the host. The CUDA
// op (cuda/kernels/sample_tokens.cu) spells the same float operations with explicitly rounded
// intrinsics and the Java Sampler with plain float arithmetic; all three give the same bits, which is
// why a file that calls exp_non_positive or mass must be compiled with -ffp-contract=off (no fused
// multiply-add; cpu/sample_tokens.cpp is, see native/CMakeLists.txt).
#pragma once

#include <cstdint>
#include <cstring>

namespace hspmn::sampling {

// Masses are floor(q * 2^46): q <= 1 and V <= 2^16 keep every sum below 2^62 (exact in int64).
constexpr float kMassScale = 70368744177664.0f;  // 2^46
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr int64_t kMaxVocab = 65536;

inline uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

inline float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// e^x for x <= 0 (Java Sampler.expNonPositive, bit for bit): Cody-Waite reduction x = n ln2 + f, a
// degree-6 polynomial for e^f, 2^n from the exponent bits. 0 below -87.33.
inline float exp_non_positive(float x) {
    const float c = x < -87.33f ? -87.33f : x;
    const float t = c * 1.44269504f + 12582912.0f;
    const float n = t - 12582912.0f;
    const float f = (c - n * 0.693145752f) - n * 1.42860682e-6f;
    const float p = 1.0f + f * (1.0f + f * (0.5f + f * (0.166666667f + f * (0.0416666667f + f * (0.00833333333f +
                                                                                                 f * 0.00138888889f)))));
    const float e = p * bits_float((float_bits(t) - 0x4B400000u + 127u) << 23);
    return x < -87.33f ? 0.0f : e;
}

// The mass of a logit v given the row's maximum m and 1/T: floor(2^46 e^((v - m) / T)).
inline uint64_t mass(float v, float m, float inv_t) {
    return static_cast<uint64_t>(exp_non_positive((v - m) * inv_t) * kMassScale);
}

// Tokens in order: larger logit first (-0 == +0), then lower id. Bits 47..16: the logit's
// order-preserving bits; bits 15..0: 0xFFFF - id. Larger key = earlier.
inline uint64_t key(float v, int64_t id) {
    const uint32_t u = v == 0.0f ? 0u : float_bits(v);
    const uint32_t o = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return (static_cast<uint64_t>(o) << 16) | static_cast<uint64_t>(0xFFFF - id);
}

// The nucleus must reach min(total, ceil(p * total)), p * total in double.
inline uint64_t nucleus_need(float p, uint64_t total) {
    const double want = static_cast<double>(p) * static_cast<double>(total);
    double c = static_cast<double>(static_cast<uint64_t>(want));
    if (c < want) c += 1.0;  // ceil without <cmath>'s rounding-mode questions: want < 2^63 here
    const uint64_t need = static_cast<uint64_t>(c);
    return need < total ? need : total;
}

// The draw's 64 random bits: SplitMix64's output for counter `draw` of the stream `seed`.
inline uint64_t draw_bits(uint64_t seed, int64_t draw) {
    uint64_t z = seed + static_cast<uint64_t>(draw) * kGolden;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// floor(z * total / 2^64): the point of [0, total) the draw lands on.
inline uint64_t draw_target(uint64_t z, uint64_t total) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(z) * total) >> 64);
}

}  // namespace hspmn::sampling
