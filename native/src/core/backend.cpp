#include "backend.h"

#include "error.h"

namespace hspmn {

GraphImpl* BlockImpl::capture_forward(const ForwardCall&) {
    fail(HSPMN_ERR_INVALID_ARGUMENT, "graph capture needs the CUDA backend; this context runs on the CPU, "
         "where hspmn_block_forward has no launch overhead to save");
}

}  // namespace hspmn

