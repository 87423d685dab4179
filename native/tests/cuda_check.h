// What the device-level test programs (hspmn_cuda, hspmn_cuda_lm, skinny_gemm_cuda, ...) share: random
// inputs, uploads that live until the end of a test, downloads, guarded outputs, and the harness that runs a program's
// body on device 0 ("skipped: no device" and exit 0 without one: CI builds CUDA on machines without a GPU).
#pragma once

#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "../src/core/alloc.h"
#include "../src/core/bf16.h"
#include "../src/core/error.h"
#include "../src/cuda/device.h"
#include "check.h"

inline std::vector<uint16_t> random_bf16(std::mt19937& rng, std::size_t n, float scale = 1.0f) {
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<uint16_t> v(n);
    for (auto& x : v) x = hspmn::f32_to_bf16(dist(rng));
    return v;
}

inline std::vector<float> random_f32(std::mt19937& rng, std::size_t n, float scale = 1.0f) {
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

// A device copy of host kept in `keep` (at least 16 bytes, so an empty input still has an address).
template <class T>
T* upload(hspmn::cuda::Device& d, const std::vector<T>& host, std::vector<hspmn::cuda::DeviceBuffer>& keep) {
    keep.emplace_back(d, std::max<std::size_t>(host.size() * sizeof(T), 16));
    hspmn::cuda::check(cudaMemcpy(keep.back().data(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
                       "upload");
    return keep.back().as<T>();
}

// n elements at p, after the device has finished.
template <class T>
std::vector<T> download(const void* p, std::size_t n) {
    std::vector<T> v(n);
    hspmn::cuda::check(cudaDeviceSynchronize(), "sync");
    hspmn::cuda::check(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return v;
}

// Outputs with a guard band: a kernel must write nothing past its output. kPad elements of kSentinel
// (a NaN pattern no kernel writes) follow each output.
constexpr uint16_t kSentinel = 0x7fc1;
constexpr int64_t kPad = 64;

// A device buffer of n elements of elem_bytes (2: bf16, 4: f32) + kPad more, every 16-bit half kSentinel.
inline hspmn::cuda::DeviceBuffer sentinel_buffer(hspmn::cuda::Device& d, int64_t n, int elem_bytes) {
    const int64_t halves = (n + kPad) * elem_bytes / 2;
    std::vector<uint16_t> init(static_cast<std::size_t>(halves), kSentinel);
    hspmn::cuda::DeviceBuffer b(d, init.size() * 2);
    hspmn::cuda::check(cudaMemcpy(b.data(), init.data(), init.size() * 2, cudaMemcpyHostToDevice), "init");
    return b;
}

// The kPad elements after the first n of a sentinel_buffer are still kSentinel.
inline bool tail_intact(const hspmn::cuda::DeviceBuffer& b, int64_t n, int elem_bytes) {
    const int64_t halves = (n + kPad) * elem_bytes / 2;
    const auto h = download<uint16_t>(b.data(), static_cast<std::size_t>(halves));
    for (int64_t i = n * elem_bytes / 2; i < halves; ++i)
        if (h[i] != kSentinel) return false;
    return true;
}

// body(Device&) on device 0; an Error it throws is a failure. The library's tracked bytes must be back
// where they were once the device is gone. Returns the program's exit status.
template <class Body>
int run_on_device(Body body) {
    using hspmn::Error;
    const hspmn_alloc_stats before = hspmn::stats_snapshot();
    hspmn::cuda::Device* d = nullptr;
    try {
        d = new hspmn::cuda::Device(0);
    } catch (const Error& e) {
        if (e.status == HSPMN_ERR_NO_DEVICE) {
            std::printf("skipped: no device (%s)\n", e.message.c_str());
            return 0;
        }
        std::printf("FAIL: Device(0): %s\n", e.message.c_str());
        return 1;
    }
    try {
        std::printf("device %d: sm_%d, %d SMs\n", d->ordinal, d->arch, d->sm_count);
        body(*d);
    } catch (const Error& e) {
        std::printf("FAIL: %s (status %d)\n", e.message.c_str(), e.status);
        ++g_failures;
    }
    delete d;
    const hspmn_alloc_stats after = hspmn::stats_snapshot();
    EXPECT(after.live_bytes == before.live_bytes, "leak: %lld bytes live after the device was destroyed",
           static_cast<long long>(after.live_bytes - before.live_bytes));
    return report();
}
