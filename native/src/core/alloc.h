// The one allocator of the library: every byte it holds (handles, tensors, parameters, gradients,
// caches, scratch) passes through here so hspmn_alloc_stats can report leaks and peaks exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>

#include "hspmn.h"

namespace hspmn {

// 64-byte aligned so packed GEMM panels and SIMD loads never straddle a cache line boundary.
void* tracked_alloc(std::size_t bytes);  // throws std::bad_alloc; bytes == 0 gives nullptr
void tracked_free(void* p, std::size_t bytes) noexcept;
// Memory the library holds outside the host heap (CUDA device and pinned allocations): counted in
// live_bytes/peak_bytes like tracked_alloc's, by the backend that allocates it.
void stats_count_bytes(int64_t delta) noexcept;

// Host memory this process can still take without being killed: the least of MemAvailable
// (/proc/meminfo), the cgroup's memory.max less its current use, and the address-space limit
// (ulimit -v) less the process's size; physical memory when none of them can be read. `source`
// names the bound that decided (static string).
struct HostMemory {
    uint64_t available;
    const char* source;
};
HostMemory host_memory_available() noexcept;

void stats_count_tensor(int delta) noexcept;
void stats_count_block(int delta) noexcept;
void stats_count_context(int delta) noexcept;
hspmn_alloc_stats stats_snapshot() noexcept;
void stats_reset_peak() noexcept;

// Base for every heap object of the library: class-level sized new/delete route the object itself
// through the tracked allocator (virtual destructors pass the most-derived size).
struct Tracked {
    static void* operator new(std::size_t bytes) { return tracked_alloc(bytes); }
    static void operator delete(void* p, std::size_t bytes) noexcept { tracked_free(p, bytes); }
};

// std::allocator replacement so containers count too.
template <class T>
struct TrackedAllocator {
    using value_type = T;
    TrackedAllocator() noexcept = default;
    template <class U>
    TrackedAllocator(const TrackedAllocator<U>&) noexcept {}
    T* allocate(std::size_t n) {
        if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
        return static_cast<T*>(tracked_alloc(n * sizeof(T)));
    }
    void deallocate(T* p, std::size_t n) noexcept { tracked_free(p, n * sizeof(T)); }
    template <class U>
    bool operator==(const TrackedAllocator<U>&) const noexcept { return true; }
    template <class U>
    bool operator!=(const TrackedAllocator<U>&) const noexcept { return false; }
};

// A fixed-size, uninitialised array of trivially copyable T: the scratch and cache type of the
// backends (a vector would zero-fill megabytes of scratch that is overwritten anyway).
template <class T>
class Buffer {
public:
    Buffer() = default;
    explicit Buffer(std::size_t n) { resize(n); }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    Buffer(Buffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
    Buffer& operator=(Buffer&& o) noexcept {
        if (this != &o) { release(); p_ = o.p_; n_ = o.n_; o.p_ = nullptr; o.n_ = 0; }
        return *this;
    }
    ~Buffer() { release(); }

    // Keeps nothing of the old contents.
    void resize(std::size_t n) {
        if (n == n_) return;
        release();
        if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
        p_ = static_cast<T*>(tracked_alloc(n * sizeof(T)));
        n_ = n;
    }
    void release() noexcept {
        if (p_) tracked_free(p_, n_ * sizeof(T));
        p_ = nullptr;
        n_ = 0;
    }
    void fill(T v) noexcept { for (std::size_t i = 0; i < n_; ++i) p_[i] = v; }

    T* data() noexcept { return p_; }
    const T* data() const noexcept { return p_; }
    std::size_t size() const noexcept { return n_; }
    T& operator[](std::size_t i) noexcept { return p_[i]; }
    const T& operator[](std::size_t i) const noexcept { return p_[i]; }

private:
    T* p_ = nullptr;
    std::size_t n_ = 0;
};

}  // namespace hspmn
