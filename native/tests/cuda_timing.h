// Timing for the device-level benches (swiglu_gemm_cuda, down_residual_cuda --bench).
#pragma once

#include <algorithm>
#include <functional>

#include "../src/cuda/device.h"

// Mean of iters calls after half a second of the same calls: long runs on an H100 settle at its power
// limit within about that (clocks fall from 1980 MHz to ~1100-1600 at N = 262144), and a kernel timed
// from a cool start would be measured at clocks the block never sees.
inline float time_ms(hspmn::cuda::Device& d, int iters, const std::function<void()>& fn) {
    using hspmn::cuda::check;
    cudaEvent_t a, b;
    check(cudaEventCreate(&a), "event");
    check(cudaEventCreate(&b), "event");
    auto span = [&](int n) {
        check(cudaEventRecord(a, d.stream), "record");
        for (int i = 0; i < n; ++i) fn();
        check(cudaEventRecord(b, d.stream), "record");
        check(cudaEventSynchronize(b), "sync");
        float ms = 0;
        check(cudaEventElapsedTime(&ms, a, b), "elapsed");
        return ms;
    };
    const float once = span(1);
    span(static_cast<int>(500.0f / std::max(once, 0.01f)) + 1);
    const float ms = span(iters);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return ms / iters;
}
