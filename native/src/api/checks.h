// Argument checks of the ABI layer; each throws Error with a message naming the argument.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "../core/objects.h"

namespace hspmn {

const char* dtype_name(int32_t dtype);
int64_t dtype_size(int32_t dtype);  // 0 for an unknown dtype
std::string shape_string(const hspmn_tensor* t);
std::string shape_string(std::initializer_list<int64_t> shape);

void check_not_null(const void* p, const char* name);
// Several at once, in order: check_not_null(dst, "dst", src, "src").
template <class... More>
void check_not_null(const void* p, const char* name, const void* next, More... more) {
    check_not_null(p, name);
    check_not_null(next, more...);
}
// An entry point's out-pointer: non-NULL, then cleared so every failure after this leaves NULL in it.
template <class T>
void clear_out(T** out) {
    check_not_null(out, "out");
    *out = nullptr;
}
void check_bool(int32_t v, const char* name);
// Non-null, made by ctx, readable by its backend.
void check_tensor(const hspmn_tensor* t, const char* name, const hspmn_context* ctx);
void check_dtype(const hspmn_tensor* t, const char* name, int32_t dtype);
void check_shape(const hspmn_tensor* t, const char* name, std::initializer_list<int64_t> shape);
// check_tensor + check_dtype + check_shape.
void check_arg(const hspmn_tensor* t, const char* name, const hspmn_context* ctx, int32_t dtype,
               std::initializer_list<int64_t> shape);

// hspmn_forward_params checked (booleans, aux_target) with aux_target resolved (< 0: the config's
// sparsity_k). Shared by forward, route and graph capture so all three refuse the same values.
struct ForwardArgs {
    int32_t training, noise;
    uint64_t seed;
    int64_t step;
    int32_t layer;
    float aux_target;
    float dropout;  // 0 unless training
    int64_t row_offset;
};
// params.dropout (or a model's): finite and in [0, 1); `name` is the field for the message.
void check_dropout(float p, const char* name);
// The fields hspmn_forward_params and hspmn_model_forward_params share: training and noise 0 or 1,
// aux_target in [0, 1] or < 0, dropout as check_dropout.
void check_forward_flags(int32_t training, int32_t noise, float aux_target, float dropout);
// params.row_offset (either struct's): >= 0.
void check_row_offset(int64_t row_offset);
ForwardArgs resolve_forward_params(const hspmn_block* block, const hspmn_forward_params* fp);

// What a ForwardCall and a RouteCall (backend.h) share: the resolved params, x and the noise tensor.
template <class Call>
void set_forward_fields(Call& call, const ForwardArgs& r, const hspmn_tensor* x, const hspmn_tensor* noise) {
    call.x = x;
    call.training = r.training;
    call.noise = r.noise;
    call.noise_tensor = noise;
    call.seed = r.seed;
    call.step = r.step;
    call.layer = r.layer;
    call.aux_target = r.aux_target;
    call.row_offset = r.row_offset;
}
// The block forward's call (hspmn_block_forward[_routed] and graph capture), its tensors checked.
ForwardCall forward_call(const ForwardArgs& r, const hspmn_tensor* x, const hspmn_tensor* noise,
                         const hspmn_tensor* indices, const hspmn_tensor* counts, hspmn_tensor* out,
                         hspmn_tensor* aux);

// x: [B, S, D] bf16 of the block's context; returns B and S.
void check_x(const hspmn_block* block, const hspmn_tensor* x, const char* name, int64_t* B, int64_t* S);

// HSPMN_ERR_NON_FINITE naming the first bad element of t, when the context's policy is REJECT.
void check_finite(const hspmn_context* ctx, const hspmn_tensor* t, const char* name);

// One row of sampling parameters (hspmn_sample, hspmn_decoder_step); messages name params[row].
void check_sampling_params(const hspmn_sampling_params& p, int64_t row);

}  // namespace hspmn
