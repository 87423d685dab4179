// One HSPMN block on the CPU: parameters (bf16 as stored, float32 copies for compute), gradients,
// and what a training forward keeps for backward.
#pragma once

#include <array>

#include "../core/alloc.h"
#include "../core/backend.h"
#include "../core/block_config.h"
#include "thread_pool.h"

namespace hspmn::cpu {

// Everything backward needs from a training forward. N = B*S token rows, Nq selected rows.
struct Activations {
    int64_t B = 0, S = 0, N = 0, Nq = 0;
    float t = 1.0f;          // clamped temperature
    bool t_inside = true;    // exp(log_temp) strictly inside (0.1, 2.0): log_temp gets a gradient
    float aux_target = 0.0f;
    Buffer<float> x;                 // [N, D]
    Buffer<float> l, n;              // [N] logits, scores (l + g) / t
    Buffer<int64_t> rows;            // [Nq] selected token rows b*S + s, grouped by sequence
    Buffer<int64_t> q_start;         // [B + 1]
    Buffer<int32_t> q_pos, k_pos;    // [Nq], [N]
    Buffer<float> rope_cos, rope_sin;  // [S, Dh/2]
    Buffer<float> rstd_h, h, c;      // reflex: [N], [N, D], [N, D]
    Buffer<float> gate, up, act;     // [N, F] pre-activations and silu(gate) * up
    Buffer<float> rstd_a, a, a_sel;  // attention input: [N], [N, D], [Nq, D]
    Buffer<float> k, v;              // [N, Hkv*Dh] after RoPE
    Buffer<float> q;                 // [Nq, D] after RoPE
    Buffer<float> attn, lse, o;      // [Nq, D] heads concatenated, [Nq, H], [Nq, D] after attn.o
};

class CpuBlock final : public BlockImpl {
public:
    CpuBlock(ThreadPool& pool, const BlockConfig& cfg, uint64_t seed);

    void read_param(int index, uint16_t* dst) const override;
    void write_param(int index, const uint16_t* src) override;
    void read_grad(int index, float* dst) const override;
    void zero_grad() override;
    void forward(const ForwardCall& call) override;
    void route(const RouteCall& call) override;
    void backward(const BackwardCall& call) override;
    void drop_cache() noexcept override;
    ParamStorage param_storage(int index) override { return {param_[index].data(), grad_[index].data()}; }
    void params_written() override { dirty_.fill(true); }
    int decode_elem_bytes() const override { return 4; }  // K, V and h are float32 in forward too
    void decode(const DecodeCall& call) override;  // cpu_block_decode.cpp

private:
    struct Router {
        Buffer<float> l, n;
        float t;
        bool t_inside;
    };
    void refresh_weights();
    // l, n = (l + g) / t for x: [N, D]; g from the noise tensor, the generator, or 0.
    Router run_router(const float* x, int64_t B, int64_t S, int32_t training, int32_t noise, uint64_t seed,
                      int64_t step, int32_t layer, const hspmn_tensor* noise_tensor);
    const float* w(int index) const { return weight_[index].data(); }

    ThreadPool& pool_;
    BlockConfig cfg_;
    std::array<ParamInfo, P_COUNT> info_;
    std::array<Buffer<uint16_t>, P_COUNT> param_;
    // float32 copies of param_, refreshed by forward only, so a backward always differentiates the
    // weights its forward used even if set_param ran in between.
    std::array<Buffer<float>, P_COUNT> weight_;
    std::array<bool, P_COUNT> dirty_;
    std::array<Buffer<float>, P_COUNT> grad_;
    Activations act_;
    bool has_act_ = false;
    // Rotary table for decode positions 0 .. decode_rope_S_ - 1 (grown, never recomputed per step).
    Buffer<float> decode_cos_, decode_sin_;
    int64_t decode_rope_S_ = 0;
};

}  // namespace hspmn::cpu
