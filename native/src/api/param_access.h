// Parameters by name, one implementation for the block's and the model's entry points: the name lookup's
// error, the check of a parameter-shaped tensor, the description, and the copy between the values the
// object keeps on the host (bf16 bits or f32) and a bf16 or f32 tensor, converted (round to nearest even
// towards bf16) when the two dtypes differ.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <type_traits>

#include "../core/alloc.h"
#include "../core/objects.h"
#include "guard.h"

namespace hspmn {

// One parameter as the entry points see it.
struct ParamShape {
    const char* name;
    int32_t ndim;  // 1 or 2
    const int64_t* shape;
    int64_t numel;
};

// index: the parameter's index, < 0 when the lookup found none (HSPMN_ERR_NOT_FOUND listing `known`, the
// names `owner` has). A NULL name is HSPMN_ERR_INVALID_ARGUMENT. Returns index.
int check_param_found(const char* name, int index, const char* owner, const std::string& known);

// t: non-NULL, made by ctx, the parameter's shape; dtype f32, or bf16 too when allow_bf16.
void check_param_tensor(const hspmn_context* ctx, const hspmn_tensor* t, const char* arg, const ParamShape& p,
                        bool allow_bf16);

// The parameter as stored: dtype (bf16 or f32), host memory, its shape and size.
void describe_param(const ParamShape& p, int32_t dtype, hspmn_tensor_desc* out);

// values: [numel] host, dtype `from` (HSPMN_DTYPE_BF16 bits or HSPMN_DTYPE_F32)  ->  dst: [shape] bf16 or f32.
void param_to_tensor(const hspmn_context* ctx, const void* values, int32_t from, int64_t numel, hspmn_tensor* dst);
// src: [shape] bf16 or f32  ->  values: [numel] host, dtype `to` (HSPMN_DTYPE_BF16 bits or HSPMN_DTYPE_F32).
void param_from_tensor(const hspmn_context* ctx, const hspmn_tensor* src, int32_t to, int64_t numel, void* values);

// The stored dtype of host values: bf16 bits (uint16_t) or float32.
template <class T>
constexpr int32_t host_dtype() {
    static_assert(std::is_same_v<T, uint16_t> || std::is_same_v<T, float>, "bf16 bits or float32");
    return std::is_same_v<T, uint16_t> ? HSPMN_DTYPE_BF16 : HSPMN_DTYPE_F32;
}

// The body of every get-by-name entry point (block parameter and gradient, model parameter, gradient and
// moment): dst checked, the object's busy flag (`owner` names it) and then the context's held, read(values)
// fills the parameter's values as the object keeps them (T), and they go into dst in its dtype.
template <class T, class Read>
void get_param_values(std::atomic<int>& busy, const char* owner, const hspmn_context* ctx, const ParamShape& p,
                      hspmn_tensor* dst, bool allow_bf16, Read read) {
    check_param_tensor(ctx, dst, "dst", p, allow_bf16);
    BusyPair held(busy, owner, const_cast<hspmn_context*>(ctx)->busy);
    Buffer<T> values(static_cast<std::size_t>(p.numel));
    read(values.data());
    param_to_tensor(ctx, values.data(), host_dtype<T>(), p.numel, dst);
}

// The body of every set-by-name entry point: src checked, the flags held as above, src's values converted
// to T and handed to write(values) (which may refuse them by failing before it changes anything).
template <class T, class Write>
void set_param_values(std::atomic<int>& busy, const char* owner, const hspmn_context* ctx, const ParamShape& p,
                      const hspmn_tensor* src, bool allow_bf16, Write write) {
    check_param_tensor(ctx, src, "src", p, allow_bf16);
    BusyPair held(busy, owner, const_cast<hspmn_context*>(ctx)->busy);
    Buffer<T> values(static_cast<std::size_t>(p.numel));
    param_from_tensor(ctx, src, host_dtype<T>(), p.numel, values.data());
    write(values.data());
}

}  // namespace hspmn
