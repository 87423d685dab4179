// Parameters by name for api/block.cpp and api/model.cpp (param_access.h).
#include "param_access.h"

#include "../core/alloc.h"
#include "../core/bf16.h"
#include "../core/error.h"
#include "checks.h"

namespace hspmn {

int check_param_found(const char* name, int index, const char* owner, const std::string& known) {
    check_not_null(name, "name");
    if (index < 0) fail(HSPMN_ERR_NOT_FOUND, "unknown parameter '%s'; the %s has: %s", name, owner, known.c_str());
    return index;
}

void check_param_tensor(const hspmn_context* ctx, const hspmn_tensor* t, const char* arg, const ParamShape& p,
                        bool allow_bf16) {
    check_tensor(t, arg, ctx);
    if (t->dtype != HSPMN_DTYPE_F32 && !(allow_bf16 && t->dtype == HSPMN_DTYPE_BF16))
        fail(HSPMN_ERR_DTYPE, "%s: expected dtype %s for parameter '%s', got %s", arg,
             allow_bf16 ? "bf16 or f32" : "f32", p.name, dtype_name(t->dtype));
    if (p.ndim == 1)
        check_shape(t, arg, {p.shape[0]});
    else
        check_shape(t, arg, {p.shape[0], p.shape[1]});
}

void describe_param(const ParamShape& p, int32_t dtype, hspmn_tensor_desc* out) {
    out->dtype = dtype;
    out->memory = HSPMN_MEMORY_HOST;
    out->ndim = p.ndim;
    out->reserved = 0;
    for (int k = 0; k < HSPMN_MAX_DIMS; ++k) out->shape[k] = k < p.ndim ? p.shape[k] : 1;
    out->numel = p.numel;
    out->nbytes = p.numel * dtype_size(dtype);
}

namespace {

// n values from one dtype to the other (bf16 bits <-> f32).
void convert(const void* from_values, int32_t from, int64_t n, void* to_values) {
    if (from == HSPMN_DTYPE_BF16) {
        const uint16_t* b = static_cast<const uint16_t*>(from_values);
        float* f = static_cast<float*>(to_values);
        for (int64_t k = 0; k < n; ++k) f[k] = bf16_to_f32(b[k]);
    } else {
        const float* f = static_cast<const float*>(from_values);
        uint16_t* b = static_cast<uint16_t*>(to_values);
        for (int64_t k = 0; k < n; ++k) b[k] = f32_to_bf16(f[k]);
    }
}

}  // namespace

void param_to_tensor(const hspmn_context* ctx, const void* values, int32_t from, int64_t numel, hspmn_tensor* dst) {
    if (dst->dtype == from) {
        ctx->backend->copy_from_host(dst, values);
        return;
    }
    Buffer<unsigned char> tmp(static_cast<std::size_t>(numel * dtype_size(dst->dtype)));
    convert(values, from, numel, tmp.data());
    ctx->backend->copy_from_host(dst, tmp.data());
}

void param_from_tensor(const hspmn_context* ctx, const hspmn_tensor* src, int32_t to, int64_t numel, void* values) {
    if (src->dtype == to) {
        ctx->backend->copy_to_host(src, values);
        return;
    }
    Buffer<unsigned char> tmp(static_cast<std::size_t>(numel * dtype_size(src->dtype)));
    ctx->backend->copy_to_host(src, tmp.data());
    convert(tmp.data(), src->dtype, numel, values);
}

}  // namespace hspmn
