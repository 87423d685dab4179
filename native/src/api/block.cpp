// Block lifetime, configuration and parameter / gradient access by state_dict name.
#include <cstring>
#include <memory>
#include <string>

#include "../core/alloc.h"
#include "../core/block_config.h"
#include "../core/error.h"
#include "../core/footprint.h"
#include "../core/objects.h"
#include "checks.h"
#include "guard.h"
#include "param_access.h"
#include "hspmn.h"

using namespace hspmn;

namespace {

int lookup_param(const char* name) {
    const int idx = name ? param_index(name) : -1;
    if (idx >= 0) return idx;
    std::string known;
    for (int i = 0; i < P_COUNT; ++i) {
        if (i) known += ", ";
        known += param_name(i);
    }
    return check_param_found(name, idx, "block", known);
}

ParamShape shape_of(const ParamInfo& info) { return {info.name, info.ndim, info.shape, info.numel}; }

// get_param_values of parameter `name`, kept by the block as T (bf16 bits for weights, float for gradients).
template <class T, class Read>
void get_values(const hspmn_block* block, const char* name, hspmn_tensor* dst, Read read) {
    check_not_null(block, "block");
    const int idx = lookup_param(name);
    get_param_values<T>(const_cast<hspmn_block*>(block)->busy, "block", block->ctx,
                        shape_of(param_table(block->cfg)[idx]), dst, true, [&](T* values) { read(idx, values); });
}

}  // namespace

extern "C" {

hspmn_block_params hspmn_block_default_params(void) { return default_block_params(); }

hspmn_status hspmn_block_params_validate(const hspmn_block_params* params) {
    return guarded("hspmn_block_params_validate", [&] {
        check_not_null(params, "params");
        validate_block_params(*params);
    });
}

hspmn_status hspmn_block_create(hspmn_context* ctx, const hspmn_block_params* params, uint64_t seed,
                                hspmn_block** out) {
    return guarded("hspmn_block_create", [&] {
        clear_out(out);
        check_not_null(ctx, "ctx", params, "params");
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
        std::unique_ptr<hspmn_block> block(new hspmn_block());
        block->ctx = ctx;
        block->cfg = cfg;
        block->impl = ctx->backend->create_block(cfg, seed);
        ctx->live_blocks.fetch_add(1);
        stats_count_block(+1);
        *out = block.release();
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
        check_not_null(block, "block", out, "out");
        *out = block->cfg.params;
    });
}

hspmn_status hspmn_block_param_count(const hspmn_block* block, int32_t* out) {
    return guarded("hspmn_block_param_count", [&] {
        check_not_null(block, "block", out, "out");
        *out = P_COUNT;
    });
}

hspmn_status hspmn_block_param_name(const hspmn_block* block, int32_t index, const char** out) {
    return guarded("hspmn_block_param_name", [&] {
        check_not_null(block, "block");
        clear_out(out);
        if (index < 0 || index >= P_COUNT)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "index (%d) must be in [0, %d)", index, static_cast<int>(P_COUNT));
        *out = param_name(index);
    });
}

hspmn_status hspmn_block_param_describe(const hspmn_block* block, const char* name, hspmn_tensor_desc* out) {
    return guarded("hspmn_block_param_describe", [&] {
        check_not_null(block, "block", out, "out");
        int idx = lookup_param(name);
        describe_param(shape_of(param_table(block->cfg)[idx]), HSPMN_DTYPE_BF16, out);
    });
}

hspmn_status hspmn_block_get_param(const hspmn_block* block, const char* name, hspmn_tensor* dst) {
    return guarded("hspmn_block_get_param", [&] {
        get_values<uint16_t>(block, name, dst, [&](int i, uint16_t* bits) { block->impl->read_param(i, bits); });
    });
}

hspmn_status hspmn_block_set_param(hspmn_block* block, const char* name, const hspmn_tensor* src) {
    return guarded("hspmn_block_set_param", [&] {
        check_not_null(block, "block");
        const int idx = lookup_param(name);
        set_param_values<uint16_t>(block->busy, "block", block->ctx, shape_of(param_table(block->cfg)[idx]), src,
                                   true, [&](const uint16_t* bits) { block->impl->write_param(idx, bits); });
    });
}

hspmn_status hspmn_block_get_grad(const hspmn_block* block, const char* name, hspmn_tensor* dst) {
    return guarded("hspmn_block_get_grad", [&] {
        get_values<float>(block, name, dst, [&](int i, float* g) { block->impl->read_grad(i, g); });
    });
}

hspmn_status hspmn_block_zero_grad(hspmn_block* block) {
    return guarded("hspmn_block_zero_grad", [&] {
        check_not_null(block, "block");
        BusyPair busy(block->busy, "block", block->ctx->busy);
        block->impl->zero_grad();
    });
}

}  // extern "C"
