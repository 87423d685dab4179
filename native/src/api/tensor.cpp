// Tensor lifetime and copies.
#include <cstring>
#include <memory>
#include <string>

#include "../core/alloc.h"
#include "../core/error.h"
#include "../core/footprint.h"
#include "../core/objects.h"
#include "checks.h"
#include "guard.h"
#include "hspmn.h"

using namespace hspmn;

namespace {

// Any single tensor above this is a caller bug (a garbage shape), not a request to honour.
constexpr int64_t kMaxTensorBytes = int64_t(1) << 46;
// Tensors from this size on are checked against free memory first (footprint.h); smaller ones are
// not worth reading /proc for on every call.
constexpr int64_t kCheckedTensorBytes = int64_t(64) << 20;

void fill_desc(const hspmn_tensor* t, hspmn_tensor_desc* d) {
    d->dtype = t->dtype;
    d->memory = t->memory;
    d->ndim = t->ndim;
    d->reserved = 0;
    for (int i = 0; i < HSPMN_MAX_DIMS; ++i) d->shape[i] = t->shape[i];
    d->numel = t->numel;
    d->nbytes = t->nbytes;
}

// A copy between tensor t and host memory: both non-NULL (t first), nbytes all of t.
void check_host_copy(const hspmn_tensor* t, const char* t_name, const void* host, const char* host_name,
                     int64_t nbytes) {
    check_not_null(t, t_name, host, host_name);
    if (nbytes != t->nbytes)
        fail(HSPMN_ERR_SHAPE, "nbytes (%lld) must equal the tensor's nbytes (%lld)", static_cast<long long>(nbytes),
             static_cast<long long>(t->nbytes));
}

}  // namespace

extern "C" {

hspmn_status hspmn_tensor_create(hspmn_context* ctx, int32_t dtype, int32_t memory, int32_t ndim,
                                 const int64_t* shape, hspmn_tensor** out) {
    return guarded("hspmn_tensor_create", [&] {
        clear_out(out);
        check_not_null(ctx, "ctx");
        if (dtype_size(dtype) == 0)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "dtype (%d) must be 0 (bf16), 1 (f32) or 2 (i32)", dtype);
        if (memory < HSPMN_MEMORY_HOST || memory > HSPMN_MEMORY_PINNED)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "memory (%d) must be 0 (host), 1 (device) or 2 (pinned)", memory);
        if (ndim < 1 || ndim > HSPMN_MAX_DIMS)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "ndim (%d) must be in [1, %d]", ndim, HSPMN_MAX_DIMS);
        check_not_null(shape, "shape");
        int64_t numel = 1;
        for (int i = 0; i < ndim; ++i) {
            if (shape[i] < 1) fail(HSPMN_ERR_SHAPE, "shape[%d] (%lld) must be >= 1", i, static_cast<long long>(shape[i]));
            if (shape[i] > kMaxTensorBytes || numel > kMaxTensorBytes / shape[i])
                fail(HSPMN_ERR_SHAPE, "shape is too large (more than 2^46 elements)");
            numel *= shape[i];
        }
        int64_t nbytes = numel * dtype_size(dtype);
        if (nbytes > kMaxTensorBytes) fail(HSPMN_ERR_SHAPE, "tensor of %lld bytes is too large", static_cast<long long>(nbytes));

        BusyGuard busy(ctx->busy, "context");
        if (nbytes >= kCheckedTensorBytes) {
            Footprint need;
            (memory == HSPMN_MEMORY_DEVICE ? need.device : need.host) = static_cast<double>(nbytes);
            std::string dims;
            for (int i = 0; i < ndim; ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
            const std::string what = format("a %s tensor of shape [%s]", dtype_name(dtype),
                                            dims.c_str());
            require_memory(*ctx->backend, need, what.c_str());
        }
        std::unique_ptr<hspmn_tensor> t(new hspmn_tensor());
        t->data = ctx->backend->tensor_alloc(memory, static_cast<std::size_t>(nbytes));
        t->ctx = ctx;
        t->dtype = dtype;
        t->memory = memory;
        t->ndim = ndim;
        for (int i = 0; i < HSPMN_MAX_DIMS; ++i) t->shape[i] = i < ndim ? shape[i] : 1;
        t->numel = numel;
        t->nbytes = nbytes;
        ctx->live_tensors.fetch_add(1);
        stats_count_tensor(+1);
        *out = t.release();
    });
}

hspmn_status hspmn_tensor_destroy(hspmn_tensor* t) {
    return guarded("hspmn_tensor_destroy", [&] {
        if (!t) return;
        hspmn_context* ctx = t->ctx;
        BusyGuard busy(ctx->busy, "context");
        if (int refs = t->graph_refs.load())
            fail(HSPMN_ERR_STATE,
                 "the tensor is bound to %d CUDA graph(s) that replay on its address; destroy the graph(s) first "
                 "(hspmn_graph_destroy)",
                 refs);
        if (int refs = t->dlpack_refs.load())
            fail(HSPMN_ERR_STATE,
                 "the tensor is shared through %d DLPack export(s) whose deleter has not run; release them first "
                 "(e.g. drop the framework's tensor)",
                 refs);
        if (t->import_release) {
            // The producer may reuse the memory as soon as its deleter returns: nothing of ours may
            // still be queued on it. A failed wait (a dead context) must not keep the memory forever.
            try {
                ctx->backend->synchronize();
            } catch (...) {
            }
            t->import_release(t->import_owner);
        } else {
            ctx->backend->tensor_free(t->memory, t->data, static_cast<std::size_t>(t->nbytes));
        }
        delete t;
        ctx->live_tensors.fetch_sub(1);
        stats_count_tensor(-1);
    });
}

hspmn_status hspmn_tensor_describe(const hspmn_tensor* t, hspmn_tensor_desc* out) {
    return guarded("hspmn_tensor_describe", [&] {
        check_not_null(t, "t", out, "out");
        fill_desc(t, out);
    });
}

hspmn_status hspmn_tensor_data(hspmn_tensor* t, void** out) {
    return guarded("hspmn_tensor_data", [&] {
        check_not_null(t, "t");
        clear_out(out);
        if (!t->ctx->backend->host_addressable(t->memory))
            fail(HSPMN_ERR_MEMORY_KIND, "t is a device tensor; copy it out with hspmn_tensor_copy_out");
        *out = t->data;
    });
}

hspmn_status hspmn_tensor_copy_in(hspmn_tensor* dst, const void* src, int64_t nbytes) {
    return guarded("hspmn_tensor_copy_in", [&] {
        check_host_copy(dst, "dst", src, "src", nbytes);
        BusyGuard busy(dst->ctx->busy, "context");
        dst->ctx->backend->copy_from_host(dst, src);
    });
}

hspmn_status hspmn_tensor_copy_out(const hspmn_tensor* src, void* dst, int64_t nbytes) {
    return guarded("hspmn_tensor_copy_out", [&] {
        check_host_copy(src, "src", dst, "dst", nbytes);
        BusyGuard busy(src->ctx->busy, "context");
        src->ctx->backend->copy_to_host(src, dst);
    });
}

hspmn_status hspmn_tensor_copy(hspmn_tensor* dst, const hspmn_tensor* src) {
    return guarded("hspmn_tensor_copy", [&] {
        check_not_null(dst, "dst", src, "src");
        if (dst->ctx != src->ctx)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "dst and src belong to different contexts; copy through host memory");
        check_dtype(src, "src", dst->dtype);
        if (src->numel != dst->numel)
            fail(HSPMN_ERR_SHAPE, "src has %lld elements %s, dst has %lld %s", static_cast<long long>(src->numel),
                 shape_string(src).c_str(), static_cast<long long>(dst->numel), shape_string(dst).c_str());
        if (dst == src) return;
        BusyGuard busy(dst->ctx->busy, "context");
        dst->ctx->backend->copy(dst, src);
    });
}

}  // extern "C"
