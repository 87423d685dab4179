// What the test programs on the public ABI (test_native, test_model, test_memory, test_sample,
// graph_cuda) share: status checks, contexts, tensors and their contents, parameters of a test size.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "check.h"
#include "hspmn.h"

// The call returns `status` and the thread's message contains `fragment`.
#define EXPECT_STATUS(call, status, fragment) expect_status((call), (status), (fragment), #call, __LINE__)
#define OK(call) expect_status((call), HSPMN_OK, "", #call, __LINE__)

inline void expect_status(hspmn_status got, hspmn_status want, const char* fragment, const char* what, int line) {
    ++g_checks;
    const char* msg = hspmn_last_error();
    if (got != want || (want != HSPMN_OK && std::strstr(msg, fragment) == nullptr)) {
        ++g_failures;
        std::printf("FAIL line %d: %s\n  got %s (%s), want %s with \"%s\"\n", line, what, hspmn_status_name(got),
                    msg, hspmn_status_name(want), fragment);
    }
}

inline hspmn_context* make_ctx(int threads = 2, int nan_policy = HSPMN_NAN_REJECT) {
    hspmn_context_params p = hspmn_context_default_params();
    p.backend = HSPMN_BACKEND_CPU;
    p.num_threads = threads;
    p.nan_policy = nan_policy;
    hspmn_context* ctx = nullptr;
    OK(hspmn_context_create(&p, &ctx));
    return ctx;
}

// A tensor of the given memory kind (host unless said).
inline hspmn_tensor* make(hspmn_context* ctx, int dtype, std::vector<int64_t> shape, int memory = HSPMN_MEMORY_HOST) {
    hspmn_tensor* t = nullptr;
    OK(hspmn_tensor_create(ctx, dtype, memory, static_cast<int32_t>(shape.size()), shape.data(), &t));
    return t;
}

// float -> bf16 bits, round to nearest even (finite inputs), and back.
inline uint16_t bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>(u >> 16);
}
inline float from_bf16(uint16_t h) {
    uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// A bf16 tensor's elements set to scale * sin(0.61803 i + phase).
inline void fill_bf16(hspmn_tensor* t, float scale, float phase) {
    hspmn_tensor_desc d;
    OK(hspmn_tensor_describe(t, &d));
    std::vector<uint16_t> v(static_cast<size_t>(d.numel));
    for (size_t i = 0; i < v.size(); ++i) v[i] = bf16(scale * std::sin(0.61803f * static_cast<float>(i) + phase));
    OK(hspmn_tensor_copy_in(t, v.data(), d.nbytes));
}

// Token ids [B, S] i32 from a fixed pattern in [0, V).
inline void fill_tokens(hspmn_tensor* t, int V, int phase = 0) {
    hspmn_tensor_desc d;
    OK(hspmn_tensor_describe(t, &d));
    std::vector<int32_t> v(static_cast<size_t>(d.numel));
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int32_t>((i * 7 + phase * 13 + i / 5) % V);
    OK(hspmn_tensor_copy_in(t, v.data(), d.nbytes));
}

// The tensor's contents as T (uint8_t: its bytes; uint16_t: bf16 bits; float; int32_t).
template <class T>
std::vector<T> read_values(hspmn_tensor* t) {
    hspmn_tensor_desc d;
    OK(hspmn_tensor_describe(t, &d));
    std::vector<T> v(static_cast<size_t>(d.nbytes) / sizeof(T));
    OK(hspmn_tensor_copy_out(t, v.data(), d.nbytes));
    return v;
}

// A test block's sizes set on p; the rest of p stays as it is.
inline void set_block_size(hspmn_block_params& p, int32_t dim, int32_t heads, int32_t kv_heads, int32_t mlp_ratio) {
    p.dim = dim;
    p.num_heads = heads;
    p.num_kv_heads = kv_heads;
    p.mlp_ratio = mlp_ratio;
}

// Block and model parameters of a test size: the library's defaults but for these (a block routes 0.25).
inline hspmn_block_params block_params(int32_t dim, int32_t heads, int32_t kv_heads, int32_t mlp_ratio) {
    hspmn_block_params p = hspmn_block_default_params();
    set_block_size(p, dim, heads, kv_heads, mlp_ratio);
    p.sparsity_k = 0.25f;
    return p;
}
inline hspmn_model_params model_params(int32_t vocab, int32_t layers, int32_t dim, int32_t heads, int32_t kv_heads,
                                       int32_t mlp_ratio) {
    hspmn_model_params p = hspmn_model_default_params();
    p.vocab_size = vocab;
    p.num_layers = layers;
    set_block_size(p.block, dim, heads, kv_heads, mlp_ratio);
    return p;
}
