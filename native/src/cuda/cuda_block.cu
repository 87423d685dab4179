// One HSPMN block on the GPU: the CPU block's wiring (cpu_block.cpp) with the ops of kernels/ and
// cuBLASLt GEMMs. Parameters bf16 on the device (as stored, plus the copy the last forward used, so
// a backward differentiates its forward's weights as the CPU does), gradients f32 on the device.
// Call tensors may be HOST, PINNED or DEVICE: device ones are used in place with no host sync;
// others are staged through device scratch and the call synchronises once at its end.
#include <algorithm>
#include <array>
#include <climits>
#include <cstring>
#include <vector>

#include "../core/bf16.h"
#include "../core/error.h"
#include "../core/objects.h"
#include "../cpu/param_init.h"
#include "cuda_block.h"
#include "kernels/kernels.h"

namespace hspmn::cuda {

namespace {

using bf16 = __nv_bfloat16;

// Everything backward needs from a training forward (device memory). BC = B*C selected rows.
struct Activations {
    int64_t B = 0, S = 0, N = 0, C = 0;
    float aux_target = 0.0f;
    DeviceBuffer x;                  // [N, D] bf16, a copy: the caller may reuse its x before backward
    DeviceBuffer noise;              // [N] f32 drawn noise (scratch)
    DeviceBuffer l, n, temp;         // [N], [N] f32; [2] f32 {t, t inside (0.1, 2)}
    DeviceBuffer idx, cnt;           // [B, C] i32 positions then padding, [B] i32
    DeviceBuffer rstd_h, h, c;       // reflex: [N] f32, [N, D] bf16, [N, D] bf16
    DeviceBuffer gate, up, act;      // [N, F] bf16
    DeviceBuffer res;                // [N, D] f32 x + m + y o (scratch)
    DeviceBuffer rstd_a, a;          // [N] f32, [N, D] bf16
    DeviceBuffer kf, k, v;           // [N, KV] f32 before RoPE (scratch), [N, KV] bf16 after, [N, KV] bf16
    DeviceBuffer a_sel, qf, q;       // [BC, D] bf16, [BC, D] f32 (scratch), [BC, D] bf16 after RoPE
    DeviceBuffer attn, lse, o;       // [BC, D] bf16 = [B, C, H, Dh], [B, H, C] f32, [BC, D] f32
};

// Backward's temporaries, kept between calls so a training step allocates nothing once warm.
struct BackwardScratch {
    DeviceBuffer dx, d_a, d_h;              // [N, D] f32
    DeviceBuffer dy, dl;                    // [BC] f32, [N] f32
    DeviceBuffer dk, dv;                    // [N, KV] bf16
    DeviceBuffer d_o, d_attn, dq, d_asel;   // [BC, D] bf16
    DeviceBuffer d_act, d_gate, d_up;       // [N, F] bf16
    DeviceBuffer partials;                  // column partials of the weight-gradient reductions
};

// Staging of call tensors that are not in device memory.
struct Stage {
    DeviceBuffer x, noise, idx, cnt, out, aux, logits, probs, d_out, d_aux, d_x;
};

bool on_device(const hspmn_tensor* t) { return t->memory == HSPMN_MEMORY_DEVICE; }

template <class T>
T* grow(Device& d, DeviceBuffer& b, int64_t count) {
    b.ensure(d, static_cast<std::size_t>(count > 0 ? count : 1) * sizeof(T));
    return b.as<T>();
}

void copy_async(Device& d, void* dst, const void* src, int64_t bytes, const char* what) {
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

void output_done(Device& d, hspmn_tensor* t, const DeviceBuffer& stage, const char* what) {
    if (t && !on_device(t)) copy_async(d, t->data, stage.data(), t->nbytes, what);
}

// Host memory among the call's tensors: the call ends with one stream sync (outputs are read by the
// host, and pinned inputs must not be rewritten while an async copy still reads them).
bool any_host(std::initializer_list<const hspmn_tensor*> ts) {
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
            check(cudaMallocHost(&p, static_cast<std::size_t>(count) * sizeof(int32_t)), "cudaMallocHost (decode)");
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

// One sqdk_attention launch of a decode call: cache slots lo .. lo + len - 1 read by query blocks
// block0 .. block0 + len - 1 (slots without queries in this call have count 0).
struct DecodeRun {
    int64_t lo, len, block0;
};

// Decode's own buffers; the rest is act_'s (decode rewrites them as an inference forward does).
struct DecodeScratch {
    DeviceBuffer meta;                 // i32 [1 + (seqs + 1) + 3 seqs]: n, row_start, slot, pos0, qblock
    DeviceBuffer row_pos, row_cache;   // [n] i32, [n] i64
    DeviceBuffer qrow;                 // [blocks, C] i32: the row of each query, -1 past its count
    PinnedUpload upload;
    std::vector<int64_t, TrackedAllocator<int64_t>> order;
    std::vector<DecodeRun, TrackedAllocator<DecodeRun>> runs;
};

class CudaBlock final : public BlockImpl {
public:
    CudaBlock(Device& d, const BlockConfig& cfg, uint64_t seed) : d_(d), cfg_(cfg), info_(param_table(cfg)) {
        if (!attention_supports_head_dim(cfg_.Dh))
            fail(HSPMN_ERR_NOT_BUILT, "CUDA sqdk_attention has no kernel for head_dim %lld: the CUDA backend's "
                 "attention takes even head dims 8..128 (native/kernels/triton/README.md); use the CPU backend",
                 static_cast<long long>(cfg_.Dh));
        std::vector<float> f;
        std::vector<uint16_t> h;
        for (int i = 0; i < P_COUNT; ++i) {
            const int64_t n = info_[i].numel;
            f.resize(static_cast<std::size_t>(n));
            h.resize(static_cast<std::size_t>(n));
            cpu::init_param(cfg_, i, seed, f.data());
            for (int64_t j = 0; j < n; ++j) h[j] = hspmn::f32_to_bf16(f[j]);
            grow<bf16>(d_, param_[i], n);
            grow<bf16>(d_, weight_[i], n);
            grow<float>(d_, grad_[i], n);
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
        copy_async(d_, dst, grad_[index].data(), info_[index].numel * 4, "cudaMemcpyAsync (read_grad)");
        sync("cudaStreamSynchronize (read_grad)");
    }

    void zero_grad() override {
        for (int i = 0; i < P_COUNT; ++i)
            check(cudaMemsetAsync(grad_[i].data(), 0, static_cast<std::size_t>(info_[i].numel) * 4, stream(d_)),
                  "cudaMemsetAsync (zero_grad)");
    }

    // The buffers stay as this block's scratch pool (counted in live_bytes, freed with the block):
    // freeing them here would cudaFree, which waits for the device, at the start of every forward.
    void drop_cache() noexcept override { has_act_ = false; }

    ParamStorage param_storage(int index) override {
        return {param_[index].as<uint16_t>(), grad_[index].as<float>()};
    }
    void params_written() override { dirty_.fill(true); }

    void route(const RouteCall& call) override;
    void forward(const ForwardCall& call) override;
    void backward(const BackwardCall& call) override;
    GraphImpl* capture_forward(const ForwardCall& call) override;
    // K, V and the conv inputs h are bf16 in forward (k after RoPE, v, h): the caches keep them so.
    int decode_elem_bytes() const override { return 2; }
    void decode(const DecodeCall& call) override;
    // One replay of a graph captured at scratch generation `generation` (CudaGraph::launch).
    void replay(cudaGraphExec_t exec, uint64_t generation, const void* shared_scratch);

private:
    // The grow() of the member functions (as a member it hides the free one): a (re)allocation bumps
    // the generation that captured graphs, which hold the old addresses, compare at each replay.
    // Staging and backward partials use ensure() directly: no graph reads them.
    template <class T>
    T* grow(Device& d, DeviceBuffer& b, int64_t count) {
        const std::size_t before = b.bytes();
        T* p = cuda::grow<T>(d, b, count);
        if (b.bytes() != before) ++scratch_generation_;
        return p;
    }

    void sync(const char* what) const { check(cudaStreamSynchronize(stream(d_)), what); }
    const bf16* w(int index) const { return weight_[index].as<bf16>(); }
    float* g(int index) const { return grad_[index].as<float>(); }

    // The weights this forward uses: param_ where set_param changed it since the last forward.
    void refresh_weights() {
        for (int i = 0; i < P_COUNT; ++i) {
            if (!dirty_[i]) continue;
            copy_async(d_, weight_[i].data(), param_[i].data(), info_[i].numel * 2, "cudaMemcpyAsync (weights)");
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

    // l, n = (l + g) / t, temp for x: [N, D] bf16 (device). g from the noise tensor, the generator, or 0.
    void run_router(Activations& A, const bf16* x, int64_t B, int64_t S, int32_t training, int32_t noise,
                    uint64_t seed, int64_t step, int32_t layer, const hspmn_tensor* noise_tensor) {
        const int64_t N = B * S;
        const float* g = nullptr;
        if (training && noise) {
            if (noise_tensor) {
                g = input<float>(d_, noise_tensor, stage_.noise, "cudaMemcpyAsync (noise)");
            } else {
                float* buf = grow<float>(d_, A.noise, N);
                gumbel_noise_kernel_launch(d_, seed, step, layer, B, S, buf);
                g = buf;
            }
        }
        router_forward(d_, x, w(P_ROUTER_W), w(P_ROUTER_B), w(P_ROUTER_LOG_TEMP), g, N, cfg_.D,
                       grow<float>(d_, A.l, N), grow<float>(d_, A.n, N), grow<float>(d_, A.temp, 2));
    }

    int64_t routing_k(int64_t S) const {
        return cfg_.params.routing == HSPMN_ROUTING_TOPK ? topk_count(S, cfg_.params.sparsity_k) : S;
    }

    Device& d_;
    BlockConfig cfg_;
    std::array<ParamInfo, P_COUNT> info_;
    std::array<DeviceBuffer, P_COUNT> param_;   // [numel] bf16 as stored
    std::array<DeviceBuffer, P_COUNT> weight_;  // [numel] bf16 the last forward used
    std::array<bool, P_COUNT> dirty_{};
    std::array<DeviceBuffer, P_COUNT> grad_;    // [numel] f32
    DeviceBuffer rope_cos_, rope_sin_;          // [rope_S_, Dh/2] f32
    int64_t rope_S_ = 0;
    Activations act_;
    bool has_act_ = false;
    Activations route_;     // route()'s router values
    BackwardScratch back_;
    DecodeScratch dec_;
    Stage stage_;
    uint64_t scratch_generation_ = 0;
};

void CudaBlock::route(const RouteCall& call) {
    refresh_weights();
    const int64_t B = call.x->shape[0], S = call.x->shape[1], N = B * S;
    Activations& A = route_;
    const bf16* x = input<bf16>(d_, call.x, stage_.x, "cudaMemcpyAsync (x)");
    run_router(A, x, B, S, call.training, call.noise, call.seed, call.step, call.layer, call.noise_tensor);
    if (call.logits) {
        copy_async(d_, output<float>(d_, call.logits, stage_.logits), A.l.data(), N * 4, "cudaMemcpyAsync (logits)");
        output_done(d_, call.logits, stage_.logits, "cudaMemcpyAsync (logits out)");
    }
    if (call.probs) {
        router_probs(d_, A.l.as<float>(), N, output<float>(d_, call.probs, stage_.probs));
        output_done(d_, call.probs, stage_.probs, "cudaMemcpyAsync (probs out)");
    }
    if (call.indices) {
        route_select(d_, A.n.as<float>(), B, S, cfg_.params.routing, routing_k(S), call.indices->shape[1],
                     output<int32_t>(d_, call.indices, stage_.idx), output<int32_t>(d_, call.counts, stage_.cnt));
        output_done(d_, call.indices, stage_.idx, "cudaMemcpyAsync (indices out)");
        output_done(d_, call.counts, stage_.cnt, "cudaMemcpyAsync (counts out)");
    }
    if (call.aux) {
        aux_loss_forward(d_, A.l.as<float>(), N, call.aux_target, cfg_.params.router_sparsity_coef,
                         cfg_.params.router_entropy_coef, output<float>(d_, call.aux, stage_.aux));
        output_done(d_, call.aux, stage_.aux, "cudaMemcpyAsync (aux out)");
    }
    if (any_host({call.x, call.noise_tensor, call.logits, call.probs, call.indices, call.counts, call.aux}))
        sync("cudaStreamSynchronize (route)");
}

void CudaBlock::forward(const ForwardCall& call) {
    refresh_weights();
    const int64_t B = call.x->shape[0], S = call.x->shape[1], N = B * S;
    const int64_t D = cfg_.D, F = cfg_.F, H = cfg_.H, Hkv = cfg_.Hkv, Dh = cfg_.Dh, KV = Hkv * Dh;
    Activations& A = act_;
    has_act_ = false;
    A.B = B;
    A.S = S;
    A.N = N;
    A.aux_target = call.aux_target;

    const bf16* x = input<bf16>(d_, call.x, stage_.x, "cudaMemcpyAsync (x)");
    if (call.training) {
        copy_async(d_, grow<bf16>(d_, A.x, N * D), x, N * D * 2, "cudaMemcpyAsync (keep x)");
        x = A.x.as<bf16>();
    }

    // 1. Router and selection (counts stay on the device; C is known here).
    run_router(A, x, B, S, call.training, call.noise, call.seed, call.step, call.layer, call.noise_tensor);
    int64_t C;
    if (call.indices) {
        C = call.indices->shape[1];
        // Copied, not viewed: the caller may change its pins before backward.
        copy_async(d_, grow<int32_t>(d_, A.idx, B * C), call.indices->data, B * C * 4, "cudaMemcpyAsync (indices)");
        copy_async(d_, grow<int32_t>(d_, A.cnt, B), call.counts->data, B * 4, "cudaMemcpyAsync (counts)");
    } else {
        C = routing_k(S);
        route_select(d_, A.n.as<float>(), B, S, cfg_.params.routing, C, C, grow<int32_t>(d_, A.idx, B * C),
                     grow<int32_t>(d_, A.cnt, B));
    }
    A.C = C;
    const int64_t BC = B * C;
    const int32_t* idx = A.idx.as<int32_t>();
    const int32_t* cnt = A.cnt.as<int32_t>();
    if (call.routed_fraction) routed_fraction(d_, cnt, B, S, call.routed_fraction);

    // 2. Reflexive stream: h = rms_norm(x), c = causal_conv(h), res = x + down(silu(gate c) * up c).
    float* rstd_h = grow<float>(d_, A.rstd_h, N);
    bf16* h = grow<bf16>(d_, A.h, N * D);
    bf16* c = grow<bf16>(d_, A.c, N * D);
    bf16* gate = grow<bf16>(d_, A.gate, N * F);
    bf16* up = grow<bf16>(d_, A.up, N * F);
    bf16* act = grow<bf16>(d_, A.act, N * F);
    float* res = grow<float>(d_, A.res, N * D);
    rms_norm_forward(d_, x, w(P_REFLEX_NORM), cfg_.params.norm_eps, N, D, h, rstd_h);
    causal_conv_forward(d_, h, w(P_REFLEX_CONV), B, S, D, cfg_.conv_kernel, c);
    gemm(d_, false, true, N, F, D, 1.0f, c, D, w(P_REFLEX_GATE), D, 0.0f, gate, DType::BF16, F);
    gemm(d_, false, true, N, F, D, 1.0f, c, D, w(P_REFLEX_UP), D, 0.0f, up, DType::BF16, F);
    swiglu_forward(d_, gate, up, N * F, act);
    bf16_to_f32(d_, x, res, N * D);
    gemm(d_, false, true, N, D, F, 1.0f, act, F, w(P_REFLEX_DOWN), F, 1.0f, res, DType::F32, D);

    // 3. Contextual stream: K, V for every token, Q for the selected rows only ([B, C], padded).
    float* rstd_a = grow<float>(d_, A.rstd_a, N);
    bf16* a = grow<bf16>(d_, A.a, N * D);
    float* kf = grow<float>(d_, A.kf, N * KV);
    bf16* k = grow<bf16>(d_, A.k, N * KV);
    bf16* v = grow<bf16>(d_, A.v, N * KV);
    rms_norm_forward(d_, x, w(P_ATTN_NORM), cfg_.params.norm_eps, N, D, a, rstd_a);
    gemm(d_, false, true, N, KV, D, 1.0f, a, D, w(P_ATTN_K), D, 0.0f, kf, DType::F32, KV);
    gemm(d_, false, true, N, KV, D, 1.0f, a, D, w(P_ATTN_V), D, 0.0f, v, DType::BF16, KV);
    ensure_rope(S);
    rope_forward(d_, kf, k, N, Hkv, Dh, nullptr, nullptr, 0, S, rope_cos_.as<float>(), rope_sin_.as<float>());
    if (BC > 0) {
        bf16* a_sel = grow<bf16>(d_, A.a_sel, BC * D);
        float* qf = grow<float>(d_, A.qf, BC * D);
        bf16* q = grow<bf16>(d_, A.q, BC * D);
        bf16* attn = grow<bf16>(d_, A.attn, BC * D);
        float* lse = grow<float>(d_, A.lse, B * H * C);
        float* o = grow<float>(d_, A.o, BC * D);
        gather_selected(d_, a, idx, cnt, B, S, C, D, a_sel);
        gemm(d_, false, true, BC, D, D, 1.0f, a_sel, D, w(P_ATTN_Q), D, 0.0f, qf, DType::F32, D);
        rope_forward(d_, qf, q, BC, H, Dh, idx, cnt, C, S, rope_cos_.as<float>(), rope_sin_.as<float>());
        sqdk_attention_forward(d_, AttentionShape{B, C, S, H, Hkv, Dh}, q, idx, cnt, k, v, attn, lse);
        gemm(d_, false, true, BC, D, D, 1.0f, attn, D, w(P_ATTN_O), D, 0.0f, o, DType::F32, D);
        // 4. out = res + y o on the selected tokens (y = 1 in value).
        gate_scatter_forward(d_, o, idx, cnt, B, S, C, D, res);
    }

    f32_to_bf16(d_, res, output<bf16>(d_, call.out, stage_.out), N * D);
    output_done(d_, call.out, stage_.out, "cudaMemcpyAsync (out)");
    if (call.aux) {
        aux_loss_forward(d_, A.l.as<float>(), N, call.aux_target, cfg_.params.router_sparsity_coef,
                         cfg_.params.router_entropy_coef, output<float>(d_, call.aux, stage_.aux));
        output_done(d_, call.aux, stage_.aux, "cudaMemcpyAsync (aux)");
    }
    if (any_host({call.x, call.noise_tensor, call.indices, call.counts, call.out, call.aux}))
        sync("cudaStreamSynchronize (forward)");
    has_act_ = call.training != 0;
}

void CudaBlock::backward(const BackwardCall& call) {
    if (!has_act_) fail(HSPMN_ERR_STATE, "CUDA backward without a training forward");
    Activations& A = act_;
    const int64_t B = A.B, S = A.S, N = A.N, C = A.C, BC = B * C;
    const int64_t D = cfg_.D, F = cfg_.F, H = cfg_.H, Hkv = cfg_.Hkv, Dh = cfg_.Dh, KV = Hkv * Dh;
    const int32_t* idx = A.idx.as<int32_t>();
    const int32_t* cnt = A.cnt.as<int32_t>();
    const bf16* x = A.x.as<bf16>();
    const float* cos_t = rope_cos_.as<float>();
    const float* sin_t = rope_sin_.as<float>();
    // Every weight gradient below accumulates (beta = 1) into grads zeroed here unless accumulating.
    if (!call.accumulate) zero_grad();

    const bf16* d_out = input<bf16>(d_, call.d_out, stage_.d_out, "cudaMemcpyAsync (d_out)");
    const float* d_aux = input<float>(d_, call.d_aux, stage_.d_aux, "cudaMemcpyAsync (d_aux)");
    BackwardScratch& T = back_;
    DeviceBuffer& scratch = T.partials;
    float* dx = grow<float>(d_, T.dx, N * D);  // the residual path: out = x + m + y o
    bf16_to_f32(d_, d_out, dx, N * D);

    // Contextual stream, back to the attention input a.
    float* dy = grow<float>(d_, T.dy, BC);
    bf16* dk = grow<bf16>(d_, T.dk, N * KV);
    bf16* dv = grow<bf16>(d_, T.dv, N * KV);
    float* d_a = grow<float>(d_, T.d_a, N * D);
    {
        bf16* d_asel = nullptr;
        if (BC > 0) {
            bf16* d_o = grow<bf16>(d_, T.d_o, BC * D);
            bf16* d_attn = grow<bf16>(d_, T.d_attn, BC * D);
            bf16* dq = grow<bf16>(d_, T.dq, BC * D);
            d_asel = grow<bf16>(d_, T.d_asel, BC * D);
            const bf16* attn = A.attn.as<bf16>();
            gate_scatter_backward(d_, A.o.as<float>(), d_out, idx, cnt, B, S, C, D, d_o, dy);
            gemm(d_, true, false, D, D, BC, 1.0f, d_o, D, attn, D, 1.0f, g(P_ATTN_O), DType::F32, D);
            gemm(d_, false, false, BC, D, D, 1.0f, d_o, D, w(P_ATTN_O), D, 0.0f, d_attn, DType::BF16, D);
            sqdk_attention_backward(d_, AttentionShape{B, C, S, H, Hkv, Dh}, A.q.as<bf16>(), idx, cnt, A.k.as<bf16>(),
                                    A.v.as<bf16>(), attn, A.lse.as<float>(), d_attn, dq, dk, dv);
            rope_backward(d_, dq, dq, BC, H, Dh, idx, cnt, C, S, cos_t, sin_t);
            gemm(d_, true, false, D, D, BC, 1.0f, dq, D, A.a_sel.as<bf16>(), D, 1.0f, g(P_ATTN_Q), DType::F32, D);
            gemm(d_, false, false, BC, D, D, 1.0f, dq, D, w(P_ATTN_Q), D, 0.0f, d_asel, DType::BF16, D);
        } else {
            check(cudaMemsetAsync(dk, 0, static_cast<std::size_t>(N * KV) * 2, stream(d_)), "cudaMemsetAsync (dk)");
            check(cudaMemsetAsync(dv, 0, static_cast<std::size_t>(N * KV) * 2, stream(d_)), "cudaMemsetAsync (dv)");
        }
        rope_backward(d_, dk, dk, N, Hkv, Dh, nullptr, nullptr, 0, S, cos_t, sin_t);
        const bf16* a = A.a.as<bf16>();
        gemm(d_, true, false, KV, D, N, 1.0f, dk, KV, a, D, 1.0f, g(P_ATTN_K), DType::F32, D);
        gemm(d_, true, false, KV, D, N, 1.0f, dv, KV, a, D, 1.0f, g(P_ATTN_V), DType::F32, D);
        gemm(d_, false, false, N, D, KV, 1.0f, dk, KV, w(P_ATTN_K), D, 0.0f, d_a, DType::F32, D);
        gemm(d_, false, false, N, D, KV, 1.0f, dv, KV, w(P_ATTN_V), D, 1.0f, d_a, DType::F32, D);
        if (BC > 0) scatter_add_selected(d_, d_asel, idx, cnt, B, S, C, D, d_a);
    }
    rms_norm_backward(d_, x, w(P_ATTN_NORM), A.rstd_a.as<float>(), d_a, N, D, dx, g(P_ATTN_NORM), scratch);

    // Reflexive stream: d m = d_out.
    {
        bf16* d_act = grow<bf16>(d_, T.d_act, N * F);
        bf16* d_gate = grow<bf16>(d_, T.d_gate, N * F);
        bf16* d_up = grow<bf16>(d_, T.d_up, N * F);
        const bf16* c = A.c.as<bf16>();
        gemm(d_, true, false, D, F, N, 1.0f, d_out, D, A.act.as<bf16>(), F, 1.0f, g(P_REFLEX_DOWN), DType::F32, F);
        gemm(d_, false, false, N, F, D, 1.0f, d_out, D, w(P_REFLEX_DOWN), F, 0.0f, d_act, DType::BF16, F);
        swiglu_backward(d_, A.gate.as<bf16>(), A.up.as<bf16>(), d_act, N * F, d_gate, d_up);
        gemm(d_, true, false, F, D, N, 1.0f, d_gate, F, c, D, 1.0f, g(P_REFLEX_GATE), DType::F32, D);
        gemm(d_, true, false, F, D, N, 1.0f, d_up, F, c, D, 1.0f, g(P_REFLEX_UP), DType::F32, D);
        float* d_c = d_a;  // d_a is consumed: reuse its [N, D] f32
        gemm(d_, false, false, N, D, F, 1.0f, d_gate, F, w(P_REFLEX_GATE), D, 0.0f, d_c, DType::F32, D);
        gemm(d_, false, false, N, D, F, 1.0f, d_up, F, w(P_REFLEX_UP), D, 1.0f, d_c, DType::F32, D);
        float* d_h = grow<float>(d_, T.d_h, N * D);
        causal_conv_backward(d_, A.h.as<bf16>(), w(P_REFLEX_CONV), d_c, B, S, D, cfg_.conv_kernel, d_h,
                             g(P_REFLEX_CONV), scratch);
        rms_norm_backward(d_, x, w(P_REFLEX_NORM), A.rstd_h.as<float>(), d_h, N, D, dx, g(P_REFLEX_NORM), scratch);
    }

    // Router: aux through p for every token, then the gate y = 1 - sg(s) + s, s = sigmoid(n),
    // n = (l + g) / t on the selected tokens; then router.w/b/log_temp and dx.
    float* dl = grow<float>(d_, T.dl, N);
    aux_loss_backward(d_, A.l.as<float>(), N, A.aux_target, cfg_.params.router_sparsity_coef,
                      cfg_.params.router_entropy_coef, d_aux, dl);
    router_backward(d_, dy, A.n.as<float>(), idx, cnt, A.temp.as<float>(), B, S, C, x, w(P_ROUTER_W), D, dl,
                    g(P_ROUTER_W), g(P_ROUTER_B), g(P_ROUTER_LOG_TEMP), dx, scratch);

    if (call.d_x) {
        f32_to_bf16(d_, dx, output<bf16>(d_, call.d_x, stage_.d_x), N * D);
        output_done(d_, call.d_x, stage_.d_x, "cudaMemcpyAsync (d_x)");
    }
    if (any_host({call.d_out, call.d_aux, call.d_x})) sync("cudaStreamSynchronize (backward)");
}

// ---- cached decoding (core/backend.h DecodeCall, MODEL.md "Decoding with a cache") ----
//
// For its rows, decode runs the forward's kernels in the forward's order with the same roundings:
// router_forward without noise, rms_norm_forward, the causal conv's arithmetic over [the slot's conv
// cache, the new rows], the same GEMMs, swiglu, rope_forward from the same table, sqdk_attention and
// gate_scatter. Only the GEMMs' M differs from the full forward (cuBLASLt may pick another algorithm
// for another M), so the outputs agree to float32 summation order, not bit for bit.
//
// No host synchronisation: which rows the router selects stays on the device. decode_select writes
// per-sequence query lists [blocks, C] (C = the most rows of one sequence; padding past each count,
// as the forward's threshold routing pads to C = S), and the Q/O GEMMs, RoPE, attention and scatter
// take those lists with their device-side counts, exactly as the forward does. The host knows only
// the call's shape (rows per sequence, slots, positions), which it uploads once per call.
//
// Query blocks and attention launches: the Triton kernels want 16-byte aligned pointers and index
// K/V by batch * S. Sequences sorted by slot are grouped into runs of nearby slots; a run is one
// launch over cache slots lo .. lo + len - 1 (lo a multiple of 4, so k_cache + lo * max_len * KV is
// aligned: KV is even) with query blocks block0 .. (block0 a multiple of 4, so q, pos, counts and lse
// offsets are aligned: D is even). Slots of a run without a sequence of this call get count 0.
// Slots 0..n-1 decoded together are one run and one launch.
void CudaBlock::decode(const DecodeCall& call) {
    const int64_t n = call.n, seqs = call.seqs, max_len = call.max_len;
    if (n <= 0 || seqs <= 0) return;
    const int64_t D = cfg_.D, F = cfg_.F, H = cfg_.H, Hkv = cfg_.Hkv, Dh = cfg_.Dh, KV = Hkv * Dh;
    const int64_t Kc = cfg_.conv_kernel;
    // Rows, positions and query slots are i32 on the device (the attention's Pos is i32).
    if (n > INT32_MAX || seqs > INT32_MAX || max_len > INT32_MAX || call.max_seqs > INT32_MAX)
        fail(HSPMN_ERR_SHAPE, "CUDA decode: %lld rows of %lld sequences, max_len %lld: the CUDA decode indexes rows "
             "and positions in int32", static_cast<long long>(n), static_cast<long long>(seqs),
             static_cast<long long>(max_len));
    const void* const ptrs[] = {call.x, call.out, call.k_cache, call.v_cache, call.conv_cache};
    for (const void* p : ptrs)
        if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
            fail(HSPMN_ERR_INTERNAL, "CUDA decode: x, out and the caches must be 16-byte aligned");
    // A launch's grid y is len * H <= 65535, len a multiple of 4 (alignment, above).
    const int64_t max_run = (65535 / H) / 4 * 4;
    if (max_run < 4) fail(HSPMN_ERR_SHAPE, "CUDA decode: %lld heads exceed the attention grid", static_cast<long long>(H));
    refresh_weights();
    has_act_ = false;  // the forward's scratch (act_) is rewritten below
    DecodeScratch& X = dec_;
    Activations& A = act_;

    // ---- the call's shape on the host: query capacity C, runs, query block of each sequence
    int64_t C = 0, end = 0;  // end: one past the last position of the call
    for (int64_t j = 0; j < seqs; ++j) {
        C = std::max(C, call.row_start[j + 1] - call.row_start[j]);
        end = std::max(end, call.pos0[j] + call.row_start[j + 1] - call.row_start[j]);
    }
    X.order.resize(static_cast<std::size_t>(seqs));
    for (int64_t j = 0; j < seqs; ++j) X.order[j] = j;
    std::sort(X.order.begin(), X.order.end(), [&](int64_t a, int64_t b) { return call.slot[a] < call.slot[b]; });
    X.runs.clear();
    const int64_t meta_count = 1 + (seqs + 1) + 3 * seqs;
    int32_t* mh = X.upload.begin(d_, meta_count);
    int32_t* h_row_start = mh + 1;
    int32_t* h_slot = h_row_start + seqs + 1;
    int32_t* h_pos0 = h_slot + seqs;
    int32_t* h_qblock = h_pos0 + seqs;
    for (int64_t j : X.order) {
        const int64_t s = call.slot[j];
        // Join the current run when the slot is at most 4 past its end (at most 3 empty blocks) and
        // the run stays launchable; else a new run from the aligned slot below s.
        if (X.runs.empty() || s > X.runs.back().lo + X.runs.back().len + 3 || s - X.runs.back().lo >= max_run) {
            const int64_t block0 = X.runs.empty() ? 0 : (X.runs.back().block0 + X.runs.back().len + 3) / 4 * 4;
            X.runs.push_back({s / 4 * 4, 0, block0});
        }
        DecodeRun& r = X.runs.back();
        r.len = s - r.lo + 1;
        h_qblock[j] = static_cast<int32_t>(r.block0 + (s - r.lo));
    }
    const int64_t blocks = X.runs.back().block0 + X.runs.back().len;
    mh[0] = static_cast<int32_t>(n);
    for (int64_t j = 0; j <= seqs; ++j) h_row_start[j] = static_cast<int32_t>(call.row_start[j]);
    for (int64_t j = 0; j < seqs; ++j) {
        h_slot[j] = call.slot[j];
        h_pos0[j] = static_cast<int32_t>(call.pos0[j]);
    }
    int32_t* meta = grow<int32_t>(d_, X.meta, meta_count);
    X.upload.send(d_, meta, meta_count);
    const DecodeMeta m{meta + 1, meta + 1 + seqs + 1, meta + 1 + seqs + 1 + seqs, meta + 1 + seqs + 1 + 2 * seqs,
                       static_cast<int32_t>(seqs)};
    const int32_t* n_rows = meta;  // [1] = n: the counts of the keys' rope_forward (one "sequence" of n rows)
    // The table doubles up to max_len: grown to each step's position it would reallocate at every step,
    // sized max_len at once it would hold rows a decoder with room for long contexts may never reach.
    int64_t rope_rows = 1;
    while (rope_rows < end) rope_rows *= 2;
    ensure_rope(std::max(end, std::min(rope_rows, max_len)));
    const float* cos_t = rope_cos_.as<float>();
    const float* sin_t = rope_sin_.as<float>();
    const bf16* x = reinterpret_cast<const bf16*>(call.x);
    bf16* k_cache = static_cast<bf16*>(call.k_cache);
    bf16* v_cache = static_cast<bf16*>(call.v_cache);
    bf16* conv_cache = static_cast<bf16*>(call.conv_cache);

    // 1. Router (n = l / t, no noise) and the query lists of the selected rows.
    float* l = grow<float>(d_, A.l, n);
    float* nsc = grow<float>(d_, A.n, n);
    router_forward(d_, x, w(P_ROUTER_W), w(P_ROUTER_B), w(P_ROUTER_LOG_TEMP), nullptr, n, D, l, nsc,
                   grow<float>(d_, A.temp, 2));
    int32_t* qpos = grow<int32_t>(d_, A.idx, blocks * C);
    int32_t* qcnt = grow<int32_t>(d_, A.cnt, blocks);
    int32_t* qrow = grow<int32_t>(d_, X.qrow, blocks * C);
    check(cudaMemsetAsync(qcnt, 0, static_cast<std::size_t>(blocks) * 4, stream(d_)), "cudaMemsetAsync (decode counts)");
    decode_select(d_, nsc, m, C, qpos, qrow, qcnt, call.routed);
    int32_t* row_pos = grow<int32_t>(d_, X.row_pos, n);
    int64_t* row_cache = grow<int64_t>(d_, X.row_cache, n);
    decode_rows(d_, m, n, max_len, row_pos, row_cache);

    // 2. Reflexive stream; the conv reads the slot's cache before it is shifted.
    float* rstd_h = grow<float>(d_, A.rstd_h, n);
    bf16* h = grow<bf16>(d_, A.h, n * D);
    bf16* c = grow<bf16>(d_, A.c, n * D);
    bf16* gate = grow<bf16>(d_, A.gate, n * F);
    bf16* up = grow<bf16>(d_, A.up, n * F);
    bf16* act = grow<bf16>(d_, A.act, n * F);
    float* res = grow<float>(d_, A.res, n * D);
    rms_norm_forward(d_, x, w(P_REFLEX_NORM), cfg_.params.norm_eps, n, D, h, rstd_h);
    decode_causal_conv(d_, h, conv_cache, w(P_REFLEX_CONV), m, n, D, Kc, c);
    decode_conv_cache_update(d_, h, m, D, Kc, conv_cache);
    gemm(d_, false, true, n, F, D, 1.0f, c, D, w(P_REFLEX_GATE), D, 0.0f, gate, DType::BF16, F);
    gemm(d_, false, true, n, F, D, 1.0f, c, D, w(P_REFLEX_UP), D, 0.0f, up, DType::BF16, F);
    swiglu_forward(d_, gate, up, n * F, act);
    bf16_to_f32(d_, x, res, n * D);
    gemm(d_, false, true, n, D, F, 1.0f, act, F, w(P_REFLEX_DOWN), F, 1.0f, res, DType::F32, D);

    // 3. Contextual stream: K, V of every row into the caches (before the attention, so a prefill
    // attends its own earlier rows), then Q and attention for the selected rows.
    float* rstd_a = grow<float>(d_, A.rstd_a, n);
    bf16* a = grow<bf16>(d_, A.a, n * D);
    float* kf = grow<float>(d_, A.kf, n * KV);
    bf16* k = grow<bf16>(d_, A.k, n * KV);
    bf16* v = grow<bf16>(d_, A.v, n * KV);
    rms_norm_forward(d_, x, w(P_ATTN_NORM), cfg_.params.norm_eps, n, D, a, rstd_a);
    gemm(d_, false, true, n, KV, D, 1.0f, a, D, w(P_ATTN_K), D, 0.0f, kf, DType::F32, KV);
    gemm(d_, false, true, n, KV, D, 1.0f, a, D, w(P_ATTN_V), D, 0.0f, v, DType::BF16, KV);
    // The rows as one query list [1, n] at their positions: rope_forward's per-row position mode.
    rope_forward(d_, kf, k, n, Hkv, Dh, row_pos, n_rows, n, max_len, cos_t, sin_t);
    decode_kv_write(d_, k, v, row_cache, n, KV, k_cache, v_cache);
    const int64_t Q = blocks * C;
    bf16* a_sel = grow<bf16>(d_, A.a_sel, Q * D);
    float* qf = grow<float>(d_, A.qf, Q * D);
    bf16* q = grow<bf16>(d_, A.q, Q * D);
    bf16* attn = grow<bf16>(d_, A.attn, Q * D);
    float* lse = grow<float>(d_, A.lse, blocks * H * C);
    float* o = grow<float>(d_, A.o, Q * D);
    // S = 0: qrow holds rows of a / res directly (token b * S + qrow[b, j]).
    gather_selected(d_, a, qrow, qcnt, blocks, 0, C, D, a_sel);
    gemm(d_, false, true, Q, D, D, 1.0f, a_sel, D, w(P_ATTN_Q), D, 0.0f, qf, DType::F32, D);
    rope_forward(d_, qf, q, Q, H, Dh, qpos, qcnt, C, max_len, cos_t, sin_t);
    for (const DecodeRun& r : X.runs) {
        const int64_t qo = r.block0 * C, ko = r.lo * max_len * KV;
        sqdk_attention_forward(d_, AttentionShape{r.len, C, max_len, H, Hkv, Dh}, q + qo * D, qpos + qo,
                               qcnt + r.block0, k_cache + ko, v_cache + ko, attn + qo * D, lse + r.block0 * H * C);
    }
    gemm(d_, false, true, Q, D, D, 1.0f, attn, D, w(P_ATTN_O), D, 0.0f, o, DType::F32, D);
    // 4. out = res + y o on the selected rows (y = 1 in value).
    gate_scatter_forward(d_, o, qrow, qcnt, blocks, 0, C, D, res);
    f32_to_bf16(d_, res, reinterpret_cast<bf16*>(call.out), n * D);
}

// ---- CUDA graphs ----
//
// A graph replays the inference forward kernels on the addresses of capture time: weight_ (allocated
// once in the constructor, never regrown; replay() queues the param_ -> weight_ refresh of
// set_param before the graph), the block's scratch (valid while scratch_generation_ is unchanged),
// the device's cuBLASLt workspace (fixed size) and Triton scratch (checked at each replay), and the
// call's DEVICE tensors (the API layer keeps them alive).

class CudaGraph final : public GraphImpl {
public:
    CudaGraph(Device& d, CudaBlock& block, cudaGraphExec_t exec, uint64_t generation, const void* shared_scratch)
        : d_(d), block_(block), exec_(exec), generation_(generation), shared_scratch_(shared_scratch) {}
    ~CudaGraph() override {
        (void)cudaSetDevice(device_ordinal(d_));
        // An executable graph still in flight is freed when it completes.
        (void)cudaGraphExecDestroy(exec_);
    }
    void launch() override {
        check(cudaSetDevice(device_ordinal(d_)), "cudaSetDevice");
        block_.replay(exec_, generation_, shared_scratch_);
    }

private:
    Device& d_;
    CudaBlock& block_;
    cudaGraphExec_t exec_;
    uint64_t generation_;
    const void* shared_scratch_;
};

GraphImpl* CudaBlock::capture_forward(const ForwardCall& call) {
    // Warm-up: sizes the scratch and the rope table, makes the gemm plans, loads the Triton modules and
    // refreshes the weights, so the captured run below allocates nothing and copies no weights.
    forward(call);
    const uint64_t generation = scratch_generation_;
    const void* shared_scratch = triton_scratch(d_);
    cudaStream_t s = stream(d_);
    // Thread-local: a host sync or cudaMalloc on this thread fails the capture instead of passing
    // silently, while other threads (other contexts) keep allocating.
    check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    cudaGraph_t graph = nullptr;
    try {
        forward(call);
    } catch (...) {
        // Never leave the stream capturing: every later call on the context would fail.
        (void)cudaStreamEndCapture(s, &graph);
        if (graph) (void)cudaGraphDestroy(graph);
        (void)cudaGetLastError();
        throw;
    }
    cudaError_t e = cudaStreamEndCapture(s, &graph);
    if (e != cudaSuccess) {
        if (graph) (void)cudaGraphDestroy(graph);
        (void)cudaGetLastError();
        check(e, "cudaStreamEndCapture (a call of the forward could not be captured)");
    }
    if (scratch_generation_ != generation || triton_scratch(d_) != shared_scratch) {
        (void)cudaGraphDestroy(graph);
        fail(HSPMN_ERR_INTERNAL, "graph capture: the forward reallocated scratch while it was captured");
    }
    cudaGraphExec_t exec = nullptr;
    e = cudaGraphInstantiate(&exec, graph, 0);
    (void)cudaGraphDestroy(graph);  // the executable graph is independent of it
    check(e, "cudaGraphInstantiate");
    try {
        return new CudaGraph(d_, *this, exec, generation, shared_scratch);
    } catch (...) {
        (void)cudaGraphExecDestroy(exec);
        throw;
    }
}

void CudaBlock::replay(cudaGraphExec_t exec, uint64_t generation, const void* shared_scratch) {
    if (generation != scratch_generation_ || shared_scratch != triton_scratch(d_))
        fail(HSPMN_ERR_STATE,
             "the block's scratch moved since capture (a larger shape, a training forward or a route call "
             "regrew it); capture again");
    refresh_weights();  // queued ahead of the replay on the same stream
    check(cudaGraphLaunch(exec, stream(d_)), "cudaGraphLaunch");
}

}  // namespace

BlockImpl* create_cuda_block(Device& d, const BlockConfig& cfg, uint64_t seed) { return new CudaBlock(d, cfg, seed); }

void gumbel_noise(Device& d, uint64_t seed, int64_t step, int32_t layer, int64_t B, int64_t S, float* out) {
    gumbel_noise_kernel_launch(d, seed, step, layer, B, S, out);
}

int64_t find_non_finite(Device& d, const void* data, int32_t dtype, int64_t numel) {
    DeviceBuffer& first = non_finite_buffer(d);
    first.ensure(d, sizeof(unsigned long long));
    non_finite_scan(d, data, dtype == HSPMN_DTYPE_BF16, numel, first.as<unsigned long long>());
    unsigned long long host = 0;
    check(cudaMemcpyAsync(&host, first.data(), sizeof host, cudaMemcpyDeviceToHost, stream(d)),
          "cudaMemcpyAsync (find_non_finite)");
    check(cudaStreamSynchronize(stream(d)), "cudaStreamSynchronize (find_non_finite)");
    return host >= static_cast<unsigned long long>(numel) ? -1 : static_cast<int64_t>(host);
}

}  // namespace hspmn::cuda
