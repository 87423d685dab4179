// Library-wide entry points: versions, errors, backends compiled in, allocation statistics.
#include "../core/alloc.h"
#include "../core/error.h"
#include "checks.h"
#include "guard.h"
#include "hspmn.h"

#ifndef HSPMN_VERSION
#define HSPMN_VERSION "0.0.0"
#endif

using namespace hspmn;

extern "C" {

int32_t hspmn_abi_version(void) { return HSPMN_ABI_VERSION; }

const char* hspmn_version_string(void) {
#if defined(HSPMN_WITH_CUDA)
    return "libhspmn " HSPMN_VERSION " (cpu, cuda)";
#else
    return "libhspmn " HSPMN_VERSION " (cpu)";
#endif
}

const char* hspmn_last_error(void) { return last_error(); }

const char* hspmn_status_name(int32_t status) {
    switch (status) {
        case HSPMN_OK: return "HSPMN_OK";
        case HSPMN_ERR_INVALID_ARGUMENT: return "HSPMN_ERR_INVALID_ARGUMENT";
        case HSPMN_ERR_SHAPE: return "HSPMN_ERR_SHAPE";
        case HSPMN_ERR_DTYPE: return "HSPMN_ERR_DTYPE";
        case HSPMN_ERR_MEMORY_KIND: return "HSPMN_ERR_MEMORY_KIND";
        case HSPMN_ERR_OUT_OF_MEMORY: return "HSPMN_ERR_OUT_OF_MEMORY";
        case HSPMN_ERR_NOT_BUILT: return "HSPMN_ERR_NOT_BUILT";
        case HSPMN_ERR_NO_DEVICE: return "HSPMN_ERR_NO_DEVICE";
        case HSPMN_ERR_BACKEND: return "HSPMN_ERR_BACKEND";
        case HSPMN_ERR_NOT_FOUND: return "HSPMN_ERR_NOT_FOUND";
        case HSPMN_ERR_STATE: return "HSPMN_ERR_STATE";
        case HSPMN_ERR_NON_FINITE: return "HSPMN_ERR_NON_FINITE";
        case HSPMN_ERR_BUSY: return "HSPMN_ERR_BUSY";
        case HSPMN_ERR_INTERNAL: return "HSPMN_ERR_INTERNAL";
        case HSPMN_ERR_DEVICE_LOST: return "HSPMN_ERR_DEVICE_LOST";
        case HSPMN_ERR_COMM: return "HSPMN_ERR_COMM";
        default: return "HSPMN_UNKNOWN_STATUS";
    }
}

int32_t hspmn_backend_built(int32_t backend) {
    switch (backend) {
        case HSPMN_BACKEND_CPU: return 1;
#if defined(HSPMN_WITH_CUDA)
        case HSPMN_BACKEND_CUDA: return 1;
#endif
        default: return 0;
    }
}

hspmn_status hspmn_alloc_stats_get(hspmn_alloc_stats* out) {
    return guarded("hspmn_alloc_stats_get", [&] {
        check_not_null(out, "out");
        *out = stats_snapshot();
    });
}

hspmn_status hspmn_alloc_stats_reset_peak(void) {
    return guarded("hspmn_alloc_stats_reset_peak", [&] { stats_reset_peak(); });
}

}  // extern "C"
