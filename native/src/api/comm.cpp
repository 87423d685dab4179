// Data-parallel communicators (hspmn.h "data-parallel training"): arguments checked here, the
// collectives in src/comm/, the model's use of them in src/model/data_parallel.cpp.
#include <cmath>
#include <memory>
#include <cstring>
#include <string>

#include "../comm/comm.h"
#include "../core/error.h"
#include "../core/objects.h"
#include "checks.h"
#include "guard.h"
#include "hspmn.h"

using namespace hspmn;

namespace {

void check_kind(int32_t kind) {
    if (kind != HSPMN_COMM_LOCAL && kind != HSPMN_COMM_NCCL)
        fail(HSPMN_ERR_INVALID_ARGUMENT, "kind (%d) must be 0 (LOCAL) or 1 (NCCL)", kind);
}

void check_comm(const hspmn_comm* c) {
    if (!c) fail(HSPMN_ERR_INVALID_ARGUMENT, "comm is NULL");
}

}  // namespace

extern "C" {

hspmn_comm_params hspmn_comm_default_params(void) {
    hspmn_comm_params p;
    std::memset(&p, 0, sizeof p);
    p.kind = HSPMN_COMM_LOCAL;
    p.rank = 0;
    p.world = 1;
    p.timeout_ms = 120000;
    return p;
}

hspmn_status hspmn_comm_available(int32_t kind, int32_t* out) {
    return guarded("hspmn_comm_available", [&] {
        if (!out) fail(HSPMN_ERR_INVALID_ARGUMENT, "out is NULL");
        *out = 0;
        check_kind(kind);
        if (kind == HSPMN_COMM_LOCAL) {
            *out = 1;
            return;
        }
        std::string why;
        *out = nccl_available(&why) ? 1 : 0;
        // The reason stays readable with hspmn_last_error though the call succeeds.
        if (!*out) set_last_error("hspmn_comm_available: " + why);
    });
}

hspmn_status hspmn_comm_unique_id(int32_t kind, uint8_t* out) {
    return guarded("hspmn_comm_unique_id", [&] {
        if (!out) fail(HSPMN_ERR_INVALID_ARGUMENT, "out is NULL");
        check_kind(kind);
        if (kind == HSPMN_COMM_LOCAL)
            local_unique_id(out);
        else
            nccl_unique_id(out);
    });
}

hspmn_status hspmn_comm_create(hspmn_context* ctx, const hspmn_comm_params* params, hspmn_comm** out) {
    return guarded("hspmn_comm_create", [&] {
        if (!out) fail(HSPMN_ERR_INVALID_ARGUMENT, "out is NULL");
        *out = nullptr;
        if (!ctx) fail(HSPMN_ERR_INVALID_ARGUMENT, "ctx is NULL");
        check_not_null(params, "params");
        const hspmn_comm_params& p = *params;
        check_kind(p.kind);
        if (p.world < 1) fail(HSPMN_ERR_INVALID_ARGUMENT, "params.world (%d) must be >= 1", p.world);
        if (p.rank < 0 || p.rank >= p.world)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "params.rank (%d) must be in [0, world = %d)", p.rank, p.world);
        if (p.timeout_ms < 1) fail(HSPMN_ERR_INVALID_ARGUMENT, "params.timeout_ms (%d) must be >= 1", p.timeout_ms);
        if (p.kind == HSPMN_COMM_NCCL && ctx->backend->kind() != HSPMN_BACKEND_CUDA)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "an NCCL communicator needs a CUDA context (this one is CPU); use LOCAL");
        // Not under the context's busy flag: create waits for the other ranks, and a context may
        // be shared by nothing else meanwhile anyway (one thread per context).
        Comm* impl = p.kind == HSPMN_COMM_LOCAL ? create_local_comm(*ctx->backend, p) : create_nccl_comm(*ctx->backend, p);
        hspmn_comm* c = new hspmn_comm();
        c->ctx = ctx;
        c->impl = impl;
        ctx->live_comms.fetch_add(1);
        *out = c;
    });
}

hspmn_status hspmn_comm_destroy(hspmn_comm* comm) {
    return guarded("hspmn_comm_destroy", [&] {
        if (!comm) return;
        if (comm->models.load() != 0)
            fail(HSPMN_ERR_STATE, "the communicator is attached to %d model(s); detach it first "
                                  "(hspmn_model_set_comm with NULL)", comm->models.load());
        {
            BusyGuard busy(comm->busy, "communicator");
            delete comm->impl;
            comm->impl = nullptr;
        }
        comm->ctx->live_comms.fetch_sub(1);
        delete comm;
    });
}

hspmn_status hspmn_comm_abort(hspmn_comm* comm) {
    return guarded("hspmn_comm_abort", [&] {
        check_comm(comm);
        comm->impl->abort();
    });
}

hspmn_status hspmn_comm_rank(const hspmn_comm* comm, int32_t* rank, int32_t* world) {
    return guarded("hspmn_comm_rank", [&] {
        check_comm(comm);
        if (rank) *rank = comm->impl->rank();
        if (world) *world = comm->impl->world();
    });
}

hspmn_status hspmn_comm_all_reduce_f32(hspmn_comm* comm, float* host, int64_t n, int32_t mean) {
    return guarded("hspmn_comm_all_reduce_f32", [&] {
        check_comm(comm);
        if (!host) fail(HSPMN_ERR_INVALID_ARGUMENT, "host is NULL");
        if (n < 1) fail(HSPMN_ERR_INVALID_ARGUMENT, "n (%lld) must be >= 1", static_cast<long long>(n));
        check_bool(mean, "mean");
        BusyGuard busy(comm->busy, "communicator");
        comm->impl->all_reduce_host(host, n, mean != 0);
    });
}

}  // extern "C"

// ---- the model's side (src/model/data_parallel.cpp)

#include "../model/model.h"

extern "C" {

hspmn_data_parallel_params hspmn_data_parallel_default_params(void) {
    hspmn_data_parallel_params p;
    p.bucket_bytes = int64_t(25) << 20;
    p.shard_optimizer = 0;
    p.reserved = 0;
    return p;
}

hspmn_status hspmn_model_set_comm(hspmn_model* model, hspmn_comm* comm, const hspmn_data_parallel_params* params) {
    return guarded("hspmn_model_set_comm", [&] {
        if (!model) fail(HSPMN_ERR_INVALID_ARGUMENT, "model is NULL");
        hspmn_data_parallel_params p = hspmn_data_parallel_default_params();
        if (comm) {
            check_not_null(params, "params");
            p = *params;
            if (p.bucket_bytes < 1)
                fail(HSPMN_ERR_INVALID_ARGUMENT, "params.bucket_bytes (%lld) must be >= 1",
                     static_cast<long long>(p.bucket_bytes));
            check_bool(p.shard_optimizer, "params.shard_optimizer");
            if (p.reserved != 0) fail(HSPMN_ERR_INVALID_ARGUMENT, "params.reserved (%d) must be 0", p.reserved);
            if (comm->ctx != model->ctx)
                fail(HSPMN_ERR_INVALID_ARGUMENT, "comm was created with another context than the model's");
        }
        BusyGuard busy(model->busy, "model");
        BusyGuard busy_ctx(model->ctx->busy, "context");
        if (!comm && !model->comm) return;
        // Detaching happens even when set_comm throws (a dead communicator cannot gather the moments).
        struct Swap {
            hspmn_model* m;
            hspmn_comm* c;
            ~Swap() {
                if (m->comm == c) return;
                if (m->comm) m->comm->models.fetch_sub(1);
                if (c) c->models.fetch_add(1);
                m->comm = c;
            }
        } swap{model, comm};
        try {
            model->impl->set_comm(comm ? comm->impl : nullptr, p);
        } catch (...) {
            // What the model is attached to now: still the old comm when the attach failed early, none
            // when leaving a sharding could not gather the moments (set_comm detaches then).
            swap.c = model->impl->data_parallel() ? model->comm : nullptr;
            throw;
        }
    });
}

hspmn_status hspmn_model_data_parallel_stats(const hspmn_model* model, hspmn_data_parallel_stats* out) {
    return guarded("hspmn_model_data_parallel_stats", [&] {
        if (!model) fail(HSPMN_ERR_INVALID_ARGUMENT, "model is NULL");
        if (!out) fail(HSPMN_ERR_INVALID_ARGUMENT, "out is NULL");
        *out = model->impl->data_parallel_stats();
    });
}

}  // extern "C"
