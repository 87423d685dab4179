#include "backend.h"

#include "error.h"

namespace hspmn {

GraphImpl* BlockImpl::capture_forward(const ForwardCall&) {
    fail(HSPMN_ERR_INVALID_ARGUMENT, "graph capture needs the CUDA backend; this context runs on the CPU, "
         "where hspmn_block_forward has no launch overhead to save");
}

void BlockImpl::decode_step(const DecodeStepCall&) {
    fail(HSPMN_ERR_INTERNAL, "decode_step called on a block without it (has_decode_step said no)");
}

GraphImpl* Backend::capture(void (*)(void*), void*) {
    fail(HSPMN_ERR_INVALID_ARGUMENT, "decode-step graphs need the CUDA backend; this context runs on the CPU, "
         "where a step has no launch overhead to save");
}

}  // namespace hspmn

