// Cached decoding of the language model (hspmn.h "cached decoding"): per layer and slot, K/V of every
// token and the conv's last inputs; each append runs the embedding, every block's decode over the new
// rows and the head on each slot's last row.
#pragma once

#include <cstdint>
#include <vector>

#include "../core/alloc.h"
#include "model.h"

namespace hspmn {

class Decoder : public Tracked {
public:
    Decoder(Model& model, int32_t max_seqs, int64_t max_len);

    int32_t max_seqs() const { return max_seqs_; }
    int64_t max_len() const { return max_len_; }
    int64_t length(int32_t slot) const { return len_[static_cast<std::size_t>(slot)]; }
    void reset(int32_t slot);
    // slots: host [n] distinct; tokens: host [n, T]; logits [n, V] f32 / routed [n, T, L] i32 tensors
    // of the model's context or null. On failure the slots of the call are reset (their conv state
    // may have advanced), which the error message says.
    void append(const int32_t* slots, int64_t n, const int32_t* tokens, int64_t T, hspmn_tensor* logits,
                hspmn_tensor* routed);

    // decoder_step.cpp (hspmn_decoder_step): appends tokens[j] to slots[j] and samples next[j] on the
    // backend; only the ids come back. Replays the graph of the smallest captured bucket >= n when
    // there are graphs. logits: [n, V] f32 or null. Arguments are validated by the API layer.
    void step(int32_t n, const int32_t* slots, const int32_t* tokens, const hspmn_sampling_params* params,
              int32_t* next, hspmn_tensor* logits);
    // Records the step for each batch size (CUDA; bucket sizes up to the blocks' step rows).
    void capture(const int32_t* sizes, int32_t count);
    ~Decoder();

private:
    // The step's buffers, apart from append's so neither moves the other's under a captured graph.
    struct StepBuffers {
        explicit StepBuffers(Backend& be)
            : in_dev(be), out_dev(be), act_a(be), act_b(be), hidden(be), rstd(be), logits(be) {}
        int64_t rows = 0;               // capacity
        void* in_host = nullptr;        // staging: slot, pos, token [rows] i32, params [rows]
        void* out_host = nullptr;       // staging: next [rows] i32, status [1] i32
        std::size_t in_bytes = 0, out_bytes = 0;
        RawBuffer in_dev, out_dev, act_a, act_b, hidden, rstd, logits;
    };
    struct Layout {                     // offsets of a step of nb rows in the staging and in_dev
        std::size_t pos, token, params, bytes;
    };
    static Layout layout(int64_t nb);
    void ensure_step(int64_t rows);
    void fill_staging(int64_t n, int64_t nb, const int32_t* slots, const int32_t* tokens,
                      const hspmn_sampling_params* params);
    void step_body(int64_t nb);         // queues one step of nb staged rows
    static void step_body_thunk(void* self);
    GraphImpl* graph_for(int64_t n, int64_t* nb);
    void capture_all();
    void drop_graphs() noexcept;

    void run(const int32_t* slots, int64_t n, const int32_t* tokens, int64_t T, hspmn_tensor* logits,
             hspmn_tensor* routed);
    // A call of layer l (DecodeCall or DecodeStepCall) with what both kinds take alike: the input and
    // output rows and the layer's caches. The caller sets the rest.
    template <class Call>
    Call layer_call(int64_t l, const uint16_t* in, uint16_t* out) {
        const auto i = static_cast<std::size_t>(l);
        Call c{};
        c.x = in;
        c.out = out;
        c.k_cache = k_[i].as<void>();
        c.v_cache = v_[i].as<void>();
        c.conv_cache = conv_[i].as<void>();
        c.max_seqs = max_seqs_;
        c.max_len = max_len_;
        return c;
    }
    // decode() of layer l: rows new rows of seqs sequences (the host metadata DecodeCall describes).
    DecodeCall decode_call(int64_t l, const uint16_t* in, uint16_t* out, int64_t rows, int64_t seqs,
                           const int64_t* row_start, const int32_t* slot, const int64_t* pos0, int32_t* routed) {
        DecodeCall c = layer_call<DecodeCall>(l, in, out);
        c.n = rows;
        c.seqs = seqs;
        c.row_start = row_start;
        c.slot = slot;
        c.pos0 = pos0;
        c.routed = routed;
        return c;
    }

    Model& model_;
    Backend& be_;
    int32_t max_seqs_;
    int64_t max_len_;
    int64_t L_, D_, V_, KV_, P_;
    std::size_t elem_;
    std::vector<RawBuffer, TrackedAllocator<RawBuffer>> k_, v_, conv_;
    std::vector<int64_t, TrackedAllocator<int64_t>> len_;
    RawBuffer tokens_, act_a_, act_b_, hidden_, rstd_, routed_, logits_;
    StepBuffers step_;
    std::vector<int64_t, TrackedAllocator<int64_t>> buckets_;       // captured sizes, ascending
    std::vector<GraphImpl*, TrackedAllocator<GraphImpl*>> graphs_;  // graphs_[i] for buckets_[i]
    int64_t body_rows_ = 0;                                          // step_body's nb for the thunk
    uint64_t generations_ = 0;                                       // blocks' step generations at capture
    uint64_t step_generations() const;
};

}  // namespace hspmn
