// Forward, routing, backward and the noise generator: every argument is checked here, before any
// kernel runs, so a failed call leaves outputs untouched.
#include <cmath>

#include "../core/alloc.h"
#include "../core/error.h"
#include "../core/footprint.h"
#include "../core/objects.h"
#include "checks.h"
#include "guard.h"
#include "hspmn.h"

using namespace hspmn;

namespace {

void check_noise(const hspmn_block* block, const ForwardArgs& r, const hspmn_tensor* noise, int64_t B, int64_t S) {
    if (!noise) return;
    if (!r.training)
        fail(HSPMN_ERR_INVALID_ARGUMENT, "noise is given but params.training is 0 (inference uses n = l / t)");
    if (!r.noise)
        fail(HSPMN_ERR_INVALID_ARGUMENT, "noise is given but params.noise is 0 (g = 0); pass NULL or set noise = 1");
    check_arg(noise, "noise", block->ctx, HSPMN_DTYPE_F32, {B, S});
}

// indices: [B, C] i32, counts: [B] i32: positions strictly increasing in [0, S) for the first counts[b].
void check_routing_pin(const hspmn_block* block, const hspmn_tensor* indices, const hspmn_tensor* counts, int64_t B,
                       int64_t S) {
    if (!indices && !counts) return;
    if (!indices) fail(HSPMN_ERR_INVALID_ARGUMENT, "counts is given without indices; pass both or neither");
    if (!counts) fail(HSPMN_ERR_INVALID_ARGUMENT, "indices is given without counts; pass both or neither");
    check_tensor(indices, "indices", block->ctx);
    check_dtype(indices, "indices", HSPMN_DTYPE_I32);
    if (indices->ndim != 2 || indices->shape[0] != B)
        fail(HSPMN_ERR_SHAPE, "indices: expected shape [%lld, C] (B of x), got %s", static_cast<long long>(B),
             shape_string(indices).c_str());
    const int64_t C = indices->shape[1];
    check_arg(counts, "counts", block->ctx, HSPMN_DTYPE_I32, {B});
    Buffer<int32_t> idx(static_cast<std::size_t>(B * C)), cnt(static_cast<std::size_t>(B));
    block->ctx->backend->copy_to_host(indices, idx.data());
    block->ctx->backend->copy_to_host(counts, cnt.data());
    for (int64_t b = 0; b < B; ++b) {
        if (cnt[b] < 0 || cnt[b] > C)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "counts[%lld] (%d) must be in [0, %lld] (C = indices.shape[1])",
                 static_cast<long long>(b), cnt[b], static_cast<long long>(C));
        int64_t prev = -1;
        for (int64_t j = 0; j < cnt[b]; ++j) {
            int64_t v = idx[b * C + j];
            if (v < 0 || v >= S)
                fail(HSPMN_ERR_INVALID_ARGUMENT, "indices[%lld, %lld] (%lld) must be in [0, %lld) (S of x)",
                     static_cast<long long>(b), static_cast<long long>(j), static_cast<long long>(v),
                     static_cast<long long>(S));
            if (v <= prev)
                fail(HSPMN_ERR_INVALID_ARGUMENT,
                     "indices[%lld, %lld] (%lld) must be greater than indices[%lld, %lld] (%lld): positions are "
                     "strictly increasing",
                     static_cast<long long>(b), static_cast<long long>(j), static_cast<long long>(v),
                     static_cast<long long>(b), static_cast<long long>(j - 1), static_cast<long long>(prev));
            prev = v;
        }
    }
}

void run_forward(hspmn_block* block, const hspmn_forward_params* params, const hspmn_tensor* x,
                 const hspmn_tensor* noise, const hspmn_tensor* indices, const hspmn_tensor* counts,
                 hspmn_tensor* out, hspmn_tensor* aux) {
    check_not_null(block, "block");
    ForwardArgs r = resolve_forward_params(block, params);
    int64_t B, S;
    check_x(block, x, "x", &B, &S);
    check_arg(out, "out", block->ctx, HSPMN_DTYPE_BF16, {B, S, block->cfg.D});
    if (aux) check_arg(aux, "aux", block->ctx, HSPMN_DTYPE_F32, {1});
    check_noise(block, r, noise, B, S);
    BusyPair busy(block->busy, "block", block->ctx->busy);
    check_routing_pin(block, indices, counts, B, S);
    check_finite(block->ctx, x, "x");
    check_finite(block->ctx, noise, "noise");
    if (r.training) {
        // What this forward keeps for backward (and backward's scratch), checked before it is allocated
        // and only when it grows past what an earlier training forward already needed.
        Footprint fwd, bwd;
        Backend& be = *block->ctx->backend;
        const Footprint need = block_training_footprint(block->cfg, B, S, be.kind(), be.worker_threads(), &fwd, &bwd) + max_of(fwd, bwd);
        const Footprint more = growth(need, block->admitted);
        if (more.host > 0.0 || more.device > 0.0) {
            const std::string what = format("a training forward of this block over [B, S] = [%lld, %lld] "
                                            "(activations kept for backward, and backward's scratch)",
                                            static_cast<long long>(B), static_cast<long long>(S));
            require_memory(be, more, what.c_str());
            block->admitted = max_of(block->admitted, need);
        }
    }

    const ForwardCall call = forward_call(r, x, noise, indices, counts, out, aux);
    // Whatever the previous forward kept is stale from here on, even if this one fails.
    block->has_cache = false;
    block->impl->drop_cache();
    block->impl->forward(call);
    if (r.training) {
        block->has_cache = true;
        block->cache_B = B;
        block->cache_S = S;
    }
}

}  // namespace

extern "C" {

hspmn_forward_params hspmn_forward_default_params(void) {
    hspmn_forward_params p{};  // fields not set below start at 0
    p.noise = 1;
    p.aux_target = -1.0f;
    return p;
}

hspmn_backward_params hspmn_backward_default_params(void) {
    return hspmn_backward_params{};  // accumulate 0
}

hspmn_status hspmn_block_forward(hspmn_block* block, const hspmn_forward_params* params, const hspmn_tensor* x,
                                 hspmn_tensor* out, hspmn_tensor* aux) {
    return guarded("hspmn_block_forward",
                   [&] { run_forward(block, params, x, nullptr, nullptr, nullptr, out, aux); });
}

hspmn_status hspmn_block_forward_routed(hspmn_block* block, const hspmn_forward_params* params,
                                        const hspmn_tensor* x, const hspmn_tensor* noise,
                                        const hspmn_tensor* indices, const hspmn_tensor* counts, hspmn_tensor* out,
                                        hspmn_tensor* aux) {
    return guarded("hspmn_block_forward_routed", [&] {
        run_forward(block, params, x, noise, indices, counts, out, aux);
    });
}

hspmn_status hspmn_block_backward(hspmn_block* block, const hspmn_backward_params* params,
                                  const hspmn_tensor* d_out, const hspmn_tensor* d_aux, hspmn_tensor* d_x) {
    return guarded("hspmn_block_backward", [&] {
        check_not_null(block, "block");
        check_not_null(params, "params");
        check_bool(params->accumulate, "params.accumulate");
        BusyPair busy(block->busy, "block", block->ctx->busy);
        if (!block->has_cache)
            fail(HSPMN_ERR_STATE,
                 "no training forward to differentiate: the last forward of this block was not a successful "
                 "forward with params.training = 1");
        const int64_t B = block->cache_B, S = block->cache_S, D = block->cfg.D;
        check_tensor(d_out, "d_out", block->ctx);
        check_dtype(d_out, "d_out", HSPMN_DTYPE_BF16);
        if (d_out->ndim != 3 || d_out->shape[0] != B || d_out->shape[1] != S || d_out->shape[2] != D)
            fail(HSPMN_ERR_SHAPE, "d_out: expected shape %s (the x of the last training forward), got %s",
                 shape_string({B, S, D}).c_str(), shape_string(d_out).c_str());
        if (d_aux) check_arg(d_aux, "d_aux", block->ctx, HSPMN_DTYPE_F32, {1});
        if (d_x) {
            check_tensor(d_x, "d_x", block->ctx);
            check_dtype(d_x, "d_x", HSPMN_DTYPE_BF16);
            if (d_x->ndim != 3 || d_x->shape[0] != B || d_x->shape[1] != S || d_x->shape[2] != D)
                fail(HSPMN_ERR_SHAPE, "d_x: expected shape %s (the x of the last training forward), got %s",
                     shape_string({B, S, D}).c_str(), shape_string(d_x).c_str());
        }
        check_finite(block->ctx, d_out, "d_out");
        check_finite(block->ctx, d_aux, "d_aux");
        BackwardCall call;
        call.accumulate = params->accumulate;
        call.d_out = d_out;
        call.d_aux = d_aux;
        call.d_x = d_x;
        block->impl->backward(call);
    });
}

hspmn_status hspmn_block_route(hspmn_block* block, const hspmn_forward_params* params, const hspmn_tensor* x,
                               const hspmn_tensor* noise, hspmn_tensor* logits, hspmn_tensor* probs,
                               hspmn_tensor* indices, hspmn_tensor* counts, hspmn_tensor* aux) {
    return guarded("hspmn_block_route", [&] {
        check_not_null(block, "block");
        ForwardArgs r = resolve_forward_params(block, params);
        int64_t B, S;
        check_x(block, x, "x", &B, &S);
        check_noise(block, r, noise, B, S);
        if (logits) check_arg(logits, "logits", block->ctx, HSPMN_DTYPE_F32, {B, S});
        if (probs) check_arg(probs, "probs", block->ctx, HSPMN_DTYPE_F32, {B, S});
        if (aux) check_arg(aux, "aux", block->ctx, HSPMN_DTYPE_F32, {1});
        if ((indices == nullptr) != (counts == nullptr))
            fail(HSPMN_ERR_INVALID_ARGUMENT, "%s; pass indices and counts both or neither",
                 indices ? "indices is given without counts" : "counts is given without indices");
        if (indices) {
            check_tensor(indices, "indices", block->ctx);
            check_dtype(indices, "indices", HSPMN_DTYPE_I32);
            if (block->cfg.params.routing == HSPMN_ROUTING_TOPK) {
                const int64_t k = topk_count(S, block->cfg.params.sparsity_k);
                if (indices->ndim != 2 || indices->shape[0] != B || indices->shape[1] < k)
                    fail(HSPMN_ERR_SHAPE, "indices: expected shape [%lld, C] with C >= k = %lld (topk routing), got %s",
                         static_cast<long long>(B), static_cast<long long>(k), shape_string(indices).c_str());
            } else {
                check_shape(indices, "indices", {B, S});
            }
            check_arg(counts, "counts", block->ctx, HSPMN_DTYPE_I32, {B});
        }
        BusyPair busy(block->busy, "block", block->ctx->busy);
        check_finite(block->ctx, x, "x");
        check_finite(block->ctx, noise, "noise");
        RouteCall call;
        set_forward_fields(call, r, x, noise);
        call.logits = logits;
        call.probs = probs;
        call.indices = indices;
        call.counts = counts;
        call.aux = aux;
        block->impl->route(call);
    });
}

hspmn_status hspmn_gumbel_noise(hspmn_context* ctx, uint64_t seed, int64_t step, int32_t layer, hspmn_tensor* out) {
    return guarded("hspmn_gumbel_noise", [&] {
        check_not_null(ctx, "ctx");
        check_tensor(out, "out", ctx);
        check_dtype(out, "out", HSPMN_DTYPE_F32);
        if (out->ndim != 2) fail(HSPMN_ERR_SHAPE, "out: expected shape [B, S], got %s", shape_string(out).c_str());
        BusyGuard busy(ctx->busy, "context");
        ctx->backend->gumbel_noise(seed, step, layer, out);
    });
}

}  // extern "C"
