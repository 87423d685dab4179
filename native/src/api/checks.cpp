#include "checks.h"

#include <cmath>
#include <cstring>

#include "../core/bf16.h"
#include "../core/error.h"

namespace hspmn {

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

}  // namespace hspmn
