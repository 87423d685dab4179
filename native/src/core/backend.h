// The seam between the ABI layer and a backend. src/api/ validates every argument (handles, enums,
// dtypes, shapes, ownership, routing pins, non-finite inputs) and then calls exactly one of these;
// a backend may assume its arguments are consistent. src/cpu/ implements it today; a CUDA backend
// goes beside it as src/cuda/ with the same two classes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "alloc.h"
#include "block_config.h"
#include "hspmn.h"

namespace hspmn {

// Forward with optional pinned routing. Tensors are validated: x [B, S, D] bf16, out like x,
// noise [B, S] f32 or null, indices [B, C] i32 + counts [B] i32 or both null, aux [1] f32 or null.
struct ForwardCall {
    int32_t training;
    int32_t noise;       // draw Gumbel noise from the generator when no noise tensor is given
    uint64_t seed;
    int64_t step;
    int32_t layer;
    float aux_target;    // resolved (>= 0)
    const hspmn_tensor* x;
    const hspmn_tensor* noise_tensor;
    const hspmn_tensor* indices;
    const hspmn_tensor* counts;
    hspmn_tensor* out;
    hspmn_tensor* aux;
};

// Routing alone; every output may be null.
struct RouteCall {
    int32_t training;
    int32_t noise;
    uint64_t seed;
    int64_t step;
    int32_t layer;
    float aux_target;
    const hspmn_tensor* x;
    const hspmn_tensor* noise_tensor;
    hspmn_tensor* logits;
    hspmn_tensor* probs;
    hspmn_tensor* indices;
    hspmn_tensor* counts;
    hspmn_tensor* aux;
};

// Backward of the cached training forward: d_out has the cached x's shape; d_aux, d_x may be null.
struct BackwardCall {
    int32_t accumulate;
    const hspmn_tensor* d_out;
    const hspmn_tensor* d_aux;
    hspmn_tensor* d_x;
};

class BlockImpl : public Tracked {
public:
    virtual ~BlockImpl() = default;
    // Parameters as stored (bf16 bits) and gradients (f32), through host memory, by ParamIndex.
    virtual void read_param(int index, uint16_t* dst) const = 0;
    virtual void write_param(int index, const uint16_t* src) = 0;
    virtual void read_grad(int index, float* dst) const = 0;
    virtual void zero_grad() = 0;
    virtual void forward(const ForwardCall& call) = 0;
    virtual void route(const RouteCall& call) = 0;
    virtual void backward(const BackwardCall& call) = 0;
    // Frees what a training forward kept (an inference forward or a failed one leaves nothing).
    virtual void drop_cache() noexcept = 0;
};

class Backend : public Tracked {
public:
    virtual ~Backend() = default;
    virtual hspmn_backend kind() const = 0;
    // Throws Error{MEMORY_KIND} for a kind the backend cannot give.
    virtual void* tensor_alloc(int32_t memory, std::size_t bytes) = 0;  // zero-filled
    virtual void tensor_free(int32_t memory, void* p, std::size_t bytes) noexcept = 0;
    virtual bool host_addressable(int32_t memory) const = 0;
    virtual void copy_to_host(const hspmn_tensor* src, void* dst) = 0;
    virtual void copy_from_host(hspmn_tensor* dst, const void* src) = 0;
    virtual void copy(hspmn_tensor* dst, const hspmn_tensor* src) = 0;
    // Flat index of the first NaN/Inf of a bf16 or f32 tensor, or -1.
    virtual int64_t find_non_finite(const hspmn_tensor* t) = 0;
    virtual void synchronize() = 0;
    virtual BlockImpl* create_block(const BlockConfig& cfg, uint64_t seed) = 0;
    virtual void gumbel_noise(uint64_t seed, int64_t step, int32_t layer, hspmn_tensor* out) = 0;
};

// Throws Error{NOT_BUILT / NO_DEVICE / ...} when the backend cannot be made.
Backend* create_cpu_backend(const hspmn_context_params& params);
#if defined(HSPMN_WITH_CUDA)
// NO_DEVICE when the driver finds no usable device (AUTO then falls back to the CPU).
Backend* create_cuda_backend(const hspmn_context_params& params);
#endif

}  // namespace hspmn
