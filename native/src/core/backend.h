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
    // [1] f32 in the backend's internal memory (Backend::internal_memory) or null: selected tokens
    // / (B*S), written without a host sync (the language model's per-layer statistic).
    float* routed_fraction = nullptr;
    // Training only, [1] f32 like routed_fraction, or null: the share of tokens with l > 0, the
    // noise-free (evaluation-mode) threshold decision on this input (the router bias controller's
    // measure, native/README.md "Router bias control").
    float* noise_free_fraction = nullptr;
    // Residual dropout p in [0, 1) (native/README.md "Residual dropout"); only a training forward
    // applies it, with masks keyed by (seed, step, layer) as the noise. 0: the forward without dropout.
    float dropout = 0.0f;
    // >= 0: row b of x draws its noise and dropout masks as row row_offset + b (hspmn_forward_params).
    int64_t row_offset = 0;
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
    int64_t row_offset = 0;  // as ForwardCall::row_offset
};

// Backward of the cached training forward: d_out has the cached x's shape; d_aux, d_x may be null.
struct BackwardCall {
    int32_t accumulate;
    const hspmn_tensor* d_out;
    const hspmn_tensor* d_aux;
    hspmn_tensor* d_x;
};

// A captured forward (CUDA graphs); launch replays it on the backend's stream.
class GraphImpl : public Tracked {
public:
    virtual ~GraphImpl() = default;
    // Throws Error{STATE} when the block's scratch moved since capture.
    virtual void launch() = 0;
};

// A parameter in the backend's internal memory, for the optimizer: the stored bf16 values and the
// float32 gradient, ParamInfo::numel elements each.
struct ParamStorage {
    uint16_t* value;
    float* grad;
};

// One block's pass over new tokens of cached sequences (hspmn_decoder_append), threshold routing,
// no noise. Rows are grouped by sequence: sequence j owns rows row_start[j] .. row_start[j+1] - 1 at
// positions pos0[j], pos0[j] + 1, ... Caches are in internal memory, elements of decode_elem_bytes():
//   k_cache, v_cache: [max_seqs, max_len, Hkv*Dh] K after RoPE and V of every token seen
//   conv_cache:       [max_seqs, conv_kernel - 1, D] the last conv_kernel - 1 normalised inputs h,
//                     oldest first (zero for positions before 0, as the causal conv pads)
// decode writes the new rows' K/V (before any attention of this call, so a prefill attends its own
// earlier tokens) and shifts the conv cache.
struct DecodeCall {
    int64_t n;                  // rows
    int64_t seqs;
    const int64_t* row_start;   // host [seqs + 1]
    const int32_t* slot;        // host [seqs]
    const int64_t* pos0;        // host [seqs]
    const uint16_t* x;          // [n, D] bf16
    uint16_t* out;              // [n, D] bf16
    int32_t* routed;            // [n] i32 or null: 1 where the router selected the row
    void* k_cache;
    void* v_cache;
    void* conv_cache;
    int64_t max_seqs, max_len;
};

// One new token for each of n rows (a decode step), with every index in internal memory so the call
// can be recorded in a CUDA graph and replayed with new contents: row r appends to slot[r] at position
// pos[r] (the slot's length before the step). slot[r] = -1 marks a padding row of a batch bucket: it
// reads and writes no cache and its out row is unspecified. Caches as in DecodeCall.
struct DecodeStepCall {
    int64_t n;
    const int32_t* slot;        // [n]
    const int32_t* pos;         // [n]
    const uint16_t* x;          // [n, D] bf16
    uint16_t* out;              // [n, D] bf16
    void* k_cache;
    void* v_cache;
    void* conv_cache;
    int64_t max_seqs, max_len;
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
    // Activation recomputation (hspmn_model_forward_params.recompute): shared = true lets the block's
    // forwards keep their activations in storage that every block of the context shares (only one
    // block's are live at a time: the model re-runs a layer's forward right before its backward);
    // false gives it its own again. A backend whose drop_cache frees the activations (CPU) ignores it.
    virtual void share_activations(bool /*shared*/) {}
    virtual ParamStorage param_storage(int index) = 0;
    // The optimizer rewrote values through param_storage: the next forward must re-read them.
    virtual void params_written() = 0;
    // Inference forward recorded as a graph (call.training == 0, all tensors in device memory).
    virtual GraphImpl* capture_forward(const ForwardCall& call);
    // Bytes of one cache element (K, V, conv inputs): the precision the block's forward keeps them in.
    virtual int decode_elem_bytes() const = 0;
    virtual void decode(const DecodeCall& call) = 0;
    // Whether decode_step serves n rows of a step (else the decoder runs decode with host metadata).
    virtual bool has_decode_step(int64_t /*n*/) const { return false; }
    virtual void decode_step(const DecodeStepCall& call);
    // Queues what must precede a replayed step (weights changed by set_param since the last call).
    virtual void prepare_step() {}
    // Changes whenever decode_step's buffers move (a decoder with more slots or a longer max_len), so
    // a graph recorded before is stale.
    virtual uint64_t step_generation() const { return 0; }
};

// Scalars of one AdamW update (model/optimizer.cpp computes them in double once per step).
struct AdamwScalars {
    float lr;
    float weight_decay;  // 0 for parameters without decay
    float beta1, beta2, eps;
    float bias1;         // 1 - beta1^t
    float bias2_sqrt;    // sqrt(1 - beta2^t)
    float grad_scale;    // clipping factor (1 when not clipped)
};

// A float32 gradient array for Backend::sum_squares.
struct GradSpan {
    const float* data;
    int64_t numel;
};

class Backend : public Tracked {
public:
    virtual ~Backend() = default;
    virtual hspmn_backend kind() const = 0;
    // Workers the backend's host computation uses (per-worker scratch in footprint estimates).
    virtual int worker_threads() const { return 1; }
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
    // Free and total bytes of the backend's own device memory (cudaMemGetInfo), for the footprint
    // checks of footprint.h; false for a backend without a device (the CPU uses host memory only).
    virtual bool device_memory(std::size_t* free_bytes, std::size_t* total_bytes) {
        (void)free_bytes;
        (void)total_bytes;
        return false;
    }
    virtual BlockImpl* create_block(const BlockConfig& cfg, uint64_t seed) = 0;
    virtual void gumbel_noise(uint64_t seed, int64_t step, int32_t layer, hspmn_tensor* out) = 0;

    // ---- the language model's ops (model/). Every pointer is in internal_memory(); N = B*S rows;
    // "(+)=" marks accumulated outputs. Ops are queued in order on the backend's stream; only
    // sum_squares and the *_host copies return with the work done.
    virtual int32_t internal_memory() const = 0;  // HSPMN_MEMORY_HOST (CPU) or _DEVICE (CUDA)
    virtual void* raw_alloc(std::size_t bytes) = 0;  // zero-filled, counted in alloc stats
    virtual void raw_free(void* p, std::size_t bytes) noexcept = 0;
    virtual void copy_to_host_raw(void* dst, const void* src, std::size_t bytes) = 0;
    virtual void copy_from_host_raw(void* dst, const void* src, std::size_t bytes) = 0;
    virtual void zero_raw(void* dst, std::size_t bytes) = 0;
    // x[r] = table[tokens[r]]  table: [V, D] bf16  tokens: [N] i32  x: [N, D] bf16
    virtual void embedding_forward(const uint16_t* table, const int32_t* tokens, int64_t N, int64_t D,
                                   uint16_t* x) = 0;
    // d_table[tokens[r]] (+)= dx[r]  dx: [N, D] bf16  d_table: [V, D] f32
    virtual void embedding_backward(const uint16_t* dx, const int32_t* tokens, int64_t N, int64_t D,
                                    float* d_table) = 0;
    // y = x * rstd * w  x, y: [N, D] bf16  w: [D] bf16  rstd: [N] f32
    virtual void final_norm_forward(const uint16_t* x, const uint16_t* w, float eps, int64_t N, int64_t D,
                                    uint16_t* y, float* rstd) = 0;
    // dy: [N, D] f32; dx: [N, D] bf16 (overwritten); dw: [D] f32 (+)=
    virtual void final_norm_backward(const uint16_t* x, const uint16_t* w, const float* rstd, const float* dy,
                                     int64_t N, int64_t D, uint16_t* dx, float* dw) = 0;
    // cross_entropy_fused (reference/README.md): z = h . table^T per row, chunked so no [N, V]
    // logits outlive a chunk. loss_sum: [1] f32 = sum over rows of lse - z[target] (overwritten);
    // dh: [N, D] f32 = grad_scale * (softmax(z) - onehot) . table (overwritten) or null;
    // d_table: [V, D] f32 (+)= grad_scale * (softmax(z) - onehot)^T . h, or null.
    virtual void cross_entropy_fused(const uint16_t* h, const uint16_t* table, const int32_t* targets, int64_t N,
                                     int64_t V, int64_t D, float grad_scale, float* loss_sum, float* dh,
                                     float* d_table) = 0;
    // logits[i] = h[i * row_stride : +D] . table^T   logits: [n, V] f32
    virtual void lm_logits(const uint16_t* h, int64_t row_stride, int64_t n, const uint16_t* table, int64_t V,
                           int64_t D, float* logits) = 0;
    // loss[0] = ce_sum / N + sum_l stats[2 l], loss[1] = ce_sum / N   (stats: [L, 2] {aux, routed})
    virtual void loss_finish(const float* ce_sum, const float* stats, int64_t L, int64_t N, float* loss) = 0;
    // sum of g^2 over every span, returned to the host (waits for queued work).
    virtual double sum_squares(const GradSpan* spans, int64_t count) = 0;
    // One AdamW update (AdamwScalars) of master, m, v from grad * grad_scale; value = bf16(master).
    virtual void adamw_update(float* master, uint16_t* value, const float* grad, float* m, float* v, int64_t n,
                              const AdamwScalars& s) = 0;
    // dst[i] = value
    virtual void fill_f32(float* dst, int64_t n, float value) = 0;

    // ---- sampling (native/README.md "Sampling"; hspmn_sample checks the arguments and the status).
    // One token per row. Every pointer is in internal_memory(), params included, so the op can sit in a
    // CUDA graph with the params uploaded by a memcpy node; params are valid (api/sample.cpp's checks).
    //   logits: [n, V] f32, V <= 65536   params: [n]   tokens: [n] i32   status: [1] i32
    // A bad row (NaN, +Inf, or only -Inf) gets token kSampleNaN / kSamplePosInf / kSampleAllNegInf;
    // *status = 0 when every row was good, else 1 + the first bad row. Nothing throws for a bad row.
    // Queued on the stream with no host synchronisation. The first call allocates the op's scratch
    // (CUDA: 8 bytes, independent of n and V; CPU: 16 V bytes per worker thread), so calls with no
    // larger V allocate nothing: make one call before capturing a graph.
    static constexpr int32_t kSampleNaN = -1, kSamplePosInf = -2, kSampleAllNegInf = -3;
    virtual void sample_tokens(const float* logits, int64_t n, int64_t V, const hspmn_sampling_params* params,
                               int32_t* tokens, int32_t* status) = 0;

    // ---- decode steps (model/decoder.cpp Decoder::step)
    // Host memory the backend copies from and to asynchronously (pinned on CUDA), zero-filled.
    virtual void* staging_alloc(std::size_t bytes) = 0;
    virtual void staging_free(void* p, std::size_t bytes) noexcept = 0;
    // Queued copies between staging and internal memory; a graph replay repeats them, reading and
    // writing the staging memory as it is then.
    virtual void copy_from_staging(void* dst, const void* staging, std::size_t bytes) = 0;
    virtual void copy_to_staging(void* staging, const void* src, std::size_t bytes) = 0;
    // Records what body queues on the backend's stream as one graph (GraphImpl::launch replays it).
    // Throws Error{INVALID_ARGUMENT} on backends without graphs (the CPU).
    virtual GraphImpl* capture(void (*body)(void*), void* arg);

    // ---- data parallelism (comm/nccl_comm.cpp): the cudaStream_t every op is queued on and its
    // device ordinal; null and -1 on backends without them (the CPU).
    virtual void* cuda_stream() const { return nullptr; }
    virtual int cuda_device() const { return -1; }
};

// Throws Error{NOT_BUILT / NO_DEVICE / ...} when the backend cannot be made.
Backend* create_cpu_backend(const hspmn_context_params& params);
#if defined(HSPMN_WITH_CUDA)
// NO_DEVICE when the driver finds no usable device (AUTO then falls back to the CPU).
Backend* create_cuda_backend(const hspmn_context_params& params);
#endif

}  // namespace hspmn
