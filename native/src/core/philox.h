// Philox4x32-10 (Salmon et al., Random123) and the Gumbel draw built on it; native/README.md fixes
// the counter layout so the reference and every backend draw bit-identical noise.
#pragma once

#include <cmath>
#include <cstdint>

namespace hspmn {

struct Philox4x32 {
    uint32_t v[4];
};

inline Philox4x32 philox4x32_10(Philox4x32 c, uint32_t k0, uint32_t k1) noexcept {
    constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += W0;
            k1 += W1;
        }
        uint64_t p0 = static_cast<uint64_t>(M0) * c.v[0];
        uint64_t p1 = static_cast<uint64_t>(M1) * c.v[2];
        uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
        uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
        c = Philox4x32{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
    }
    return c;
}

// g for token (b, s): counter = (s, b, layer, step), key = seed split in halves; b is the row's index in
// the batch the draws are keyed by (callers add hspmn_forward_params.row_offset).
inline float gumbel_sample(uint64_t seed, int64_t step, int32_t layer, int64_t b, int64_t s) noexcept {
    Philox4x32 ctr{{static_cast<uint32_t>(s), static_cast<uint32_t>(b), static_cast<uint32_t>(layer),
                    static_cast<uint32_t>(static_cast<uint64_t>(step) & 0xffffffffu)}};
    Philox4x32 r = philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    double u = (static_cast<double>(r.v[0] >> 8) + 0.5) * (1.0 / 16777216.0);
    return static_cast<float>(-std::log(-std::log(u)));
}

// ---- residual dropout (native/README.md "Residual dropout"; reference/hspmn_ref.py dropout_keep) ----

// Stream tags XORed into the high key word: the Gumbel noise keys Philox with the seed itself, so no
// dropout draw shares a (key, counter) with it, nor the reflexive mask with the attention mask.
constexpr uint32_t kDropoutTagReflex = 0x44524F31u;  // "DRO1": the mask of m
constexpr uint32_t kDropoutTagAttn = 0x44524F32u;    // "DRO2": the mask of o

// What a training forward with dropout needs to draw (and backward to redraw) its masks.
struct DropoutKey {
    float p = 0.0f;  // in [0, 1); 0: no dropout
    uint64_t seed = 0;
    int64_t step = 0;
    int32_t layer = 0;
    int64_t row_offset = 0;  // row b draws as row row_offset + b (hspmn_forward_params.row_offset)
};

// A draw w keeps its element iff w >= ceil(p * 2^32) (exact in double: p is a float32 below 1).
inline uint32_t dropout_threshold(float p) noexcept {
    return static_cast<uint32_t>(std::ceil(static_cast<double>(p) * 4294967296.0));
}

// 1 / (1 - p) in double, rounded to float32: what kept elements are multiplied by.
inline float dropout_scale(float p) noexcept { return static_cast<float>(1.0 / (1.0 - static_cast<double>(p))); }

// The four draws of features 4 * d4 .. 4 * d4 + 3 of token (b, s): counter = (d4, s, row_offset + b,
// step), key = (seed_lo ^ layer, seed_hi ^ tag); feature d takes word d & 3.
inline Philox4x32 dropout_bits(const DropoutKey& k, uint32_t tag, int64_t b, int64_t s, int64_t d4) noexcept {
    Philox4x32 ctr{{static_cast<uint32_t>(d4), static_cast<uint32_t>(s), static_cast<uint32_t>(k.row_offset + b),
                    static_cast<uint32_t>(static_cast<uint64_t>(k.step) & 0xffffffffu)}};
    return philox4x32_10(ctr, static_cast<uint32_t>(k.seed) ^ static_cast<uint32_t>(k.layer),
                         static_cast<uint32_t>(k.seed >> 32) ^ tag);
}

}  // namespace hspmn
