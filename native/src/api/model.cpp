// The language model's entry points (hspmn.h "language model"): every argument is checked here, token
// ids included, before any op runs; the model itself is src/model/.
#include <cmath>
#include <memory>
#include <string>

#include "../core/alloc.h"
#include "../core/error.h"
#include "../core/footprint.h"
#include "../core/objects.h"
#include "../model/model.h"
#include "checks.h"
#include "guard.h"
#include "param_access.h"
#include "hspmn.h"

using namespace hspmn;

namespace {

void check_model(const hspmn_model* m) {
    if (!m) fail(HSPMN_ERR_INVALID_ARGUMENT, "model is NULL");
}

int lookup(const hspmn_model* m, const char* name) {
    const int i = name ? m->impl->find(name) : -1;
    return i >= 0 ? i : check_param_found(name, i, "model", m->impl->known_names());
}

ParamShape shape_of(const hspmn_model* m, int i) {
    const Model& mi = *m->impl;
    return {mi.param_name(i), mi.param_ndim(i), mi.param_shape(i), mi.param_numel(i)};
}

// get_param_values / set_param_values of the model's float32 values (master weights, gradients, moments).
template <class Read>
void get_values(const hspmn_model* model, int i, hspmn_tensor* dst, bool allow_bf16, Read read) {
    get_param_values<float>(const_cast<hspmn_model*>(model)->busy, "model", model->ctx, shape_of(model, i), dst,
                            allow_bf16, read);
}

// The values are checked for NaN/Inf under HSPMN_NAN_REJECT before write sees them.
template <class Write>
void set_values(hspmn_model* model, int i, const hspmn_tensor* src, bool allow_bf16, Write write) {
    set_param_values<float>(model->busy, "model", model->ctx, shape_of(model, i), src, allow_bf16,
                            [&](const float* f) {
                                check_finite(model->ctx, src, "src");
                                write(f);
                            });
}

// Token ids: [B, S] i32 with every value in [0, V), read to the host (they index the embedding, so a
// bad id must never reach a kernel). Returns the host copy.
void token_shape(const hspmn_model* m, const hspmn_tensor* t, const char* arg, int64_t* B, int64_t* S) {
    check_tensor(t, arg, m->ctx);
    check_dtype(t, arg, HSPMN_DTYPE_I32);
    if (t->ndim != 2) fail(HSPMN_ERR_SHAPE, "%s: expected shape [B, S], got %s", arg, shape_string(t).c_str());
    *B = t->shape[0];
    *S = t->shape[1];
}

Buffer<int32_t> read_tokens(const hspmn_model* m, const hspmn_tensor* t, const char* arg, int64_t* B, int64_t* S) {
    token_shape(m, t, arg, B, S);
    Buffer<int32_t> host(static_cast<std::size_t>(t->numel));
    m->ctx->backend->copy_to_host(t, host.data());
    const int64_t V = m->impl->params().vocab_size;
    for (int64_t k = 0; k < t->numel; ++k)
        if (host[k] < 0 || host[k] >= V)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "%s[%lld, %lld] = %d is not a token id in [0, %lld)", arg,
                 static_cast<long long>(k / *S), static_cast<long long>(k % *S), host[k], static_cast<long long>(V));
    return host;
}

// The forward's footprint (footprint.h) against free memory, before ensure_rows and the blocks
// allocate it; checked only when it grows past what an earlier forward of the model already needed.
void admit_rows(hspmn_model* m, int64_t B, int64_t S, bool training, bool recompute) {
    Backend& be = *m->ctx->backend;
    const hspmn_model_params& p = m->impl->params();
    const Footprint need = model_rows_footprint(p, B, S, training, be.kind(), be.worker_threads(), recompute);
    const Footprint more = growth(need, m->admitted);
    if (more.host <= 0.0 && more.device <= 0.0) return;
    const std::string what =
        training ? format("a training forward over [B, S] = [%lld, %lld] (%s of %d layer%s kept for "
                          "backward, and backward's scratch)",
                          static_cast<long long>(B), static_cast<long long>(S),
                          recompute ? "the inputs" : "activations", p.num_layers, p.num_layers == 1 ? "" : "s")
                 : format("a forward over [B, S] = [%lld, %lld] (the model's activation buffers and head)",
                          static_cast<long long>(B), static_cast<long long>(S));
    require_memory(be, more, what.c_str());
    m->admitted = max_of(m->admitted, need);
}

void check_which(int32_t which) {
    if (which != 0 && which != 1) fail(HSPMN_ERR_INVALID_ARGUMENT, "which (%d) must be 0 (m) or 1 (v)", which);
}

}  // namespace

extern "C" {

hspmn_model_params hspmn_model_default_params(void) {
    hspmn_model_params p;
    p.vocab_size = 256;
    p.num_layers = 2;
    p.block = hspmn_block_default_params();
    // A language model predicts the next token: top-k routing would let later tokens decide whether
    // an earlier one is routed, so the default is the causal threshold rule.
    p.block.routing = HSPMN_ROUTING_THRESHOLD;
    return p;
}

hspmn_status hspmn_model_params_validate(const hspmn_model_params* params) {
    return guarded("hspmn_model_params_validate", [&] {
        check_not_null(params, "params");
        validate_model_params(*params);
    });
}

hspmn_status hspmn_model_create(hspmn_context* ctx, const hspmn_model_params* params, uint64_t seed,
                                hspmn_model** out) {
    return guarded("hspmn_model_create", [&] {
        clear_out(out);
        check_not_null(ctx, "ctx", params, "params");
        validate_model_params(*params);
        BusyGuard busy(ctx->busy, "context");
        {
            const std::string what = format("a model of %d layer%s, dim %d, vocabulary %d (%.0f parameters, each "
                                            "with its gradient, float32 master copy and AdamW moments)",
                                            params->num_layers, params->num_layers == 1 ? "" : "s",
                                            params->block.dim, params->vocab_size, model_param_count(*params));
            require_memory(*ctx->backend, model_footprint(*params, ctx->backend->kind()), what.c_str());
        }
        std::unique_ptr<Model> impl(new Model(ctx, *params, seed));
        hspmn_model* m = new hspmn_model();
        m->ctx = ctx;
        m->impl = impl.release();
        ctx->live_models.fetch_add(1);
        *out = m;
    });
}

hspmn_status hspmn_model_destroy(hspmn_model* model) {
    return guarded("hspmn_model_destroy", [&] {
        if (!model) return;
        hspmn_context* ctx = model->ctx;
        BusyGuard busy_ctx(ctx->busy, "context");
        if (model->decoders.load() != 0)
            fail(HSPMN_ERR_STATE, "the model still has %d decoder(s); destroy them first (hspmn_decoder_destroy)",
                 model->decoders.load());
        {
            BusyGuard busy(model->busy, "model");
            delete model->impl;
            model->impl = nullptr;
        }
        if (model->comm) model->comm->models.fetch_sub(1);  // data parallelism: the comm is free again
        delete model;
        ctx->live_models.fetch_sub(1);
    });
}

hspmn_status hspmn_model_get_params(const hspmn_model* model, hspmn_model_params* out) {
    return guarded("hspmn_model_get_params", [&] {
        check_model(model);
        check_not_null(out, "out");
        *out = model->impl->params();
    });
}

hspmn_status hspmn_model_param_count(const hspmn_model* model, int32_t* out) {
    return guarded("hspmn_model_param_count", [&] {
        check_model(model);
        check_not_null(out, "out");
        *out = model->impl->param_count();
    });
}

hspmn_status hspmn_model_param_name(const hspmn_model* model, int32_t index, const char** out) {
    return guarded("hspmn_model_param_name", [&] {
        check_model(model);
        clear_out(out);
        const int n = model->impl->param_count();
        if (index < 0 || index >= n) fail(HSPMN_ERR_INVALID_ARGUMENT, "index (%d) must be in [0, %d)", index, n);
        *out = model->impl->param_name(index);
    });
}

hspmn_status hspmn_model_param_describe(const hspmn_model* model, const char* name, hspmn_tensor_desc* out) {
    return guarded("hspmn_model_param_describe", [&] {
        check_model(model);
        check_not_null(out, "out");
        const int i = lookup(model, name);
        describe_param(shape_of(model, i), HSPMN_DTYPE_F32, out);
    });
}

hspmn_status hspmn_model_get_param(const hspmn_model* model, const char* name, hspmn_tensor* dst) {
    return guarded("hspmn_model_get_param", [&] {
        check_model(model);
        const int i = lookup(model, name);
        get_values(model, i, dst, true, [&](float* f) { model->impl->get_param(i, f); });
    });
}

hspmn_status hspmn_model_set_param(hspmn_model* model, const char* name, const hspmn_tensor* src) {
    return guarded("hspmn_model_set_param", [&] {
        check_model(model);
        const int i = lookup(model, name);
        set_values(model, i, src, true, [&](const float* f) { model->impl->set_param(i, f); });
    });
}

hspmn_status hspmn_model_get_grad(const hspmn_model* model, const char* name, hspmn_tensor* dst) {
    return guarded("hspmn_model_get_grad", [&] {
        check_model(model);
        const int i = lookup(model, name);
        get_values(model, i, dst, true, [&](float* f) { model->impl->get_grad(i, f); });
    });
}

hspmn_status hspmn_model_zero_grad(hspmn_model* model) {
    return guarded("hspmn_model_zero_grad", [&] {
        check_model(model);
        BusyPair busy(model->busy, "model", model->ctx->busy);
        model->impl->zero_grad();
    });
}

hspmn_model_forward_params hspmn_model_forward_default_params(void) {
    hspmn_model_forward_params p{};  // fields not set below start at 0
    p.noise = 1;
    p.aux_target = -1.0f;
    return p;
}

hspmn_status hspmn_model_forward(hspmn_model* model, const hspmn_model_forward_params* params,
                                 const hspmn_tensor* tokens, const hspmn_tensor* targets, hspmn_tensor* loss,
                                 hspmn_tensor* stats) {
    return guarded("hspmn_model_forward", [&] {
        check_model(model);
        check_not_null(params, "params");
        check_forward_flags(params->training, params->noise, params->aux_target, params->dropout);
        check_row_offset(params->row_offset);
        if (params->recompute != 0 && params->recompute != 1)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "params.recompute (%d) must be 0 or 1", params->recompute);
        if (params->recompute && !params->training)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "params.recompute is 1 but params.training is 0: only a training "
                 "forward keeps anything to recompute");
        BusyPair busy(model->busy, "model", model->ctx->busy);
        int64_t B = 0, S = 0, tB = 0, tS = 0;
        token_shape(model, tokens, "tokens", &B, &S);
        if (targets) {
            token_shape(model, targets, "targets", &tB, &tS);
            if (tB != B || tS != S)
                fail(HSPMN_ERR_SHAPE, "targets: expected shape %s like tokens, got %s",
                     shape_string({B, S}).c_str(), shape_string(targets).c_str());
        } else {
            if (params->training)
                fail(HSPMN_ERR_INVALID_ARGUMENT, "targets is NULL but params.training is 1: training needs a loss");
            if (loss) fail(HSPMN_ERR_INVALID_ARGUMENT, "loss is requested but targets is NULL");
        }
        const int64_t L = model->impl->params().num_layers;
        if (loss) check_arg(loss, "loss", model->ctx, HSPMN_DTYPE_F32, {2});
        if (stats) check_arg(stats, "stats", model->ctx, HSPMN_DTYPE_F32, {L, 2});
        admit_rows(model, B, S, params->training != 0, params->recompute != 0);
        Buffer<int32_t> tok = read_tokens(model, tokens, "tokens", &B, &S);
        Buffer<int32_t> tgt;
        if (targets) tgt = read_tokens(model, targets, "targets", &tB, &tS);
        ModelForward c{};
        c.training = params->training;
        c.noise = params->noise;
        c.seed = params->seed;
        c.step = params->step;
        c.aux_target = params->aux_target < 0.0f ? model->impl->params().block.sparsity_k : params->aux_target;
        c.dropout = params->training ? params->dropout : 0.0f;
        c.row_offset = params->row_offset;
        c.recompute = params->recompute;
        c.B = B;
        c.S = S;
        c.tokens = tok.data();
        c.targets = targets ? tgt.data() : nullptr;
        c.loss = loss;
        c.stats = stats;
        model->impl->forward(c);
    });
}

hspmn_model_backward_params hspmn_model_backward_default_params(void) {
    hspmn_model_backward_params p{};  // accumulate 0
    p.loss_scale = 1.0f;
    return p;
}

hspmn_status hspmn_model_backward(hspmn_model* model, const hspmn_model_backward_params* params) {
    return guarded("hspmn_model_backward", [&] {
        check_model(model);
        check_not_null(params, "params");
        check_bool(params->accumulate, "params.accumulate");
        if (!std::isfinite(params->loss_scale))
            fail(HSPMN_ERR_INVALID_ARGUMENT, "params.loss_scale (%g) must be finite",
                 static_cast<double>(params->loss_scale));
        BusyPair busy(model->busy, "model", model->ctx->busy);
        model->impl->backward(params->loss_scale, params->accumulate != 0);
    });
}

hspmn_status hspmn_model_logits(hspmn_model* model, const hspmn_tensor* tokens, hspmn_tensor* logits) {
    return guarded("hspmn_model_logits", [&] {
        check_model(model);
        BusyPair busy(model->busy, "model", model->ctx->busy);
        int64_t B = 0, S = 0;
        token_shape(model, tokens, "tokens", &B, &S);
        check_arg(logits, "logits", model->ctx, HSPMN_DTYPE_F32, {B, model->impl->params().vocab_size});
        admit_rows(model, B, S, false, false);
        Buffer<int32_t> tok = read_tokens(model, tokens, "tokens", &B, &S);
        model->impl->logits(tok.data(), B, S, logits);
    });
}

hspmn_adamw_params hspmn_adamw_default_params(void) {
    hspmn_adamw_params p;
    p.step = 1;
    p.lr = 3e-4f;
    p.beta1 = 0.9f;
    p.beta2 = 0.95f;
    p.eps = 1e-8f;
    p.weight_decay = 0.1f;
    p.max_grad_norm = 1.0f;
    return p;
}

hspmn_status hspmn_model_adamw_step(hspmn_model* model, const hspmn_adamw_params* params, hspmn_adamw_result* out) {
    return guarded("hspmn_model_adamw_step", [&] {
        check_model(model);
        check_not_null(params, "params");
        check_not_null(out, "out");
        const hspmn_adamw_params& a = *params;
        if (a.step < 1) fail(HSPMN_ERR_INVALID_ARGUMENT, "params.step (%lld) must be >= 1 (1-based)", static_cast<long long>(a.step));
        if (!std::isfinite(a.lr) || a.lr < 0.0f)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "params.lr (%g) must be finite and >= 0", static_cast<double>(a.lr));
        if (!(a.beta1 >= 0.0f && a.beta1 < 1.0f))
            fail(HSPMN_ERR_INVALID_ARGUMENT, "params.beta1 (%g) must be in [0, 1)", static_cast<double>(a.beta1));
        if (!(a.beta2 >= 0.0f && a.beta2 < 1.0f))
            fail(HSPMN_ERR_INVALID_ARGUMENT, "params.beta2 (%g) must be in [0, 1)", static_cast<double>(a.beta2));
        if (!(a.eps > 0.0f) || !std::isfinite(a.eps))
            fail(HSPMN_ERR_INVALID_ARGUMENT, "params.eps (%g) must be finite and > 0", static_cast<double>(a.eps));
        if (!std::isfinite(a.weight_decay) || a.weight_decay < 0.0f)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "params.weight_decay (%g) must be finite and >= 0",
                 static_cast<double>(a.weight_decay));
        if (std::isnan(a.max_grad_norm) || std::isinf(a.max_grad_norm))
            fail(HSPMN_ERR_INVALID_ARGUMENT, "params.max_grad_norm (%g) must be finite (<= 0 disables clipping)",
                 static_cast<double>(a.max_grad_norm));
        BusyPair busy(model->busy, "model", model->ctx->busy);
        *out = model->impl->adamw_step(a);
    });
}

hspmn_status hspmn_model_router_bias_step(hspmn_model* model, float target, float rate, float* fractions) {
    return guarded("hspmn_model_router_bias_step", [&] {
        check_model(model);
        if (model->impl->params().block.routing != HSPMN_ROUTING_THRESHOLD)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "router bias control needs threshold routing (topk selects k tokens "
                                             "whatever the bias)");
        if (!(target >= 0.0f && target <= 1.0f))
            fail(HSPMN_ERR_INVALID_ARGUMENT, "target (%g) must be in [0, 1]", static_cast<double>(target));
        if (!(std::isfinite(rate) && rate >= 0.0f))
            fail(HSPMN_ERR_INVALID_ARGUMENT, "rate (%g) must be finite and >= 0", static_cast<double>(rate));
        BusyPair busy(model->busy, "model", model->ctx->busy);
        model->impl->router_bias_step(target, rate, fractions);
    });
}

hspmn_status hspmn_model_get_moment(const hspmn_model* model, const char* name, int32_t which, hspmn_tensor* dst) {
    return guarded("hspmn_model_get_moment", [&] {
        check_model(model);
        check_which(which);
        const int i = lookup(model, name);
        get_values(model, i, dst, false, [&](float* f) { model->impl->get_moment(i, which, f); });
    });
}

hspmn_status hspmn_model_set_moment(hspmn_model* model, const char* name, int32_t which, const hspmn_tensor* src) {
    return guarded("hspmn_model_set_moment", [&] {
        check_model(model);
        check_which(which);
        const int i = lookup(model, name);
        set_values(model, i, src, false, [&](const float* f) {
            if (which == 1)
                for (int64_t k = 0; k < model->impl->param_numel(i); ++k)
                    if (f[k] < 0.0f)
                        fail(HSPMN_ERR_INVALID_ARGUMENT, "src[%lld] = %g: a second moment is never negative",
                             static_cast<long long>(k), static_cast<double>(f[k]));
            model->impl->set_moment(i, which, f);
        });
    });
}

}  // extern "C"
