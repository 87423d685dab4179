// Seeded initialisation of a block's parameters (native/README.md "Initialisation"); deterministic
// for a seed but not part of parity, so a splitmix64 stream per parameter is enough.
#pragma once

#include <cstdint>

#include "../core/block_config.h"

namespace hspmn::cpu {

// dst: the parameter's numel values, as float32 before rounding to bf16.
void init_param(const BlockConfig& cfg, int index, uint64_t seed, float* dst);

}  // namespace hspmn::cpu
