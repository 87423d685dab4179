// One HSPMN block on the GPU: the CPU block's wiring (cpu_block.cpp) with the ops of kernels/ and
// cuBLASLt GEMMs. Parameters bf16 on the device (as stored, plus the copy the last forward used, so
// a backward differentiates its forward's weights as the CPU does), gradients f32 on the device.
// Call tensors may be HOST, PINNED or DEVICE: device ones are used in place with no host sync;
// others are staged through device scratch and the call synchronises once at its end.
#include "cuda_block_impl.h"

#include "../core/forward_chunk.h"

namespace hspmn::cuda {

namespace detail {

void CudaBlock::route(const RouteCall& call) {
    refresh_weights();
    const int64_t B = call.x->shape[0], S = call.x->shape[1], N = B * S;
    Activations& A = route_;
    const bf16* x = input<bf16>(d_, call.x, stage_.x, "cudaMemcpyAsync (x)");
    run_router(A, x, B, S, call.training, call.noise, call.seed, call.step, call.layer, call.row_offset,
               call.noise_tensor);
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
                     output<int32_t>(d_, call.indices, stage_.idx), output<int32_t>(d_, call.counts, stage_.cnt),
                     grow<char>(d_, A.sel, route_select_scratch_bytes(B, S)));
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
    has_act_ = false;
    last_chunked_ = false;
    if (!call.training) {
        const ForwardChunks ch = forward_chunks(one_pass_row_bytes(), chunk_row_bytes());
        if (N > ch.whole_rows) {
            last_chunked_ = true;
            forward_chunked(call, ch);
            return;
        }
    }
    Activations& A = *act_;
    A.B = B;
    A.S = S;
    A.N = N;
    A.aux_target = call.aux_target;
    A.dropout = call.training && call.dropout > 0.0f
                    ? DropoutKey{call.dropout, call.seed, call.step, call.layer, call.row_offset}
                    : DropoutKey{};

    const bf16* x = input<bf16>(d_, call.x, stage_.x, "cudaMemcpyAsync (x)");
    if (call.training) {
        copy_async(d_, grow<bf16>(d_, A.x, N * D), x, N * D * 2, "cudaMemcpyAsync (keep x)");
        x = A.x.as<bf16>();
    }

    // 1. Router and selection (counts stay on the device; C is known here).
    run_router(A, x, B, S, call.training, call.noise, call.seed, call.step, call.layer, call.row_offset,
               call.noise_tensor);
    int64_t C;
    if (call.indices) {
        C = call.indices->shape[1];
        // Copied, not viewed: the caller may change its pins before backward.
        copy_async(d_, grow<int32_t>(d_, A.idx, B * C), call.indices->data, B * C * 4, "cudaMemcpyAsync (indices)");
        copy_async(d_, grow<int32_t>(d_, A.cnt, B), call.counts->data, B * 4, "cudaMemcpyAsync (counts)");
    } else {
        C = routing_k(S);
        route_select(d_, A.n.as<float>(), B, S, cfg_.params.routing, C, C, grow<int32_t>(d_, A.idx, B * C),
                     grow<int32_t>(d_, A.cnt, B), grow<char>(d_, A.sel, route_select_scratch_bytes(B, S)));
    }
    A.C = C;
    const int64_t BC = B * C;
    const int32_t* idx = A.idx.as<int32_t>();
    const int32_t* cnt = A.cnt.as<int32_t>();
    if (call.routed_fraction) routed_fraction(d_, cnt, B, S, call.routed_fraction);
    if (call.noise_free_fraction) noise_free_fraction(d_, A.l.as<float>(), N, call.noise_free_fraction);

    // 2. The rows: B whole sequences, keys in place, queries the selected rows ([B, C], padded).
    RowsBuffers buf{};
    buf.rstd = grow<float>(d_, A.rstd, N);
    buf.h = grow<bf16>(d_, A.h, N * D);
    buf.c = grow<bf16>(d_, A.c, N * D);
    // Inference with the fused kernel never writes gate | up: no [N, 2F] buffer.
    buf.gu = !call.training && fused_mlp_inference() ? nullptr : grow<bf16>(d_, A.gu, N * 2 * F);
    buf.act = grow<bf16>(d_, A.act, N * F);
    buf.a = grow<bf16>(d_, A.a, N * D);
    buf.k = grow<bf16>(d_, A.k, N * KV);
    buf.v = grow<bf16>(d_, A.v, N * KV);
    if (call.training) {
        // Dead once the forward ends: the training arena's, not this block's (runtime.h).
        // Sized for this forward's backward as well: a step that does not fit fails here, before the
        // backward, and the backward never regrows the arena (a regrowth frees it first, so a failed
        // one would leave less allocated than before the call).
        {
            Carve sizing(nullptr);
            BackwardScratch T{};
            T.carve(sizing, N, BC, D, F, KV);
            training_arena(d_, sizing.bytes());
        }
        carve_arena(d_, [&](Carve& cv) {
            buf.res = cv.take<float>(N * D);
            buf.row_slot = cv.take<int32_t>(N);
            buf.kf = cv.take<float>(N * KV);
            buf.qf = cv.take<float>(BC * D);
        }, training_arena);
    } else {
        buf.res = grow<float>(d_, A.res, N * D);
        buf.row_slot = grow<int32_t>(d_, A.row_slot, N);
        buf.kf = grow<float>(d_, A.kf, N * KV);
        if (BC > 0) buf.qf = grow<float>(d_, A.qf, BC * D);
    }
    if (BC > 0) {
        buf.a_sel = grow<bf16>(d_, A.a_sel, BC * D);
        buf.q = grow<bf16>(d_, A.q, BC * D);
        buf.attn = grow<bf16>(d_, A.attn, BC * D);
        buf.lse = grow<float>(d_, A.lse, B * H * C);
        buf.o = grow<float>(d_, A.o, BC * D);
    }
    ensure_rope(S);
    const DecodeRun run{0, B, 0};
    RowsPass p = sequences_pass(B, S, C, x, output<bf16>(d_, call.out, stage_.out), idx, cnt, &run);
    if (A.dropout.p > 0.0f) p.dropout = &A.dropout;
    p.keep_h = call.training != 0;
    run_rows(p, buf);

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

void CudaBlock::share_activations(bool shared) {
    if (shared == (act_ != &own_act_)) return;
    has_act_ = false;
    ++scratch_generation_;  // a graph recorded on the other storage is stale
    if (!shared) {
        unshare();
        return;
    }
    if (!d_.shared_activations) d_.shared_activations = new SharedActivations();
    auto* s = static_cast<SharedActivations*>(d_.shared_activations);
    ++s->users;
    act_ = &s->act;
    // Sharing is for memory: the block's own buffers go (a cudaFree, once per switch of mode).
    own_act_ = Activations();
}

void CudaBlock::unshare() noexcept {
    if (act_ == &own_act_) return;
    act_ = &own_act_;
    auto* s = static_cast<SharedActivations*>(d_.shared_activations);
    if (--s->users == 0) s->act = Activations();
}

void CudaBlock::backward(const BackwardCall& call) {
    if (!has_act_) fail(HSPMN_ERR_STATE, "CUDA backward without a training forward");
    Activations& A = *act_;
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
    BackwardScratch T{};
    carve_arena(d_, [&](Carve& cv) { T.carve(cv, N, BC, D, F, KV); }, training_arena);
    DeviceBuffer& scratch = backward_partials(d_);
    // Residual dropout: d m = M_m d_out and d o = M_o d_out[token]. The masks are redrawn from their key
    // (dropout.cu); the kept elements are copied exactly in bf16 and 1 / (1 - p) becomes the alpha of
    // the GEMMs that read them, so dropout adds no rounding of its own to the gradients.
    const bool dropping = A.dropout.p > 0.0f;
    const float drop_scale = dropping ? dropout_scale(A.dropout.p) : 1.0f;

    // With HSPMN_STREAMS=2 the reflexive stream's backward runs on a second CUDA stream beside the
    // contextual one (disjoint pieces of T, their own gradients; the partials scratch is the conv's alone
    // until the join), as in the forward (cuda_block_rows.cu).
    SideStream side(d_, true);
    // Reflexive stream: d m = d_out, or M_m d_out under dropout.
    {
        // d_act's piece holds d_c ([N, D] f32) once swiglu_backward has read d_act (BackwardScratch::carve
        // sizes it N max(F, 2 D) bf16): d_a must live until the pair norm backward below. d_gu [N, 2F]
        // holds d_gate | d_up per row, as A.gu holds gate | up: against the stacked [W_gate; W_up]
        // ([2F, D]) d_c is one GEMM of K = 2F (no accumulation into d_c), dW_gate and dW_up one of M = 2F.
        bf16* d_act = T.d_act;
        bf16* d_gu = T.d_gu;
        float* d_h = T.d_h;
        const bf16* c = A.c.as<bf16>();
        const bf16* dm = d_out;
        if (dropping) {
            // M_m d_out in d_h's [N, D] f32, written by the conv backward only after the two GEMMs below
            // read it: no memory beyond what footprint.cpp counts.
            bf16* kept = reinterpret_cast<bf16*>(d_h);
            dropout_mask_bf16(d_, A.dropout, kDropoutTagReflex, d_out, kept, N, S, D, nullptr, nullptr, 0);
            dm = kept;
        }
        gemm(d_, true, false, D, F, N, drop_scale, dm, D, A.act.as<bf16>(), F, 1.0f, g(P_REFLEX_DOWN), DType::F32, F);
        const bf16* gu = A.gu.as<bf16>();
        // Fused (HSPMN_SWIGLU_BACKWARD_GEMM=1): d_act stays in the kernel, whose B operand is W_down^T,
        // transposed into d_act's piece (free until d_c): room when N max(F, 2D) >= F D.
        const bool room = N * std::max(F, 2 * D) >= F * D;
        if (swiglu_backward_gemm_wanted(d_, D, F, room, {dm, d_act, gu, d_gu, w(P_REFLEX_DOWN)})) {
            transpose_bf16(d_, w(P_REFLEX_DOWN), D, F, d_act);
            swiglu_backward_gemm(d_, N, D, F, dm, d_act, drop_scale, gu, gu + F, d_gu, d_gu + F, 2 * F);
        } else {
            gemm(d_, false, false, N, F, D, drop_scale, dm, D, w(P_REFLEX_DOWN), F, 0.0f, d_act, DType::BF16, F);
            swiglu_backward(d_, gu, gu + F, d_act, N, F, 2 * F, d_gu, d_gu + F);
        }
        gemm(d_, true, false, 2 * F, D, N, 1.0f, d_gu, 2 * F, c, D, 1.0f, g(P_REFLEX_GATE), DType::F32, D);
        float* d_c = reinterpret_cast<float*>(d_act);  // d_act is consumed
        gemm(d_, false, false, N, D, 2 * F, 1.0f, d_gu, 2 * F, w(P_REFLEX_GATE), D, 0.0f, d_c, DType::F32, D);
        causal_conv_backward(d_, A.h.as<bf16>(), w(P_REFLEX_CONV), d_c, B, S, D, cfg_.conv_kernel, d_h,
                             g(P_REFLEX_CONV), scratch);
    }
    side.leave();

    // Contextual stream, back to the attention input a. dk and dv are the two halves of each row of
    // dkv [N, 2 KV], so [dk | dv] against the stacked [W_k; W_v] ([2 KV, D]) is one GEMM each way.
    float* dy = T.dy;
    const int64_t KV2 = 2 * KV;
    bf16* dkv = T.dkv;
    float* d_a = T.d_a;
    {
        bf16* d_asel = nullptr;
        if (BC > 0) {
            bf16* d_o = T.d_o;
            bf16* d_attn = T.d_attn;
            bf16* dq = T.dq;
            d_asel = T.d_asel;
            const bf16* attn = A.attn.as<bf16>();
            gate_scatter_backward(d_, A.o.as<float>(), d_out, idx, cnt, B, S, C, D, d_o, dy);
            if (dropping) dropout_mask_bf16(d_, A.dropout, kDropoutTagAttn, d_o, d_o, BC, S, D, idx, cnt, C);
            gemm(d_, true, false, D, D, BC, drop_scale, d_o, D, attn, D, 1.0f, g(P_ATTN_O), DType::F32, D);
            gemm(d_, false, false, BC, D, D, drop_scale, d_o, D, w(P_ATTN_O), D, 0.0f, d_attn, DType::BF16, D);
            sqdk_attention_backward(d_, AttentionShape{B, C, S, H, Hkv, Dh}, A.q.as<bf16>(), idx, cnt, A.k.as<bf16>(),
                                    A.v.as<bf16>(), attn, A.lse.as<float>(), d_attn, dq, dkv, dkv + KV, KV2);
            rope_backward(d_, dq, dq, BC, H, Dh, D, idx, cnt, C, S, cos_t, sin_t);
            gemm(d_, true, false, D, D, BC, 1.0f, dq, D, A.a_sel.as<bf16>(), D, 1.0f, g(P_ATTN_Q), DType::F32, D);
            gemm(d_, false, false, BC, D, D, 1.0f, dq, D, w(P_ATTN_Q), D, 0.0f, d_asel, DType::BF16, D);
        } else {
            check(cudaMemsetAsync(dkv, 0, static_cast<std::size_t>(N * KV2) * 2, stream(d_)), "cudaMemsetAsync (dkv)");
        }
        rope_backward(d_, dkv, dkv, N, Hkv, Dh, KV2, nullptr, nullptr, 0, S, cos_t, sin_t);
        const bf16* a = A.a.as<bf16>();
        gemm(d_, true, false, KV2, D, N, 1.0f, dkv, KV2, a, D, 1.0f, g(P_ATTN_K), DType::F32, D);  // dW_k, dW_v
        gemm(d_, false, false, N, D, KV2, 1.0f, dkv, KV2, w(P_ATTN_K), D, 0.0f, d_a, DType::F32, D);
        if (BC > 0) scatter_add_selected(d_, d_asel, idx, cnt, B, S, C, D, d_a);
    }
    // d_a waits for d_h: both norms' backward are one pass over x (rms_norm_pair_backward_out below).
    side.join();

    // Router: aux through p for every token, then the gate y = 1 - sg(s) + s, s = sigmoid(n),
    // n = (l + g) / t on the selected tokens; then router.w/b/log_temp. Its dx part dl w goes into d_x below.
    float* dl = T.dl;
    aux_loss_backward(d_, A.l.as<float>(), N, A.aux_target, cfg_.params.router_sparsity_coef,
                      cfg_.params.router_entropy_coef, d_aux, dl);
    // router.w's gradient sum_i dl[i] x[i] is summed by the norms' weight-gradient pass below, which reads
    // x anyway (the same bits; HSPMN_ROUTER_W_FOLD=0: by router_backward's own pass).
    const bool fold_w = router_w_fold_wanted();
    router_backward(d_, dy, A.n.as<float>(), idx, cnt, A.temp.as<float>(), B, S, C, x, D, dl,
                    fold_w ? nullptr : g(P_ROUTER_W), g(P_ROUTER_B), g(P_ROUTER_LOG_TEMP), scratch);

    // d_x = d_out (the residual path) + the attention norm's part (d_a) + the reflex norm's (d_h) + dl w,
    // summed in f32 in that order and rounded once, in one pass; without call.d_x only the norms' weight
    // gradients.
    rms_norm_pair_backward_out(d_, x, w(P_ATTN_NORM), w(P_REFLEX_NORM), A.rstd.as<float>(), d_a, T.d_h, d_out, dl,
                               w(P_ROUTER_W), N, D, call.d_x ? output<bf16>(d_, call.d_x, stage_.d_x) : nullptr,
                               g(P_ATTN_NORM), g(P_REFLEX_NORM), scratch, fold_w ? g(P_ROUTER_W) : nullptr);
    if (call.d_x) output_done(d_, call.d_x, stage_.d_x, "cudaMemcpyAsync (d_x)");
    if (any_host({call.d_out, call.d_aux, call.d_x})) sync("cudaStreamSynchronize (backward)");
}

// ---- CUDA graphs ----
//
// A graph replays the inference forward kernels on the addresses of capture time: weight_ (allocated
// once in the constructor, never regrown; replay() queues the param_ -> weight_ refresh of
// set_param before the graph), the block's scratch (valid while scratch_generation_ is unchanged),
// the device's cuBLASLt workspaces (fixed size; the side stream's too), Triton scratch and rows arena (a chunked forward's
// scratch; both checked at each replay), and the call's DEVICE tensors (the API layer keeps them alive).

class CudaGraph final : public GraphImpl {
public:
    CudaGraph(Device& d, CudaBlock& block, cudaGraphExec_t exec, uint64_t generation, const void* shared_scratch,
              uint64_t arena_generation)
        : d_(d), block_(block), exec_(exec), generation_(generation), shared_scratch_(shared_scratch),
          arena_generation_(arena_generation) {}
    ~CudaGraph() override {
        (void)cudaSetDevice(device_ordinal(d_));
        // An executable graph still in flight is freed when it completes.
        (void)cudaGraphExecDestroy(exec_);
    }
    void launch() override {
        check(cudaSetDevice(device_ordinal(d_)), "cudaSetDevice");
        block_.replay(exec_, generation_, shared_scratch_, arena_generation_);
    }

private:
    Device& d_;
    CudaBlock& block_;
    cudaGraphExec_t exec_;
    uint64_t generation_;
    const void* shared_scratch_;
    uint64_t arena_generation_;
};

GraphImpl* CudaBlock::capture_forward(const ForwardCall& call) {
    // Warm-up: sizes the scratch and the rope table, makes the gemm plans, loads the Triton modules and
    // refreshes the weights, so the captured run below allocates nothing and copies no weights.
    forward(call);
    const uint64_t generation = scratch_generation_;
    const void* shared_scratch = triton_scratch(d_);
    // Only a chunked forward runs in the arena; the graph of another ignores the arena's regrowths.
    const uint64_t arena_generation = last_chunked_ ? rows_arena_generation(d_) : kNoArena;
    struct Body {
        CudaBlock* block;
        const ForwardCall* call;
        static void run(void* p) {
            auto* b = static_cast<Body*>(p);
            b->block->forward(*b->call);
        }
    } body{this, &call};
    cudaGraph_t graph = record_stream(d_, &Body::run, &body, "a call of the forward");
    if (scratch_generation_ != generation || triton_scratch(d_) != shared_scratch ||
        (arena_generation != kNoArena && rows_arena_generation(d_) != arena_generation)) {
        (void)cudaGraphDestroy(graph);
        fail(HSPMN_ERR_INTERNAL, "graph capture: the forward reallocated scratch while it was captured");
    }
    cudaGraphExec_t exec = instantiate_graph(graph);
    try {
        return new CudaGraph(d_, *this, exec, generation, shared_scratch, arena_generation);
    } catch (...) {
        (void)cudaGraphExecDestroy(exec);
        throw;
    }
}

void CudaBlock::replay(cudaGraphExec_t exec, uint64_t generation, const void* shared_scratch,
                       uint64_t arena_generation) {
    if (generation != scratch_generation_ || shared_scratch != triton_scratch(d_) ||
        (arena_generation != kNoArena && arena_generation != rows_arena_generation(d_)))
        fail(HSPMN_ERR_STATE,
             "the block's scratch moved since capture (a larger shape, a training forward, a route call, or "
             "a longer chunked forward or decode of any block of the context regrew it); capture again");
    refresh_weights();  // queued ahead of the replay on the same stream
    check(cudaGraphLaunch(exec, stream(d_)), "cudaGraphLaunch");
}

}  // namespace detail

BlockImpl* create_cuda_block(Device& d, const BlockConfig& cfg, uint64_t seed) { return new detail::CudaBlock(d, cfg, seed); }

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