// What the CUDA block math (cuda_block.cu, kernels/) gives the CUDA backend (cuda_backend.cpp).
#pragma once

#include <cstdint>

#include "../core/backend.h"
#include "../core/block_config.h"
#include "runtime.h"

namespace hspmn::cuda {

// A block whose parameters, gradients and caches live on d's device; initialised from seed exactly
// as the CPU backend does (same host-side generator, uploaded), so both backends start equal.
BlockImpl* create_cuda_block(Device& d, const BlockConfig& cfg, uint64_t seed);

// Runs body(arg) under a thread-local capture of d's stream and returns the recorded graph; the stream
// is never left capturing (body's exception, or the capture's error naming `what`, is rethrown).
cudaGraph_t record_stream(Device& d, void (*body)(void*), void* arg, const char* what);
// The executable graph of a recorded one, which it destroys.
cudaGraphExec_t instantiate_graph(cudaGraph_t graph);
// Records what body(arg) queues on d's stream as one graph; launch() replays it (Backend::capture).
GraphImpl* capture_stream(Device& d, void (*body)(void*), void* arg);

// out: [B, S] f32 device memory; the Philox draw of native/README.md (bit-identical to the CPU's
// up to the last ulp of -ln(-ln u), which the device computes in double as well).
void gumbel_noise(Device& d, uint64_t seed, int64_t step, int32_t layer, int64_t B, int64_t S, float* out);

// Flat index of the first NaN/Inf of numel bf16 (dtype HSPMN_DTYPE_BF16) or f32 values in device
// memory, or -1. Synchronises the stream (it returns a host value).
int64_t find_non_finite(Device& d, const void* data, int32_t dtype, int64_t numel);

}  // namespace hspmn::cuda
