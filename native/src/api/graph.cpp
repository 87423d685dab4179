// CUDA graphs of an inference forward: capture, replay, destroy. A graph holds raw device addresses
// (the block's weights and scratch, x, out, aux), so this file also keeps the reference counts that
// stop hspmn_tensor_destroy / hspmn_block_destroy / hspmn_context_destroy from freeing them under it.
#include <memory>

#include "../core/error.h"
#include "../core/objects.h"
#include "checks.h"
#include "guard.h"
#include "hspmn.h"

using namespace hspmn;

namespace {

const char* memory_name(int32_t memory) {
    switch (memory) {
        case HSPMN_MEMORY_HOST: return "HOST";
        case HSPMN_MEMORY_DEVICE: return "DEVICE";
        case HSPMN_MEMORY_PINNED: return "PINNED";
        default: return "unknown";
    }
}

// The replay reads and writes the tensor at the address it had during capture, with no staging.
void check_device(const hspmn_tensor* t, const char* name) {
    if (t->memory != HSPMN_MEMORY_DEVICE)
        fail(HSPMN_ERR_MEMORY_KIND,
             "%s is %s memory; a graph replays on device addresses with no staging copy, so x, out and aux must be "
             "DEVICE tensors",
             name, memory_name(t->memory));
}

void add_refs(hspmn_graph* g, int delta) {
    g->block->graph_refs.fetch_add(delta);
    const_cast<hspmn_tensor*>(g->x)->graph_refs.fetch_add(delta);
    g->out->graph_refs.fetch_add(delta);
    if (g->aux) g->aux->graph_refs.fetch_add(delta);
    g->block->ctx->live_graphs.fetch_add(delta);
}

}  // namespace

extern "C" {

hspmn_status hspmn_graph_capture_forward(hspmn_block* block, const hspmn_forward_params* params,
                                         const hspmn_tensor* x, hspmn_tensor* out, hspmn_tensor* aux,
                                         hspmn_graph** out_graph) {
    return guarded("hspmn_graph_capture_forward", [&] {
        check_not_null(out_graph, "out_graph");
        *out_graph = nullptr;
        check_not_null(block, "block");
        ForwardArgs r = resolve_forward_params(block, params);
        if (r.training)
            fail(HSPMN_ERR_INVALID_ARGUMENT,
                 "params.training must be 0: a graph records an inference forward (a training forward keeps "
                 "activations for backward and draws noise per step)");
        int64_t B, S;
        check_x(block, x, "x", &B, &S);
        check_arg(out, "out", block->ctx, HSPMN_DTYPE_BF16, {B, S, block->cfg.D});
        if (aux) check_arg(aux, "aux", block->ctx, HSPMN_DTYPE_F32, {1});
        // Before the memory kinds: a CPU context cannot make DEVICE tensors, so its answer is this one.
        if (block->ctx->backend->kind() != HSPMN_BACKEND_CUDA)
            fail(HSPMN_ERR_INVALID_ARGUMENT,
                 "graph capture needs the CUDA backend; this context runs on the CPU, where hspmn_block_forward has "
                 "no launch overhead to save");
        check_device(x, "x");
        check_device(out, "out");
        if (aux) check_device(aux, "aux");
        BusyPair busy(block->busy, "block", block->ctx->busy);
        check_finite(block->ctx, x, "x");

        const ForwardCall call = forward_call(r, x, nullptr, nullptr, nullptr, out, aux);  // training 0: no dropout
        // The capture runs the forward (warm-up), which overwrites what a training forward kept.
        block->has_cache = false;
        block->impl->drop_cache();
        std::unique_ptr<hspmn_graph> g(new hspmn_graph());
        g->impl = block->impl->capture_forward(call);
        g->block = block;
        g->x = x;
        g->out = out;
        g->aux = aux;
        add_refs(g.get(), +1);
        *out_graph = g.release();
    });
}

hspmn_status hspmn_graph_launch(hspmn_graph* graph) {
    return guarded("hspmn_graph_launch", [&] {
        check_not_null(graph, "graph");
        hspmn_block* block = graph->block;
        BusyPair busy(block->busy, "block", block->ctx->busy);
        // A replay rewrites the forward scratch and refreshes the weights backward would use.
        block->has_cache = false;
        block->impl->drop_cache();
        graph->impl->launch();
    });
}

hspmn_status hspmn_graph_destroy(hspmn_graph* graph) {
    return guarded("hspmn_graph_destroy", [&] {
        if (!graph) return;
        hspmn_block* block = graph->block;
        BusyGuard busy_ctx(block->ctx->busy, "context");
        // Not while another thread replays it.
        BusyGuard busy_block(block->busy, "block");
        delete graph->impl;
        graph->impl = nullptr;
        add_refs(graph, -1);
        delete graph;
    });
}

}  // extern "C"
