#include "checks.h"

#include <cmath>
#include <cstring>

#include "../core/bf16.h"
#include "../core/error.h"

namespace hspmn {

namespace {
constexpr float kMinTemperature = 1.17549435e-38f;  // 2^-126: 1/T stays finite, so no 0 * inf
constexpr float kMaxTemperature = 100.0f;
}  // namespace

const char* dtype_name(int32_t dtype) {
    switch (dtype) {
        case HSPMN_DTYPE_BF16: return "bf16";
        case HSPMN_DTYPE_F32: return "f32";
        case HSPMN_DTYPE_I32: return "i32";
        default: return "unknown";
    }
}

int64_t dtype_size(int32_t dtype) {
    switch (dtype) {
        case HSPMN_DTYPE_BF16: return 2;
        case HSPMN_DTYPE_F32: return 4;
        case HSPMN_DTYPE_I32: return 4;
        default: return 0;
    }
}

std::string shape_string(const hspmn_tensor* t) {
    std::string s = "[";
    for (int i = 0; i < t->ndim; ++i) {
        if (i) s += ", ";
        s += std::to_string(t->shape[i]);
    }
    return s + "]";
}

std::string shape_string(std::initializer_list<int64_t> shape) {
    std::string s = "[";
    bool first = true;
    for (int64_t d : shape) {
        if (!first) s += ", ";
        first = false;
        s += std::to_string(d);
    }
    return s + "]";
}

void check_not_null(const void* p, const char* name) {
    if (!p) fail(HSPMN_ERR_INVALID_ARGUMENT, "%s is NULL", name);
}

void check_bool(int32_t v, const char* name) {
    if (v != 0 && v != 1) fail(HSPMN_ERR_INVALID_ARGUMENT, "%s (%d) must be 0 or 1", name, v);
}

void check_tensor(const hspmn_tensor* t, const char* name, const hspmn_context* ctx) {
    if (!t) fail(HSPMN_ERR_INVALID_ARGUMENT, "%s is NULL", name);
    if (t->ctx != ctx)
        fail(HSPMN_ERR_INVALID_ARGUMENT, "%s belongs to another context than the block or context it is used with",
             name);
}

void check_dtype(const hspmn_tensor* t, const char* name, int32_t dtype) {
    if (t->dtype != dtype)
        fail(HSPMN_ERR_DTYPE, "%s: expected dtype %s, got %s", name, dtype_name(dtype), dtype_name(t->dtype));
}

void check_shape(const hspmn_tensor* t, const char* name, std::initializer_list<int64_t> shape) {
    bool ok = t->ndim == static_cast<int32_t>(shape.size());
    int i = 0;
    for (int64_t d : shape) {
        if (ok && t->shape[i] != d) ok = false;
        ++i;
    }
    if (!ok)
        fail(HSPMN_ERR_SHAPE, "%s: expected shape %s, got %s", name, shape_string(shape).c_str(),
             shape_string(t).c_str());
}

void check_arg(const hspmn_tensor* t, const char* name, const hspmn_context* ctx, int32_t dtype,
               std::initializer_list<int64_t> shape) {
    check_tensor(t, name, ctx);
    check_dtype(t, name, dtype);
    check_shape(t, name, shape);
}

ForwardArgs resolve_forward_params(const hspmn_block* block, const hspmn_forward_params* fp) {
    check_not_null(fp, "params");
    check_forward_flags(fp->training, fp->noise, fp->aux_target, fp->dropout);
    if (fp->reserved != 0)
        fail(HSPMN_ERR_INVALID_ARGUMENT, "params.reserved (%d) must be 0 (start from hspmn_forward_default_params)",
             fp->reserved);
    check_row_offset(fp->row_offset);
    ForwardArgs r;
    r.training = fp->training;
    r.noise = fp->noise;
    r.seed = fp->seed;
    r.step = fp->step;
    r.layer = fp->layer;
    r.aux_target = fp->aux_target < 0.0f ? block->cfg.params.sparsity_k : fp->aux_target;
    r.dropout = fp->training ? fp->dropout : 0.0f;
    r.row_offset = fp->row_offset;
    return r;
}

void check_dropout(float p, const char* name) {
    // !(p >= 0 && p < 1) also catches NaN; p = 1 would drop everything and scale by infinity.
    if (!(p >= 0.0f && p < 1.0f))
        fail(HSPMN_ERR_INVALID_ARGUMENT, "%s (%g) must be in [0, 1): the probability of dropping an element", name,
             static_cast<double>(p));
}

void check_forward_flags(int32_t training, int32_t noise, float aux_target, float dropout) {
    check_bool(training, "params.training");
    check_bool(noise, "params.noise");
    if (std::isnan(aux_target) || aux_target > 1.0f)
        fail(HSPMN_ERR_INVALID_ARGUMENT, "params.aux_target (%g) must be in [0, 1], or < 0 for the config's sparsity_k",
             static_cast<double>(aux_target));
    check_dropout(dropout, "params.dropout");
}

void check_row_offset(int64_t row_offset) {
    if (row_offset < 0)
        fail(HSPMN_ERR_INVALID_ARGUMENT,
             "params.row_offset (%lld) must be >= 0: the index of the first row in the batch the draws are keyed by",
             static_cast<long long>(row_offset));
}

ForwardCall forward_call(const ForwardArgs& r, const hspmn_tensor* x, const hspmn_tensor* noise,
                         const hspmn_tensor* indices, const hspmn_tensor* counts, hspmn_tensor* out,
                         hspmn_tensor* aux) {
    ForwardCall call;
    set_forward_fields(call, r, x, noise);
    call.dropout = r.dropout;
    call.indices = indices;
    call.counts = counts;
    call.out = out;
    call.aux = aux;
    return call;
}

void check_x(const hspmn_block* block, const hspmn_tensor* x, const char* name, int64_t* B, int64_t* S) {
    check_tensor(x, name, block->ctx);
    check_dtype(x, name, HSPMN_DTYPE_BF16);
    if (x->ndim != 3 || x->shape[2] != block->cfg.D)
        fail(HSPMN_ERR_SHAPE, "%s: expected shape [B, S, %lld] (D = dim), got %s", name,
             static_cast<long long>(block->cfg.D), shape_string(x).c_str());
    *B = x->shape[0];
    *S = x->shape[1];
}

void check_finite(const hspmn_context* ctx, const hspmn_tensor* t, const char* name) {
    if (ctx->params.nan_policy != HSPMN_NAN_REJECT || !t) return;
    int64_t bad = ctx->backend->find_non_finite(t);
    if (bad < 0) return;
    // Unravel for the message; the value itself tells NaN from +-Inf.
    int64_t idx[HSPMN_MAX_DIMS] = {0, 0, 0, 0};
    int64_t rest = bad;
    for (int i = t->ndim - 1; i >= 0; --i) {
        idx[i] = rest % t->shape[i];
        rest /= t->shape[i];
    }
    std::string where = "[";
    for (int i = 0; i < t->ndim; ++i) {
        if (i) where += ", ";
        where += std::to_string(idx[i]);
    }
    where += "]";
    float v = 0.0f;
    if (ctx->backend->host_addressable(t->memory)) {
        if (t->dtype == HSPMN_DTYPE_BF16)
            v = bf16_to_f32(static_cast<const uint16_t*>(t->data)[bad]);
        else
            v = static_cast<const float*>(t->data)[bad];
    } else {
        v = NAN;
    }
    const char* what = std::isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf");
    fail(HSPMN_ERR_NON_FINITE, "%s contains %s at %s (flat index %lld); the context's nan_policy is REJECT",
         name, what, where.c_str(), static_cast<long long>(bad));
}

// hspmn.h "sampling": temperature 0 or in [2^-126, 100] (1/T stays finite, so no 0 * inf)
void check_sampling_params(const hspmn_sampling_params& p, int64_t row) {
    const long long r = static_cast<long long>(row);
    if (!(p.temperature == 0.0f || (p.temperature >= kMinTemperature && p.temperature <= kMaxTemperature)))
        fail(HSPMN_ERR_INVALID_ARGUMENT, "params[%lld].temperature (%g) must be 0 (greedy) or in [2^-126, 100]", r,
             static_cast<double>(p.temperature));
    if (p.top_k < 0) fail(HSPMN_ERR_INVALID_ARGUMENT, "params[%lld].top_k (%d) must be >= 0 (0: no limit)", r, p.top_k);
    if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
        fail(HSPMN_ERR_INVALID_ARGUMENT, "params[%lld].top_p (%g) must be in (0, 1]", r, static_cast<double>(p.top_p));
    if (p.reserved != 0) fail(HSPMN_ERR_INVALID_ARGUMENT, "params[%lld].reserved (%d) must be 0", r, p.reserved);
    if (p.temperature != 0.0f && p.draw < 1)
        fail(HSPMN_ERR_INVALID_ARGUMENT, "params[%lld].draw (%lld) must be >= 1 (the stream's draws are 1-based)", r,
             static_cast<long long>(p.draw));
}


}  // namespace hspmn
