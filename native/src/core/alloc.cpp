#include "alloc.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>

#include "error.h"

namespace hspmn {
namespace {

std::atomic<int64_t> g_live_tensors{0};
std::atomic<int64_t> g_live_blocks{0};
std::atomic<int64_t> g_live_contexts{0};
std::atomic<int64_t> g_live_bytes{0};
std::atomic<int64_t> g_peak_bytes{0};

constexpr std::size_t kAlign = 64;

void raise_peak(int64_t live) noexcept {
    int64_t peak = g_peak_bytes.load(std::memory_order_relaxed);
    while (live > peak && !g_peak_bytes.compare_exchange_weak(peak, live, std::memory_order_relaxed)) {
    }
}

// Physical memory of the machine (0 when unknown). With memory overcommit a malloc far beyond it can
// succeed and then the zero fill kills the process: such a request is refused up front instead.
std::size_t physical_memory() noexcept {
    static const std::size_t bytes = [] {
        const long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
        return pages > 0 && size > 0 ? static_cast<std::size_t>(pages) * static_cast<std::size_t>(size) : 0;
    }();
    return bytes;
}

}  // namespace

void* tracked_alloc(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    if (bytes > SIZE_MAX - kAlign) throw std::bad_alloc();
    const std::size_t phys = physical_memory();
    if (phys != 0 && bytes > phys)
        fail(HSPMN_ERR_OUT_OF_MEMORY, "out of memory: a host allocation of %zu bytes exceeds this machine's physical "
             "memory (%zu bytes)", bytes, phys);
    std::size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, rounded);
    if (!p) throw std::bad_alloc();
    int64_t live = g_live_bytes.fetch_add(static_cast<int64_t>(bytes), std::memory_order_relaxed) +
                   static_cast<int64_t>(bytes);
    raise_peak(live);
    return p;
}

void tracked_free(void* p, std::size_t bytes) noexcept {
    if (!p) return;
    std::free(p);
    g_live_bytes.fetch_sub(static_cast<int64_t>(bytes), std::memory_order_relaxed);
}

void stats_count_bytes(int64_t delta) noexcept {
    int64_t live = g_live_bytes.fetch_add(delta, std::memory_order_relaxed) + delta;
    if (delta > 0) raise_peak(live);
}

void stats_count_tensor(int delta) noexcept { g_live_tensors.fetch_add(delta, std::memory_order_relaxed); }
void stats_count_block(int delta) noexcept { g_live_blocks.fetch_add(delta, std::memory_order_relaxed); }
void stats_count_context(int delta) noexcept { g_live_contexts.fetch_add(delta, std::memory_order_relaxed); }

hspmn_alloc_stats stats_snapshot() noexcept {
    hspmn_alloc_stats s;
    s.live_tensors = g_live_tensors.load(std::memory_order_relaxed);
    s.live_blocks = g_live_blocks.load(std::memory_order_relaxed);
    s.live_contexts = g_live_contexts.load(std::memory_order_relaxed);
    s.live_bytes = g_live_bytes.load(std::memory_order_relaxed);
    s.peak_bytes = g_peak_bytes.load(std::memory_order_relaxed);
    return s;
}

void stats_reset_peak() noexcept { g_peak_bytes.store(g_live_bytes.load(std::memory_order_relaxed)); }

}  // namespace hspmn
