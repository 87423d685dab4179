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

private:
    void run(const int32_t* slots, int64_t n, const int32_t* tokens, int64_t T, hspmn_tensor* logits,
             hspmn_tensor* routed);

    Model& model_;
    Backend& be_;
    int32_t max_seqs_;
    int64_t max_len_;
    int64_t L_, D_, V_, KV_, P_;
    std::size_t elem_;
    std::vector<RawBuffer, TrackedAllocator<RawBuffer>> k_, v_, conv_;
    std::vector<int64_t, TrackedAllocator<int64_t>> len_;
    RawBuffer tokens_, act_a_, act_b_, hidden_, rstd_, routed_, logits_;
};

}  // namespace hspmn
