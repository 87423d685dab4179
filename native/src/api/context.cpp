// Context lifetime: picks the backend, owns it, refuses to die while its objects live.
#include "../core/alloc.h"
#include "../core/error.h"
#include "../core/objects.h"
#include "checks.h"
#include "guard.h"
#include "hspmn.h"

using namespace hspmn;

namespace {

constexpr int32_t kMaxThreads = 1024;

Backend* make_backend(const hspmn_context_params& p) {
    switch (p.backend) {
        case HSPMN_BACKEND_CPU:
            return create_cpu_backend(p);
        case HSPMN_BACKEND_CUDA:
#if defined(HSPMN_WITH_CUDA)
            return create_cuda_backend(p);
#else
            fail(HSPMN_ERR_NOT_BUILT,
                 "backend CUDA requested, but this libhspmn was built without CUDA "
                 "(rebuild with -DHSPMN_CUDA=ON on a machine with the CUDA toolkit)");
#endif
        case HSPMN_BACKEND_AUTO:
        default:
#if defined(HSPMN_WITH_CUDA)
            // A caller's stream says CUDA is there and wanted: no silent fall back to the CPU.
            if (p.cuda_stream) return create_cuda_backend(p);
            // AUTO: CUDA when built and a device answers, else CPU.
            try {
                return create_cuda_backend(p);
            } catch (const Error& e) {
                if (e.status != HSPMN_ERR_NO_DEVICE) throw;
            }
#endif
            if (p.cuda_stream)
                fail(HSPMN_ERR_NOT_BUILT,
                     "cuda_stream is set (backend AUTO), but this libhspmn was built without CUDA "
                     "(rebuild with -DHSPMN_CUDA=ON on a machine with the CUDA toolkit)");
            return create_cpu_backend(p);
    }
}

}  // namespace

extern "C" {

hspmn_context_params hspmn_context_default_params(void) {
    hspmn_context_params p;
    p.backend = HSPMN_BACKEND_AUTO;
    p.device = 0;
    p.num_threads = 0;
    p.nan_policy = HSPMN_NAN_REJECT;
    p.cuda_stream = nullptr;
    return p;
}

hspmn_status hspmn_context_create(const hspmn_context_params* params, hspmn_context** out) {
    return guarded("hspmn_context_create", [&] {
        clear_out(out);
        check_not_null(params, "params");
        const hspmn_context_params& p = *params;
        if (p.backend < HSPMN_BACKEND_CPU || p.backend > HSPMN_BACKEND_AUTO)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "backend (%d) must be 0 (CPU), 1 (CUDA) or 2 (AUTO)", p.backend);
        if (p.device < 0) fail(HSPMN_ERR_INVALID_ARGUMENT, "device (%d) must be >= 0", p.device);
        if (p.num_threads < 0 || p.num_threads > kMaxThreads)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "num_threads (%d) must be in [0, %d] (0 = all hardware threads)",
                 p.num_threads, kMaxThreads);
        if (p.nan_policy != HSPMN_NAN_REJECT && p.nan_policy != HSPMN_NAN_PROPAGATE)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "nan_policy (%d) must be 0 (REJECT) or 1 (PROPAGATE)", p.nan_policy);
        if (p.cuda_stream && p.backend == HSPMN_BACKEND_CPU)
            fail(HSPMN_ERR_INVALID_ARGUMENT,
                 "cuda_stream is set but backend is CPU: a CUDA stream needs the CUDA backend (or AUTO)");
        hspmn_context* ctx = new hspmn_context();
        try {
            ctx->params = p;
            ctx->backend = make_backend(p);
        } catch (...) {
            delete ctx;
            throw;
        }
        stats_count_context(+1);
        *out = ctx;
    });
}

hspmn_status hspmn_context_destroy(hspmn_context* ctx) {
    return guarded("hspmn_context_destroy", [&] {
        if (!ctx) return;
        {
            BusyGuard busy(ctx->busy, "context");
            int64_t tensors = ctx->live_tensors.load(), blocks = ctx->live_blocks.load();
            int64_t models = ctx->live_models.load(), graphs = ctx->live_graphs.load();
            if (ctx->live_comms.load() != 0)
                fail(HSPMN_ERR_STATE, "the context still has %lld communicator(s); destroy them first (hspmn_comm_destroy)",
                     static_cast<long long>(ctx->live_comms.load()));
            if (tensors != 0 || blocks != 0 || models != 0 || graphs != 0)
                fail(HSPMN_ERR_STATE,
                     "the context still owns %lld tensor(s), %lld block(s), %lld model(s) and %lld graph(s); "
                     "destroy them first",
                     static_cast<long long>(tensors), static_cast<long long>(blocks), static_cast<long long>(models),
                     static_cast<long long>(graphs));
        }
        delete ctx->backend;
        delete ctx;
        stats_count_context(-1);
    });
}

hspmn_status hspmn_context_backend(const hspmn_context* ctx, int32_t* out_backend) {
    return guarded("hspmn_context_backend", [&] {
        check_not_null(ctx, "ctx", out_backend, "out_backend");
        *out_backend = ctx->backend->kind();
    });
}

hspmn_status hspmn_context_synchronize(hspmn_context* ctx) {
    return guarded("hspmn_context_synchronize", [&] {
        check_not_null(ctx, "ctx");
        BusyGuard busy(ctx->busy, "context");
        ctx->backend->synchronize();
    });
}

}  // extern "C"
