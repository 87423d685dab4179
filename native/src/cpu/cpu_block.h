// One HSPMN block on the CPU: parameters (bf16 as stored, float32 copies for compute), gradients,
// and what a training forward keeps for backward.
#pragma once

#include <array>

#include "../core/alloc.h"
#include "../core/backend.h"
#include "../core/block_config.h"
#include "../core/forward_chunk.h"
#include "ops.h"
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
    Buffer<float> rstd;              // [N] of x: both norms' (rms_norm_pair_forward)
    Buffer<float> h, c;              // reflex: [N, D], [N, D]
    Buffer<float> gate, up, act;     // [N, F] pre-activations and silu(gate) * up
    Buffer<float> a, a_sel;          // attention input: [N, D], [Nq, D]
    Buffer<float> k, v;              // [N, Hkv*Dh] after RoPE
    Buffer<float> q;                 // [Nq, D] after RoPE
    Buffer<float> attn, lse, o;      // [Nq, D] heads concatenated, [Nq, H], [Nq, D] after attn.o (dropped)
    DropoutKey dropout;              // p = 0: none; else backward redraws the forward's masks from it
};

// One pass of the block over a set of rows (cpu_block_rows.cpp): the reflexive stream, then K and V
// of every row, Q, attention and O of the query rows, out = bf16(x + m + y o). The forward, the
// chunked forward and decode describe their rows here and share that sequence of ops, so they share
// its roundings; they differ in where the conv's history, the keys and the queries come from.
struct RowsPass {
    int64_t n = 0;                 // rows
    const float* x = nullptr;      // [n, D]
    uint16_t* out = nullptr;       // [n, D] bf16
    // The conv's history. seqs == 0: the rows are conv_B whole sequences of conv_S rows (zeros before
    // position 0). Else rows row_start[j] .. row_start[j+1] - 1 continue the sequence whose last K-1
    // inputs h are conv_cache rows [slot[j] * (K-1), +K-1) ([*, K-1, D], oldest first), which the
    // pass then advances.
    int64_t conv_B = 0, conv_S = 0;
    int64_t seqs = 0;
    const int64_t* row_start = nullptr;  // [seqs + 1]
    const int32_t* slot = nullptr;       // [seqs]
    float* conv_cache = nullptr;
    // RoPE: row r's key is rotated by table row key_tab[r], query i by table row q_tab[i].
    const float* rope_cos = nullptr;     // [*, Dh/2]
    const float* rope_sin = nullptr;
    const int32_t* key_tab = nullptr;    // [n]
    // K, V. k_cache == null: the attention's keys are this pass's rows (RowsBuffers k, v); else row r's
    // K and V are also copied to row kv_row[r] of k_cache and v_cache, and the attention reads those.
    const int64_t* kv_row = nullptr;     // [n]
    float* k_cache = nullptr;            // [*, Hkv*Dh]
    float* v_cache = nullptr;
    // Queries: row q_rows[i] for i < att.Nq, grouped into att.B sequences of att.S keys as
    // sqdk_attention_forward_packed wants (att.q_start, att.q_pos).
    const int64_t* q_rows = nullptr;     // [Nq]
    const int32_t* q_tab = nullptr;      // [Nq]
    PackedQueries att{};
    // Residual dropout (training forwards only, whole sequences: row r is token r of conv_S-row
    // sequences, query i token q_rows[i]); null: none.
    const DropoutKey* dropout = nullptr;
};

// Where a pass writes: [n] / [n, *] per row, [Nq, *] per query row. The training forward keeps them.
struct RowsBuffers {
    float *rstd, *h, *c, *gate, *up, *act, *y, *a, *k, *v;
    float *a_sel, *q, *attn, *lse, *o;
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
    // t = clamp(exp(log_temp), 0.1, 2) and whether exp(log_temp) is strictly inside.
    void router_temperature(float* t, bool* t_inside) const;
    // l, n = (l + g) / t for x: [N, D]; g from the noise tensor, the generator, or 0.
    Router run_router(const float* x, int64_t B, int64_t S, int32_t training, int32_t noise, uint64_t seed,
                      int64_t step, int32_t layer, int64_t row_offset, const hspmn_tensor* noise_tensor);
    const float* w(int index) const { return weight_[index].data(); }
    void run_rows(const RowsPass& p, const RowsBuffers& b);  // cpu_block_rows.cpp
    // The query lists of B whole sequences (A.B, A.S) selected by idx [B, C] / cnt [B] (A.rows,
    // q_pos, q_start, Nq, k_pos) and A's buffers sized for them (all but y).
    RowsBuffers whole_sequences(Activations& A, const int32_t* idx, const int32_t* cnt, int64_t C);
    // Scratch bytes per row of a forward's rows (core/forward_chunk.h).
    int64_t chunk_row_bytes() const;
    // Inference forward of more rows than one pass: cpu_block_chunked.cpp.
    void forward_chunked(const ForwardCall& call, const ForwardChunks& chunks);

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
};

}  // namespace hspmn::cpu
