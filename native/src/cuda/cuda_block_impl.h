// CudaBlock's declaration and the helpers its files share: cuda_block.cu (parameters, route,
// forward, backward, graphs) and cuda_block_decode.cu (cached decoding). Internal to src/cuda/.
#pragma once

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>
#include <vector>

#include "../core/bf16.h"
#include "../core/error.h"
#include "../core/forward_chunk.h"
#include "../core/objects.h"
#include "../cpu/param_init.h"
#include "device.h"
#include "cuda_block.h"
#include "kernels/kernels.h"

namespace hspmn::cuda::detail {

using bf16 = __nv_bfloat16;

// Everything backward needs from a training forward (device memory). BC = B*C selected rows.
struct Activations {
    int64_t B = 0, S = 0, N = 0, C = 0;
    float aux_target = 0.0f;
    DeviceBuffer x;                  // [N, D] bf16, a copy: the caller may reuse its x before backward
    DeviceBuffer noise;              // [N] f32 drawn noise (scratch)
    DeviceBuffer l, n, temp;         // [N], [N] f32; [2] f32 {t, t inside (0.1, 2)}
    DeviceBuffer idx, cnt;           // [B, C] i32 positions then padding, [B] i32
    DeviceBuffer sel;                // route_select's scratch (route_select_scratch_bytes)
    DeviceBuffer rstd;               // [N] f32, of x: both norms' (rms_norm_pair_forward)
    DeviceBuffer h, c;               // reflex: [N, D] bf16, [N, D] bf16
    DeviceBuffer gu, act;            // [N, 2F] bf16 gate | up of each row (one GEMM), [N, F] bf16
    DeviceBuffer a;                  // [N, D] bf16
    DeviceBuffer res;                // [N, D] f32 m, or x + M m (dropout) (inference scratch; training's: the arena)
    DeviceBuffer row_slot;           // [N] i32 query slot of each row, -1 (inference scratch as res)
    DeviceBuffer kf, k, v;           // [N, KV] f32 before RoPE (scratch as res), [N, KV] bf16 after, [N, KV] bf16
    DeviceBuffer a_sel, qf, q;       // [BC, D] bf16, [BC, D] f32 (scratch as res), [BC, D] bf16 after RoPE
    DeviceBuffer attn, lse, o;       // [BC, D] bf16 = [B, C, H, Dh], [B, H, C] f32, [BC, D] f32 (dropped)
    DropoutKey dropout;              // p = 0: none; else backward redraws the forward's masks from it
};

// Staging of call tensors that are not in device memory.
struct Stage {
    DeviceBuffer x, noise, idx, cnt, out, aux, logits, probs, d_out, d_aux, d_x;
};

inline bool on_device(const hspmn_tensor* t) { return t->memory == HSPMN_MEMORY_DEVICE; }

template <class T>
T* grow(Device& d, DeviceBuffer& b, int64_t count) {
    b.ensure(d, static_cast<std::size_t>(count > 0 ? count : 1) * sizeof(T));
    return b.as<T>();
}

inline void copy_async(Device& d, void* dst, const void* src, int64_t bytes, const char* what) {
    if (bytes > 0) check(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(bytes), cudaMemcpyDefault, stream(d)), what);
}

// A device view of a call input: in place when DEVICE, else copied into `stage`.
template <class T>
const T* input(Device& d, const hspmn_tensor* t, DeviceBuffer& stage, const char* what) {
    if (!t) return nullptr;
    if (on_device(t)) return static_cast<const T*>(t->data);
    stage.ensure(d, static_cast<std::size_t>(t->nbytes > 0 ? t->nbytes : 1));
    copy_async(d, stage.data(), t->data, t->nbytes, what);
    return stage.as<T>();
}

// Where a kernel writes a call output: in place when DEVICE, else `stage` (then output_done).
template <class T>
T* output(Device& d, hspmn_tensor* t, DeviceBuffer& stage) {
    if (!t) return nullptr;
    if (on_device(t)) return static_cast<T*>(t->data);
    stage.ensure(d, static_cast<std::size_t>(t->nbytes > 0 ? t->nbytes : 1));
    return stage.as<T>();
}

inline void output_done(Device& d, hspmn_tensor* t, const DeviceBuffer& stage, const char* what) {
    if (t && !on_device(t)) copy_async(d, t->data, stage.data(), t->nbytes, what);
}

// Host memory among the call's tensors: the call ends with one stream sync (outputs are read by the
// host, and pinned inputs must not be rewritten while an async copy still reads them).
inline bool any_host(std::initializer_list<const hspmn_tensor*> ts) {
    for (const hspmn_tensor* t : ts)
        if (t && !on_device(t)) return true;
    return false;
}

// Host metadata of a decode call (a few i32 per sequence) on its way to the device. Pinned, because
// cudaMemcpyAsync from pageable memory may wait for the stream; the event marks when the previous
// copy has read the buffer, so rewriting it never races that copy (in steady state it has long
// completed: the copy runs at the start of this block's previous decode).
class PinnedUpload {
public:
    PinnedUpload() = default;
    PinnedUpload(const PinnedUpload&) = delete;
    PinnedUpload& operator=(const PinnedUpload&) = delete;
    ~PinnedUpload() {
        if (!host_ && !event_) return;
        (void)cudaSetDevice(ordinal_);
        if (event_) (void)cudaEventDestroy(event_);  // a pending event is released when it completes
        if (host_) {
            (void)cudaFreeHost(host_);  // waits for the device, so no copy still reads it
            stats_count_bytes(-static_cast<int64_t>(count_ * sizeof(int32_t)));
        }
    }

    // A buffer of `count` i32 that the previous send() no longer reads.
    int32_t* begin(Device& d, int64_t count) {
        ordinal_ = device_ordinal(d);
        if (!event_) check(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreate (decode)");
        if (pending_) {
            check(cudaEventSynchronize(event_), "cudaEventSynchronize (decode metadata)");
            pending_ = false;
        }
        if (static_cast<std::size_t>(count) > count_) {
            if (host_) {
                (void)cudaFreeHost(host_);
                stats_count_bytes(-static_cast<int64_t>(count_ * sizeof(int32_t)));
                host_ = nullptr;
                count_ = 0;
            }
            void* p = nullptr;
            check_alloc(cudaMallocHost(&p, static_cast<std::size_t>(count) * sizeof(int32_t)), "cudaMallocHost (decode)",
                        static_cast<std::size_t>(count) * sizeof(int32_t), false);
            host_ = static_cast<int32_t*>(p);
            count_ = static_cast<std::size_t>(count);
            stats_count_bytes(static_cast<int64_t>(count_ * sizeof(int32_t)));
        }
        return host_;
    }

    // Queues the copy of the first `count` values to dst (device) on the stream.
    void send(Device& d, int32_t* dst, int64_t count) {
        check(cudaMemcpyAsync(dst, host_, static_cast<std::size_t>(count) * sizeof(int32_t), cudaMemcpyHostToDevice,
                              stream(d)),
              "cudaMemcpyAsync (decode metadata)");
        check(cudaEventRecord(event_, stream(d)), "cudaEventRecord (decode metadata)");
        pending_ = true;
    }

private:
    int ordinal_ = 0;
    int32_t* host_ = nullptr;
    std::size_t count_ = 0;
    cudaEvent_t event_ = nullptr;
    bool pending_ = false;
};

// One sqdk_attention launch of a rows pass: key sequences (cache slots) lo .. lo + len - 1 read by
// query blocks block0 .. block0 + len - 1 (sequences without queries in this call have count 0).
struct DecodeRun {
    int64_t lo, len, block0;
};

// Decode's host-side state (kept between calls; its device scratch is the rows arena's).
struct DecodeScratch {
    DeviceBuffer meta;                 // i32 [(seqs + 1) + 3 seqs]: row_start, slot, pos0, qblock
    PinnedUpload upload;
    std::vector<int64_t, TrackedAllocator<int64_t>> order;
    std::vector<DecodeRun, TrackedAllocator<DecodeRun>> runs;
};

// Decode steps' own buffers (cuda_block_step.cu): rows for kSkinnyMaxRows, query slots for the
// largest max_seqs seen, so replays of a captured step find them where they were.
struct StepScratch {
    int64_t seqs = 0;
    DeviceBuffer c, a, act;            // [R, D], [R, D], [R, F] bf16
    DeviceBuffer res, kf, qf;          // [R, D], [R, KV], [R, D] f32
    DeviceBuffer routed, row_cache;    // [R] i32, [R] i64
    DeviceBuffer q, attn;              // [seqs, D] bf16: queries and attention outputs by slot
    DeviceBuffer lse, qpos, qcnt;      // [seqs, H] f32, [seqs] i32, [seqs] i32 (0 between steps)
    SkinnyScratch gemm;
    DecodeAttentionScratch attention;
    int64_t attention_len = 0;         // max_len the attention scratch is sized for
};

// One pass of the block over a set of rows (cuda_block_rows.cu): the reflexive stream, then K and V
// of every row, Q, attention and O of the query slots, out = bf16(x + m + y o). The forward, the
// chunked inference forward and decode describe their rows here and share that sequence of kernels
// (and so its roundings); they differ in where the conv's history, the keys and the queries come from.
struct RowsPass {
    int64_t n = 0;                    // rows
    const bf16* x = nullptr;          // [n, D]
    bf16* out = nullptr;              // [n, D]
    // The conv's history. meta == null: the rows are conv_B whole sequences of conv_S rows (zeros
    // before position 0). Else the sequences of *meta continue from conv_cache ([*, K-1, D], their
    // last K-1 inputs h, oldest first), which the pass then advances.
    int64_t conv_B = 0, conv_S = 0;
    const DecodeMeta* meta = nullptr;
    bf16* conv_cache = nullptr;
    // RoPE tables [*, Dh/2] f32: row r's key takes table row r % key_S, query slot (b, j) row q_tab[b, j].
    const float* cos_t = nullptr;
    const float* sin_t = nullptr;
    int64_t key_S = 1;
    // K, V. kv_row == null: the attention's keys are the pass's rows (RowsBuffers k, v); else row r's
    // K and V also go to row kv_row[r] of k_cache, v_cache ([*, Hkv*Dh] bf16), which the attention reads.
    const int64_t* kv_row = nullptr;
    bf16* k_cache = nullptr;
    bf16* v_cache = nullptr;
    // Query lists [blocks, C] with counts q_cnt [blocks] on the device: slot (b, j) is valid iff
    // j < q_cnt[b]; its row is b * q_row_S + q_rows[b, j] (gather, scatter), its position q_pos[b, j].
    int64_t blocks = 0, C = 0, q_row_S = 0;
    const int32_t* q_rows = nullptr;
    const int32_t* q_tab = nullptr;
    const int32_t* q_pos = nullptr;
    const int32_t* q_cnt = nullptr;
    // Attention launches over sequences of att_S keys: run i reads keys + lo * att_S * Hkv*Dh.
    const DecodeRun* runs = nullptr;
    int64_t run_count = 0, att_S = 0;
    // Residual dropout (training forwards only, whole sequences: row r is token r of conv_S-row
    // sequences, query slot (b, j) token b * q_row_S + q_rows[b, j]); null: none.
    const DropoutKey* dropout = nullptr;
    // The training forward keeps h (RowsBuffers) for the backward; other passes need it only for a
    // conv cache (meta), so a whole-sequence inference pass never writes it.
    bool keep_h = false;
};

// Where a pass writes: [n] / [n, *] per row, [Q = blocks * C, *] per query slot, lse [blocks, H, C].
// The training forward keeps them (Activations); the arena's copy (carve_rows) lets pieces share
// memory once dead: kf = qf = o, attn = a_sel.
struct RowsBuffers {
    float* rstd;                       // [n] f32, of x: the reflex and the attention norm's
    bf16 *h, *c;
    bf16* gu;                          // [n, 2F]: row r is gate[r, 0:F], up[r, 0:F] (one GEMM on [W_gate; W_up])
    bf16* act;                         // [n, F]
    float* res;                        // [n, D] f32 m (then residual_out), or x + M m + y o (dropout)
    int32_t* row_slot;                 // [n] i32 the query slot of each row, or -1 (residual_out)
    bf16* a;
    float* kf;                         // [n, KV] f32 before RoPE
    bf16 *k, *v;
    bf16* a_sel;
    float* qf;                         // [Q, D] f32 before RoPE
    bf16 *q, *attn;
    float *lse, *o;
};

// Lays one call's scratch out in the device's rows arena: a sizing pass (base null) then the real
// one. Pieces are 256-byte aligned (the vector kernels, the Triton kernels and cuBLASLt's algorithms
// want 16).
class Carve {
public:
    explicit Carve(char* base) : base_(base) {}
    template <class T>
    T* take(int64_t count) {
        const std::size_t at = off_;
        off_ += (static_cast<std::size_t>(count > 0 ? count : 1) * sizeof(T) + 255) / 256 * 256;
        return base_ ? reinterpret_cast<T*>(base_ + at) : nullptr;
    }
    std::size_t bytes() const { return off_; }

private:
    char* base_;
    std::size_t off_ = 0;
};

// layout(Carve&) takes every piece of the call's scratch, twice: sized, then placed in the arena
// (runtime.h's rows_arena, or training_arena for training calls).
template <class Layout>
void carve_arena(Device& d, Layout&& layout, char* (*arena)(Device&, std::size_t) = rows_arena) {
    Carve sizing(nullptr);
    layout(sizing);
    Carve placed(arena(d, sizing.bytes()));
    layout(placed);
}

// Backward's temporaries, carved from the device's training arena at each call (runtime.h says why
// they are not the block's own); a warm training step allocates nothing.
struct BackwardScratch {
    float *d_a, *d_h;                       // [N, D] f32 (d_x is written once, as bf16, from these)
    float *dy, *dl;                         // [BC] f32, [N] f32
    bf16* dkv;                              // [N, 2 KV] bf16: row r is dk[r, 0:KV], dv[r, 0:KV]
    bf16 *d_o, *d_attn, *dq, *d_asel;       // [BC, D] bf16
    bf16* d_act;                            // [N, F] bf16, then d_c [N, D] f32: N max(F, 2 D) bf16
    bf16* d_gu;                             // [N, 2F] bf16: row r is d_gate[r, 0:F], d_up[r, 0:F]

    // The pieces for N rows and BC query slots (footprint.cpp counts the same bytes).
    void carve(Carve& cv, int64_t N, int64_t BC, int64_t D, int64_t F, int64_t KV) {
        d_a = cv.take<float>(N * D);
        d_h = cv.take<float>(N * D);
        dy = cv.take<float>(BC);
        dl = cv.take<float>(N);
        dkv = cv.take<bf16>(N * 2 * KV);
        d_o = cv.take<bf16>(BC * D);
        d_attn = cv.take<bf16>(BC * D);
        dq = cv.take<bf16>(BC * D);
        d_asel = cv.take<bf16>(BC * D);
        d_act = cv.take<bf16>(N * std::max(F, 2 * D));
        d_gu = cv.take<bf16>(N * 2 * F);
    }
};

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

class CudaBlock final : public BlockImpl {
public:
    CudaBlock(Device& d, const BlockConfig& cfg, uint64_t seed) : d_(d), cfg_(cfg), info_(param_table(cfg)) {
        if (!attention_supports_head_dim(cfg_.Dh))
            fail(HSPMN_ERR_NOT_BUILT, "CUDA sqdk_attention has no kernel for head_dim %lld: the CUDA backend's "
                 "attention takes even head dims 8..128 (native/kernels/triton/README.md); use the CPU backend",
                 static_cast<long long>(cfg_.Dh));
        for (int i = 0; i < P_COUNT; ++i) {
            if (stacked_after(i)) {
                w_[i] = w_[i - 1] + info_[i - 1].numel;
                g_[i] = g_[i - 1] + info_[i - 1].numel;
                continue;
            }
            const int64_t n = info_[i].numel + (i + 1 < P_COUNT && stacked_after(i + 1) ? info_[i + 1].numel : 0);
            w_[i] = grow<bf16>(d_, weight_[i], n);
            g_[i] = grow<float>(d_, grad_[i], n);
        }
        std::vector<float> f;
        std::vector<uint16_t> h;
        for (int i = 0; i < P_COUNT; ++i) {
            const int64_t n = info_[i].numel;
            f.resize(static_cast<std::size_t>(n));
            h.resize(static_cast<std::size_t>(n));
            cpu::init_param(cfg_, i, seed, f.data());
            for (int64_t j = 0; j < n; ++j) h[j] = hspmn::f32_to_bf16(f[j]);
            grow<bf16>(d_, param_[i], n);
            copy_async(d_, param_[i].data(), h.data(), n * 2, "cudaMemcpyAsync (init param)");
            dirty_[i] = true;
        }
        zero_grad();
        sync("cudaStreamSynchronize (init params)");  // h is freed on return
    }

    void read_param(int index, uint16_t* dst) const override {
        copy_async(d_, dst, param_[index].data(), info_[index].numel * 2, "cudaMemcpyAsync (read_param)");
        sync("cudaStreamSynchronize (read_param)");
    }

    void write_param(int index, const uint16_t* src) override {
        copy_async(d_, param_[index].data(), src, info_[index].numel * 2, "cudaMemcpyAsync (write_param)");
        sync("cudaStreamSynchronize (write_param)");
        dirty_[index] = true;
    }

    void read_grad(int index, float* dst) const override {
        copy_async(d_, dst, g(index), info_[index].numel * 4, "cudaMemcpyAsync (read_grad)");
        sync("cudaStreamSynchronize (read_grad)");
    }

    void zero_grad() override {
        for (int i = 0; i < P_COUNT; ++i)
            check(cudaMemsetAsync(g(i), 0, static_cast<std::size_t>(info_[i].numel) * 4, stream(d_)),
                  "cudaMemsetAsync (zero_grad)");
    }

    // The buffers stay as this block's scratch pool (counted in live_bytes, freed with the block):
    // freeing them here would cudaFree, which waits for the device, at the start of every forward.
    void drop_cache() noexcept override { has_act_ = false; }
    void share_activations(bool shared) override;
    ~CudaBlock() override { unshare(); }

    ParamStorage param_storage(int index) override {
        return {param_[index].as<uint16_t>(), g(index)};
    }
    void params_written() override { dirty_.fill(true); }

    void route(const RouteCall& call) override;
    void forward(const ForwardCall& call) override;
    void backward(const BackwardCall& call) override;
    GraphImpl* capture_forward(const ForwardCall& call) override;
    // Scratch bytes per row of a rows pass carved from the arena, and of the one-pass forward's own
    // buffers (every row a query: threshold routing pads to C = S) (core/forward_chunk.h).
    int64_t chunk_row_bytes() const;
    int64_t one_pass_row_bytes() const;
    // K, V and the conv inputs h are bf16 in forward (k after RoPE, v, h): the caches keep them so.
    int decode_elem_bytes() const override { return 2; }
    void decode(const DecodeCall& call) override;
    bool has_decode_step(int64_t n) const override;
    void decode_step(const DecodeStepCall& call) override;
    void prepare_step() override { refresh_weights(); }
    uint64_t step_generation() const override { return step_generation_; }
    // One replay of a graph captured at scratch generation `generation` (CudaGraph::launch).
    // arena_generation: the rows arena's at capture, or kNoArena when the captured forward was not chunked.
    void replay(cudaGraphExec_t exec, uint64_t generation, const void* shared_scratch, uint64_t arena_generation);
    static constexpr uint64_t kNoArena = ~uint64_t{0};

private:
    // The grow() of the member functions (as a member it hides the free one): a (re)allocation bumps
    // the generation that captured graphs, which hold the old addresses, compare at each replay.
    // Staging and backward partials use ensure() directly: no graph reads them.
    template <class T>
    T* grow(Device& d, DeviceBuffer& b, int64_t count) {
        const std::size_t before = b.bytes();
        T* p = detail::grow<T>(d, b, count);
        if (b.bytes() != before) ++scratch_generation_;
        return p;
    }

    void sync(const char* what) const { check(cudaStreamSynchronize(stream(d_)), what); }
    const bf16* w(int index) const { return w_[index]; }
    float* g(int index) const { return g_[index]; }
    // Parameters stored right after the one before them in weight_ and grad_: [W_gate; W_up] is one
    // [2F, D] matrix and [W_k; W_v] one [2 KV, D], so the forward's gate/up GEMM and the backward's
    // d_c, dW_[gate;up], d_a and dW_[k;v] are one GEMM each (param_ stays one buffer per parameter).
    // F D and KV D are multiples of 4 (D = H Dh, Dh even), so W_up's and W_v's gradients stay 16-byte
    // aligned; their bf16 weights 8-byte at least, which cuBLASLt reads at their alignment and
    // skinny_gemm only where D % 8 == 0 (has_decode_step), i.e. 16-byte aligned.
    static constexpr bool stacked_after(int index) { return index == P_REFLEX_UP || index == P_ATTN_V; }
    static_assert(P_REFLEX_UP == P_REFLEX_GATE + 1 && P_ATTN_V == P_ATTN_K + 1,
                  "w(P_REFLEX_GATE) and w(P_ATTN_K) are the stacked matrices' first rows");

    // The weights this forward uses: param_ where set_param changed it since the last forward.
    void refresh_weights() {
        for (int i = 0; i < P_COUNT; ++i) {
            if (!dirty_[i]) continue;
            copy_async(d_, w_[i], param_[i].data(), info_[i].numel * 2, "cudaMemcpyAsync (weights)");
            dirty_[i] = false;
        }
    }

    // cos/sin rows 0..S-1 (a longer table serves a shorter S: rows depend on the position only).
    void ensure_rope(int64_t S) {
        if (S <= rope_S_) return;
        const int64_t half = cfg_.Dh / 2;
        grow<float>(d_, rope_cos_, S * half);
        grow<float>(d_, rope_sin_, S * half);
        rope_table(d_, S, cfg_.Dh, cfg_.params.rope_base, rope_cos_.as<float>(), rope_sin_.as<float>());
        rope_S_ = S;
    }

    // A pass over `seqs` whole sequences of S rows (x, out: [seqs * S, D]) after ensure_rope(S): the conv
    // from zeros, the keys the pass's own rows, up to C query slots per sequence (idx [seqs, C] gives their
    // rows, table rows and positions, cnt [seqs] their counts), one attention run `run` ({0, seqs, 0}).
    RowsPass sequences_pass(int64_t seqs, int64_t S, int64_t C, const bf16* x, bf16* out, const int32_t* idx,
                            const int32_t* cnt, const DecodeRun* run) const {
        RowsPass p;
        p.n = seqs * S;
        p.x = x;
        p.out = out;
        p.conv_B = seqs;
        p.conv_S = S;
        p.cos_t = rope_cos_.as<float>();
        p.sin_t = rope_sin_.as<float>();
        p.key_S = S;
        p.blocks = seqs;
        p.C = C;
        p.q_row_S = S;
        p.q_rows = p.q_tab = p.q_pos = idx;
        p.q_cnt = cnt;
        p.runs = run;
        p.run_count = 1;
        p.att_S = S;
        return p;
    }

    // l, n = (l + g) / t, temp for x: [N, D] bf16 (device). g from the noise tensor, the generator, or 0.
    void run_router(Activations& A, const bf16* x, int64_t B, int64_t S, int32_t training, int32_t noise,
                    uint64_t seed, int64_t step, int32_t layer, int64_t row_offset,
                    const hspmn_tensor* noise_tensor) {
        const int64_t N = B * S;
        const float* g = nullptr;
        if (training && noise) {
            if (noise_tensor) {
                g = input<float>(d_, noise_tensor, stage_.noise, "cudaMemcpyAsync (noise)");
            } else {
                float* buf = grow<float>(d_, A.noise, N);
                gumbel_noise_kernel_launch(d_, seed, step, layer, B, S, buf, row_offset);
                g = buf;
            }
        }
        router_forward(d_, x, w(P_ROUTER_W), w(P_ROUTER_B), w(P_ROUTER_LOG_TEMP), g, N, cfg_.D,
                       grow<float>(d_, A.l, N), grow<float>(d_, A.n, N), grow<float>(d_, A.temp, 2));
    }

    // Stops sharing the device's activations (act_ back to own_act_); the last user frees them.
    void unshare() noexcept;
    void ensure_step(int64_t seqs, int64_t max_len);
    void run_rows(const RowsPass& p, const RowsBuffers& b);  // cuda_block_rows.cu
    // The arena's buffers of a pass of n rows and Q query slots (RowsBuffers says what they share).
    // fused_mlp: an inference pass computes act with swiglu_gemm and keeps no gate | up, so gu is not
    // carved (null); a training pass computes it there too but keeps gu for the backward.
    RowsBuffers carve_rows(Carve& cv, int64_t n, int64_t Q, bool fused_mlp = false) const;
    // An inference pass of this block computes gate, up and act in swiglu_gemm's kernel (runtime.h
    // swiglu_gemm_wanted; the pass's own buffers are 256-byte aligned pieces or cudaMalloc'd).
    bool fused_mlp_inference() const;
    // Inference forward of more rows than one pass: cuda_block_chunked.cu.
    void forward_chunked(const ForwardCall& call, const ForwardChunks& chunks);

    int64_t routing_k(int64_t S) const {
        return cfg_.params.routing == HSPMN_ROUTING_TOPK ? topk_count(S, cfg_.params.sparsity_k) : S;
    }

    Device& d_;
    BlockConfig cfg_;
    std::array<ParamInfo, P_COUNT> info_;
    std::array<DeviceBuffer, P_COUNT> param_;   // [numel] bf16 as stored
    // weight_ and grad_: one buffer per parameter, except that a stacked_after parameter has none of
    // its own and lies at the end of the one before it; w_ and g_ point to each parameter's values.
    std::array<DeviceBuffer, P_COUNT> weight_;  // [numel] bf16 the last forward used
    std::array<bool, P_COUNT> dirty_{};
    std::array<DeviceBuffer, P_COUNT> grad_;    // [numel] f32
    std::array<bf16*, P_COUNT> w_{};
    std::array<float*, P_COUNT> g_{};
    DeviceBuffer rope_cos_, rope_sin_;          // [rope_S_, Dh/2] f32
    int64_t rope_S_ = 0;
    Activations own_act_;
    Activations* act_ = &own_act_;  // own_act_, or the device's SharedActivations (share_activations)
    bool has_act_ = false;
    bool last_chunked_ = false;  // the last forward ran forward_chunked (in the rows arena)
    Activations route_;     // route()'s router values
    DecodeScratch dec_;
    StepScratch step_;
    uint64_t step_generation_ = 0;
    Stage stage_;
    uint64_t scratch_generation_ = 0;
};

}  // namespace hspmn::cuda::detail

namespace hspmn::cuda {

// The activations that every block of a device shares under recomputation (Device::shared_activations).
struct SharedActivations final : DeviceOwned {
    detail::Activations act;
    int users = 0;  // blocks sharing it; at 0 its buffers are freed (the model went back to its own)
};

}  // namespace hspmn::cuda
