// What the ABI-level test programs (test_native.cpp, test_model.cpp) share: check macros that count
// and report without stopping, and CPU contexts and host tensors made through the public ABI.
#pragma once

#include <cstdio>
#include <cstring>
#include <vector>

#include "hspmn.h"

inline int g_failures = 0, g_checks = 0;

#define EXPECT(cond)                                                                 \
    do {                                                                             \
        ++g_checks;                                                                  \
        if (!(cond)) {                                                               \
            ++g_failures;                                                            \
            std::fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

// The call returns `status` and the thread's message contains `fragment`.
#define EXPECT_STATUS(call, status, fragment) expect_status((call), (status), (fragment), #call, __LINE__)
#define OK(call) expect_status((call), HSPMN_OK, "", #call, __LINE__)

inline void expect_status(hspmn_status got, hspmn_status want, const char* fragment, const char* what, int line) {
    ++g_checks;
    const char* msg = hspmn_last_error();
    if (got != want || (want != HSPMN_OK && std::strstr(msg, fragment) == nullptr)) {
        ++g_failures;
        std::fprintf(stderr, "line %d: %s\n  got %s (%s), want %s with \"%s\"\n", line, what, hspmn_status_name(got),
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

inline hspmn_tensor* make(hspmn_context* ctx, int dtype, std::vector<int64_t> shape) {
    hspmn_tensor* t = nullptr;
    OK(hspmn_tensor_create(ctx, dtype, HSPMN_MEMORY_HOST, static_cast<int32_t>(shape.size()), shape.data(), &t));
    return t;
}

// Prints the tally; the program's exit status.
inline int report() {
    std::printf("%d checks, %d failures\n", g_checks, g_failures);
    return g_failures == 0 ? 0 : 1;
}
