// NCCL without the CUDA backend: nothing to load, every call says so.
#include <cstring>

#include "../core/error.h"
#include "comm.h"

namespace hspmn {

static const char kWhy[] = "NCCL needs the CUDA backend, and this libhspmn was built without CUDA";

Comm* create_nccl_comm(Backend&, const hspmn_comm_params&) { fail(HSPMN_ERR_NOT_BUILT, "%s", kWhy); }

bool nccl_available(std::string* why) {
    if (why) *why = kWhy;
    return false;
}

void nccl_unique_id(uint8_t*) { fail(HSPMN_ERR_NOT_BUILT, "%s", kWhy); }

}  // namespace hspmn
