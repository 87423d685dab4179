// The language model of MODEL.md ("The language model") over any backend: embedding -> blocks ->
// RMSNorm -> tied head with the fused cross-entropy, and AdamW on float32 master weights. It only
// wires Backend ops and BlockImpls together; the math lives in the backends (src/cpu, src/cuda).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../core/alloc.h"
#include "../core/backend.h"
#include "../core/block_config.h"
#include "hspmn.h"

namespace hspmn {

class Comm;
struct DataParallel;
struct DpGroup;

// Throws Error{INVALID_ARGUMENT} naming the first offending field.
void validate_model_params(const hspmn_model_params& p);

// Backend memory of one buffer, grown on demand and freed with its owner.
class RawBuffer {
public:
    explicit RawBuffer(Backend& be) : be_(&be) {}
    RawBuffer(const RawBuffer&) = delete;
    RawBuffer& operator=(const RawBuffer&) = delete;
    RawBuffer(RawBuffer&& o) noexcept : be_(o.be_), p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr; o.bytes_ = 0; }
    ~RawBuffer() { release(); }
    // At least `bytes`; contents are kept only when no regrowth happens.
    void ensure(std::size_t bytes);
    void release() noexcept;
    template <class T> T* as() const { return static_cast<T*>(p_); }

private:
    Backend* be_;
    void* p_ = nullptr;
    std::size_t bytes_ = 0;
};

// What the blocks of one trunk pass draw their noise and dropout from (the forward's own, kept for
// the re-runs of recomputation).
struct TrunkCall {
    int32_t training = 0, noise = 0;
    uint64_t seed = 0;
    int64_t step = 0, row_offset = 0;
    float aux_target = 0.0f, dropout = 0.0f;
    bool recompute = false;
    int64_t B = 0, S = 0;
};

struct ModelForward {
    int32_t training, noise;
    uint64_t seed;
    int64_t step;
    float aux_target;          // resolved (>= 0)
    float dropout;             // residual dropout p of every layer (0 unless training)
    int64_t row_offset;        // >= 0: the global index of row 0 (noise and dropout keys)
    int32_t recompute;         // training: keep each layer's input only; backward re-runs its forward
    int64_t B, S;
    const int32_t* tokens;     // [B, S] host memory, validated
    const int32_t* targets;    // [B, S] host memory, validated, or null
    hspmn_tensor* loss;        // [2] f32 or null
    hspmn_tensor* stats;       // [L, 2] f32 or null
};

class Model : public Tracked {
public:
    Model(hspmn_context* ctx, const hspmn_model_params& params, uint64_t seed);
    ~Model();
    Model(const Model&) = delete;
    Model& operator=(const Model&) = delete;

    const hspmn_model_params& params() const { return params_; }
    int param_count() const { return static_cast<int>(params_list_.size()); }
    const char* param_name(int i) const { return params_list_[i].name.c_str(); }
    int find(const char* name) const;  // -1 when unknown
    // Names of all parameters, for error messages.
    std::string known_names() const;
    int32_t param_ndim(int i) const { return params_list_[i].ndim; }
    const int64_t* param_shape(int i) const { return params_list_[i].shape; }
    int64_t param_numel(int i) const { return params_list_[i].numel; }

    void get_param(int i, float* host) const;
    void set_param(int i, const float* host);
    void get_grad(int i, float* host) const;
    // which 0 = m, 1 = v
    void get_moment(int i, int which, float* host) const;
    void set_moment(int i, int which, const float* host);
    void zero_grad();

    void forward(const ModelForward& call);
    bool has_cache() const { return has_cache_; }
    void backward(float loss_scale, bool accumulate);
    // tokens: [B, S] host, validated; logits: [B, V] f32 tensor of the context
    void logits(const int32_t* tokens, int64_t B, int64_t S, hspmn_tensor* out);
    hspmn_adamw_result adamw_step(const hspmn_adamw_params& p);
    // Router bias control (native/README.md "Router bias control"), after an optimizer step: layer
    // i's router.b master weight += rate * sign(target - f_i), f_i the mean noise-free fraction of the
    // training forwards since the step before; bf16 copy re-rounded. fractions: [L] host or null.
    void router_bias_step(float target, float rate, float* fractions);

    // ---- data parallelism (data_parallel.cpp; native/README.md "Data parallelism"): comm null
    // detaches. Collective when the sharding changes (see hspmn_model_set_comm).
    void set_comm(Comm* comm, const hspmn_data_parallel_params& p);
    hspmn_data_parallel_stats data_parallel_stats() const;
    bool data_parallel() const { return dp_ != nullptr; }

    // For the decoder (decoder.cpp): the pieces of the trunk it runs row by row.
    Backend& backend() const { return be_; }
    hspmn_context* context() const { return ctx_; }
    BlockImpl* block(int64_t i) const { return blocks_[static_cast<std::size_t>(i)]; }
    const uint16_t* embedding_value() const { return emb_value_.as<uint16_t>(); }
    const uint16_t* norm_value() const { return norm_value_.as<uint16_t>(); }
    // An hspmn_tensor over backend memory, for BlockImpl calls and Backend::copy.
    void view(hspmn_tensor& t, void* data, int32_t dtype, std::initializer_list<int64_t> shape) const;

private:
    struct Param {
        std::string name;
        int32_t ndim;
        int64_t shape[2];
        int64_t numel;
        bool decay;         // AdamW weight decay: 2-D tensors only
        int layer;          // owning block, or -1 for embedding / norm
        uint16_t* value;    // bf16 copy the forward reads (backend memory)
        float* grad;        // float32 gradient (backend memory)
        RawBuffer master, m, v;
    };

    void add_param(const std::string& name, int32_t ndim, const int64_t* shape, int layer, uint16_t* value,
                   float* grad);
    // Sizes the activation buffers for N = B*S rows.
    void ensure_rows(int64_t N);
    // Runs embedding + blocks + final norm on tokens_ (already in backend memory).
    void run_trunk(const TrunkCall& t);
    // Layer i's block forward of the call t: x, out [B, S, D] bf16 backend memory; stats: [2] f32
    // (aux, routed fraction) or null.
    void layer_forward(const TrunkCall& t, int64_t i, uint16_t* x, uint16_t* out, float* stats);

    // ---- data parallelism (data_parallel.cpp): null without a comm, so every path is as before.
    DataParallel* dp_ = nullptr;
    bool dp_sharded() const;
    std::vector<DpGroup> dp_groups() const;
    void dp_release() noexcept;
    float dp_backward_begin(float loss_scale, bool accumulate);  // the loss scale this rank's backward uses
    void dp_group_done(int group);  // 0: the final norm, 1..L: blocks L-1..0, L+1: the embedding
    void dp_backward_end();
    void dp_adamw_shard(AdamwScalars s, float weight_decay);  // this rank's share, then the gather
    void dp_get_moment(int i, int which, float* host) const;  // collective
    void dp_set_moment(int i, int which, const float* host);
    void dp_mean_fractions(float* f) const;                     // [L], collective
    void dp_unshard();                                          // moments back to every parameter
    void raw_copy(void* dst, const void* src, std::size_t bytes) const;  // internal memory, stream order

    hspmn_context* ctx_;
    Backend& be_;
    hspmn_model_params params_;
    BlockConfig block_cfg_;
    int64_t V_, L_, D_;
    std::vector<BlockImpl*> blocks_;
    std::vector<Param> params_list_;
    RawBuffer emb_value_, emb_grad_, norm_value_, norm_grad_;

    // Activations of the last forward (backend memory).
    int64_t rows_cap_ = 0;
    bool has_cache_ = false;
    RawBuffer tokens_, targets_;      // [N] i32
    RawBuffer act_a_, act_b_;         // [N, D] bf16 ping-pong; the last block's output stays in one
    RawBuffer act_c_;                 // [N, D] bf16: with the free one of a/b, backward's ping-pong
    uint16_t* trunk_out_ = nullptr;   // which of act_a_/act_b_ (or inputs_) holds the final blocks' output
    RawBuffer hidden_, rstd_;         // [N, D] bf16 after the final norm, [N] f32
    RawBuffer dh_;                    // [N, D] f32
    RawBuffer stats_, ce_sum_, loss_, d_aux_, logits_;
    RawBuffer inputs_;                // recomputation: [L + 1, N, D] bf16, layer i's input, then the output
    TrunkCall last_;                  // the training forward backward differentiates (its B, S too)
    bool blocks_shared_ = false;      // the blocks' activations shared (BlockImpl::share_activations)
    // The router bias controller's measure: one [L] f32 slot (backend memory) per training forward
    // since the last optimizer step, written without a host sync and read by router_bias_step. An
    // optimizer step marks the slots for reuse from the next training forward on, so a skipped
    // step's forwards never reach the next update.
    std::vector<RawBuffer> noise_free_;
    int64_t noise_free_forwards_ = 0;
    bool noise_free_restart_ = false;
    float* noise_free_out_ = nullptr;  // the slot of the training forward under way, or null
};

}  // namespace hspmn
