// SplitMix64 (Steele, Lea, Flood 2014): the seeded stream behind parameter initialisation.
#pragma once

#include <cstdint>

namespace hspmn {

inline uint64_t splitmix64(uint64_t& state) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// A uniform double in [0, 1) from the top 53 bits of the next draw.
inline double splitmix_unit(uint64_t& state) {
    return static_cast<double>(splitmix64(state) >> 11) * (1.0 / 9007199254740992.0);
}

}  // namespace hspmn
