// Block lifetime, configuration and parameter / gradient access by state_dict name.
#include <cstring>
#include <string>

#include "../core/alloc.h"
#include "../core/bf16.h"
#include "../core/error.h"
#include "../core/footprint.h"
#include "../core/objects.h"
#include "checks.h"
#include "guard.h"
#include "hspmn.h"

using namespace hspmn;

namespace {

int lookup_param(const char* name) {
    if (!name) fail(HSPMN_ERR_INVALID_ARGUMENT, "name is NULL");
    int idx = param_index(name);
    if (idx < 0) {
        std::string known;
        for (int i = 0; i < P_COUNT; ++i) {
            if (i) known += ", ";
            known += param_name(i);
        }
        fail(HSPMN_ERR_NOT_FOUND, "unknown parameter '%s'; the block has: %s", name, known.c_str());
    }
    return idx;
}

// dst/src of get/set_param and get_grad: the parameter's shape, bf16 or f32.
void check_param_tensor(const hspmn_block* block, const hspmn_tensor* t, const char* arg, const ParamInfo& info) {
    check_tensor(t, arg, block->ctx);
    if (t->dtype != HSPMN_DTYPE_BF16 && t->dtype != HSPMN_DTYPE_F32)
        fail(HSPMN_ERR_DTYPE, "%s: expected dtype bf16 or f32 for parameter '%s', got %s", arg, info.name,
             dtype_name(t->dtype));
    if (info.ndim == 1)
        check_shape(t, arg, {info.shape[0]});
    else
        check_shape(t, arg, {info.shape[0], info.shape[1]});
}

void fill_param_desc(const ParamInfo& info, hspmn_tensor_desc* d) {
    d->dtype = HSPMN_DTYPE_BF16;
    d->memory = HSPMN_MEMORY_HOST;
    d->ndim = info.ndim;
    d->reserved = 0;
    for (int i = 0; i < HSPMN_MAX_DIMS; ++i) d->shape[i] = i < info.ndim ? info.shape[i] : 1;
    d->numel = info.numel;
    d->nbytes = info.numel * 2;
}

}  // namespace

extern "C" {

hspmn_block_params hspmn_block_default_params(void) {
    hspmn_block_params p;
    p.dim = 2048;
    p.num_heads = 16;
    p.num_kv_heads = 4;
    p.mlp_ratio = 4;
    p.conv_kernel = 3;
    p.routing = HSPMN_ROUTING_TOPK;
    p.rope_base = 10000.0f;
    p.sparsity_k = 0.2f;
    p.router_sparsity_coef = 0.1f;
    p.router_entropy_coef = 0.01f;
    p.norm_eps = 1e-6f;
    p.reserved = 0;
    return p;
}

hspmn_status hspmn_block_params_validate(const hspmn_block_params* params) {
    return guarded("hspmn_block_params_validate", [&] {
        if (!params) fail(HSPMN_ERR_INVALID_ARGUMENT, "params is NULL");
        validate_block_params(*params);
    });
}

hspmn_status hspmn_block_create(hspmn_context* ctx, const hspmn_block_params* params, uint64_t seed,
                                hspmn_block** out) {
    return guarded("hspmn_block_create", [&] {
        if (!out) fail(HSPMN_ERR_INVALID_ARGUMENT, "out is NULL");
        *out = nullptr;
        if (!ctx) fail(HSPMN_ERR_INVALID_ARGUMENT, "ctx is NULL");
        if (!params) fail(HSPMN_ERR_INVALID_ARGUMENT, "params is NULL");
        BlockConfig cfg = make_block_config(*params);
        BusyGuard busy(ctx->busy, "context");
        {
            double n = 0.0;
            for (const ParamInfo& p : param_table(cfg)) n += static_cast<double>(p.numel);
            const std::string what = format("a block of dim %lld, hidden %lld (%.0f parameters, with their "
                                            "compute copies and gradients)",
                                            static_cast<long long>(cfg.D), static_cast<long long>(cfg.F), n);
            require_memory(*ctx->backend, block_params_footprint(cfg, ctx->backend->kind()), what.c_str());
        }
        hspmn_block* block = new hspmn_block();
        try {
            block->ctx = ctx;
            block->cfg = cfg;
            block->impl = ctx->backend->create_block(cfg, seed);
        } catch (...) {
            delete block;
            throw;
        }
        ctx->live_blocks.fetch_add(1);
        stats_count_block(+1);
        *out = block;
    });
}

hspmn_status hspmn_block_destroy(hspmn_block* block) {
    return guarded("hspmn_block_destroy", [&] {
        if (!block) return;
        hspmn_context* ctx = block->ctx;
        BusyGuard busy_ctx(ctx->busy, "context");
        if (int refs = block->graph_refs.load())
            fail(HSPMN_ERR_STATE,
                 "the block has %d CUDA graph(s) captured from it that replay on its weights and scratch; destroy "
                 "the graph(s) first (hspmn_graph_destroy)",
                 refs);
        {
            // The block's flag lives inside the block: release it before the memory goes.
            BusyGuard busy_block(block->busy, "block");
            delete block->impl;
            block->impl = nullptr;
        }
        delete block;
        ctx->live_blocks.fetch_sub(1);
        stats_count_block(-1);
    });
}

hspmn_status hspmn_block_get_params(const hspmn_block* block, hspmn_block_params* out) {
    return guarded("hspmn_block_get_params", [&] {
        if (!block) fail(HSPMN_ERR_INVALID_ARGUMENT, "block is NULL");
        if (!out) fail(HSPMN_ERR_INVALID_ARGUMENT, "out is NULL");
        *out = block->cfg.params;
    });
}

hspmn_status hspmn_block_param_count(const hspmn_block* block, int32_t* out) {
    return guarded("hspmn_block_param_count", [&] {
        if (!block) fail(HSPMN_ERR_INVALID_ARGUMENT, "block is NULL");
        if (!out) fail(HSPMN_ERR_INVALID_ARGUMENT, "out is NULL");
        *out = P_COUNT;
    });
}

hspmn_status hspmn_block_param_name(const hspmn_block* block, int32_t index, const char** out) {
    return guarded("hspmn_block_param_name", [&] {
        if (!block) fail(HSPMN_ERR_INVALID_ARGUMENT, "block is NULL");
        if (!out) fail(HSPMN_ERR_INVALID_ARGUMENT, "out is NULL");
        *out = nullptr;
        if (index < 0 || index >= P_COUNT)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "index (%d) must be in [0, %d)", index, static_cast<int>(P_COUNT));
        *out = param_name(index);
    });
}

hspmn_status hspmn_block_param_describe(const hspmn_block* block, const char* name, hspmn_tensor_desc* out) {
    return guarded("hspmn_block_param_describe", [&] {
        if (!block) fail(HSPMN_ERR_INVALID_ARGUMENT, "block is NULL");
        if (!out) fail(HSPMN_ERR_INVALID_ARGUMENT, "out is NULL");
        int idx = lookup_param(name);
        fill_param_desc(param_table(block->cfg)[idx], out);
    });
}

hspmn_status hspmn_block_get_param(const hspmn_block* block, const char* name, hspmn_tensor* dst) {
    return guarded("hspmn_block_get_param", [&] {
        if (!block) fail(HSPMN_ERR_INVALID_ARGUMENT, "block is NULL");
        int idx = lookup_param(name);
        ParamInfo info = param_table(block->cfg)[idx];
        check_param_tensor(block, dst, "dst", info);
        hspmn_block* b = const_cast<hspmn_block*>(block);
        BusyGuard busy_block(b->busy, "block");
        BusyGuard busy_ctx(b->ctx->busy, "context");
        Buffer<uint16_t> bits(static_cast<std::size_t>(info.numel));
        block->impl->read_param(idx, bits.data());
        if (dst->dtype == HSPMN_DTYPE_BF16) {
            block->ctx->backend->copy_from_host(dst, bits.data());
        } else {
            Buffer<float> f(static_cast<std::size_t>(info.numel));
            for (int64_t i = 0; i < info.numel; ++i) f[i] = bf16_to_f32(bits[i]);
            block->ctx->backend->copy_from_host(dst, f.data());
        }
    });
}

hspmn_status hspmn_block_set_param(hspmn_block* block, const char* name, const hspmn_tensor* src) {
    return guarded("hspmn_block_set_param", [&] {
        if (!block) fail(HSPMN_ERR_INVALID_ARGUMENT, "block is NULL");
        int idx = lookup_param(name);
        ParamInfo info = param_table(block->cfg)[idx];
        check_param_tensor(block, src, "src", info);
        BusyGuard busy_block(block->busy, "block");
        BusyGuard busy_ctx(block->ctx->busy, "context");
        Buffer<uint16_t> bits(static_cast<std::size_t>(info.numel));
        if (src->dtype == HSPMN_DTYPE_BF16) {
            block->ctx->backend->copy_to_host(src, bits.data());
        } else {
            Buffer<float> f(static_cast<std::size_t>(info.numel));
            block->ctx->backend->copy_to_host(src, f.data());
            for (int64_t i = 0; i < info.numel; ++i) bits[i] = f32_to_bf16(f[i]);
        }
        block->impl->write_param(idx, bits.data());
    });
}

hspmn_status hspmn_block_get_grad(const hspmn_block* block, const char* name, hspmn_tensor* dst) {
    return guarded("hspmn_block_get_grad", [&] {
        if (!block) fail(HSPMN_ERR_INVALID_ARGUMENT, "block is NULL");
        int idx = lookup_param(name);
        ParamInfo info = param_table(block->cfg)[idx];
        check_param_tensor(block, dst, "dst", info);
        hspmn_block* b = const_cast<hspmn_block*>(block);
        BusyGuard busy_block(b->busy, "block");
        BusyGuard busy_ctx(b->ctx->busy, "context");
        Buffer<float> g(static_cast<std::size_t>(info.numel));
        block->impl->read_grad(idx, g.data());
        if (dst->dtype == HSPMN_DTYPE_F32) {
            block->ctx->backend->copy_from_host(dst, g.data());
        } else {
            Buffer<uint16_t> bits(static_cast<std::size_t>(info.numel));
            for (int64_t i = 0; i < info.numel; ++i) bits[i] = f32_to_bf16(g[i]);
            block->ctx->backend->copy_from_host(dst, bits.data());
        }
    });
}

hspmn_status hspmn_block_zero_grad(hspmn_block* block) {
    return guarded("hspmn_block_zero_grad", [&] {
        if (!block) fail(HSPMN_ERR_INVALID_ARGUMENT, "block is NULL");
        BusyGuard busy_block(block->busy, "block");
        BusyGuard busy_ctx(block->ctx->busy, "context");
        block->impl->zero_grad();
    });
}

}  // extern "C"
