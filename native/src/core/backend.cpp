#include "backend.h"

#include "error.h"

namespace hspmn {

GraphImpl* BlockImpl::capture_forward(const ForwardCall&) {
    fail(HSPMN_ERR_INVALID_ARGUMENT, "graph capture needs the CUDA backend; this context runs on the CPU, "
         "where hspmn_block_forward has no launch overhead to save");
}

}  // namespace hspmn

// TRANSITIONAL (removed when both backends implement the language model's ops): lets the tree build
// while the CPU and CUDA implementations land in parallel.
namespace hspmn {
namespace {
[[noreturn]] void lm_op_missing(const char* op) {
    fail(HSPMN_ERR_NOT_BUILT, "%s: the language model's ops are not implemented in this backend yet", op);
}
}  // namespace
int32_t Backend::internal_memory() const { lm_op_missing("internal_memory"); }
void* Backend::raw_alloc(std::size_t) { lm_op_missing("raw_alloc"); }
void Backend::raw_free(void*, std::size_t) noexcept {}
void Backend::copy_to_host_raw(void*, const void*, std::size_t) { lm_op_missing("copy_to_host_raw"); }
void Backend::copy_from_host_raw(void*, const void*, std::size_t) { lm_op_missing("copy_from_host_raw"); }
void Backend::zero_raw(void*, std::size_t) { lm_op_missing("zero_raw"); }
void Backend::embedding_forward(const uint16_t*, const int32_t*, int64_t, int64_t, uint16_t*) {
    lm_op_missing("embedding_forward");
}
void Backend::embedding_backward(const uint16_t*, const int32_t*, int64_t, int64_t, float*) {
    lm_op_missing("embedding_backward");
}
void Backend::final_norm_forward(const uint16_t*, const uint16_t*, float, int64_t, int64_t, uint16_t*, float*) {
    lm_op_missing("final_norm_forward");
}
void Backend::final_norm_backward(const uint16_t*, const uint16_t*, const float*, const float*, int64_t, int64_t,
                                  uint16_t*, float*) {
    lm_op_missing("final_norm_backward");
}
void Backend::cross_entropy_fused(const uint16_t*, const uint16_t*, const int32_t*, int64_t, int64_t, int64_t, float,
                                  float*, float*, float*) {
    lm_op_missing("cross_entropy_fused");
}
void Backend::lm_logits(const uint16_t*, int64_t, int64_t, const uint16_t*, int64_t, int64_t, float*) {
    lm_op_missing("lm_logits");
}
void Backend::loss_finish(const float*, const float*, int64_t, int64_t, float*) { lm_op_missing("loss_finish"); }
double Backend::sum_squares(const GradSpan*, int64_t) { lm_op_missing("sum_squares"); }
void Backend::adamw_update(float*, uint16_t*, const float*, float*, float*, int64_t, const AdamwScalars&) {
    lm_op_missing("adamw_update");
}
void Backend::fill_f32(float*, int64_t, float) { lm_op_missing("fill_f32"); }
}  // namespace hspmn
