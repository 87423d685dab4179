#include "alloc.h"

#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

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

// The first unsigned number after `key` in a small text file ("MemAvailable:", "inactive_file "),
// times `scale`; false when the file or the key is missing. Whole-file keys ("" key) read the start.
bool read_number(const std::string& path, const char* key, uint64_t scale, uint64_t* out) noexcept {
    std::FILE* f = std::fopen(path.c_str(), "r");
    if (!f) return false;
    char line[512];
    bool found = false;
    while (std::fgets(line, sizeof line, f)) {
        const std::size_t k = std::strlen(key);
        if (std::strncmp(line, key, k) != 0) continue;
        char* end = nullptr;
        const unsigned long long v = std::strtoull(line + k, &end, 10);
        if (end != line + k) {
            *out = static_cast<uint64_t>(v) * scale;
            found = true;
        }
        break;
    }
    std::fclose(f);
    return found;
}

// The memory cgroup of this process as a folder under /sys/fs/cgroup: v1's memory controller when
// it is mounted (hybrid systems also list a "0::" line for the unified tree), else v2's.
std::string cgroup_dir(bool* v2) {
    std::FILE* f = std::fopen("/proc/self/cgroup", "r");
    if (!f) return {};
    char line[1024];
    std::string unified, memory;
    while (std::fgets(line, sizeof line, f)) {
        std::string l(line);
        while (!l.empty() && (l.back() == '\n' || l.back() == '\r')) l.pop_back();
        if (l.rfind("0::", 0) == 0) unified = "/sys/fs/cgroup" + l.substr(3);
        const std::size_t c = l.find(":memory:");
        if (c != std::string::npos) memory = "/sys/fs/cgroup/memory" + l.substr(c + 8);
    }
    std::fclose(f);
    *v2 = memory.empty();
    return memory.empty() ? unified : memory;
}

// Room left under the cgroup limits of this process and its ancestors (page cache that the kernel
// reclaims first, inactive_file, counts as free); false when no limit applies or none can be read.
bool cgroup_room(uint64_t* out) noexcept {
    try {
        bool v2 = true;
        std::string dir = cgroup_dir(&v2);
        if (dir.empty()) return false;
        bool any = false;
        uint64_t best = UINT64_MAX;
        // Inside a container the listed path may not exist under the namespace's /sys/fs/cgroup: the
        // root of the mount is then the container's own cgroup.
        for (int guard = 0; guard < 64 && !dir.empty(); ++guard) {
            uint64_t limit = 0, used = 0, inactive = 0;
            const bool has_limit = v2 ? read_number(dir + "/memory.max", "", 1, &limit)
                                      : read_number(dir + "/memory.limit_in_bytes", "", 1, &limit);
            const bool has_used = v2 ? read_number(dir + "/memory.current", "", 1, &used)
                                     : read_number(dir + "/memory.usage_in_bytes", "", 1, &used);
            (void)read_number(dir + "/memory.stat", v2 ? "inactive_file " : "total_inactive_file ", 1, &inactive);
            // v1 reports "no limit" as a huge page-rounded number; v2 as "max" (not a number).
            if (has_limit && has_used && limit < (uint64_t{1} << 60)) {
                const uint64_t in_use = used > inactive ? used - inactive : 0;
                const uint64_t room = limit > in_use ? limit - in_use : 0;
                if (room < best) best = room;
                any = true;
            }
            const std::string root = v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory";
            if (dir == root || dir.size() <= root.size()) break;
            dir = dir.substr(0, dir.rfind('/'));
            if (dir.size() < root.size()) dir = root;
        }
        if (any) *out = best;
        return any;
    } catch (...) {
        return false;
    }
}

}  // namespace

HostMemory host_memory_available() noexcept {
    HostMemory m{physical_memory(), "physical memory"};
    if (m.available == 0) m = {UINT64_MAX, "unknown (no limit found)"};
    uint64_t v = 0;
    if (read_number("/proc/meminfo", "MemAvailable:", 1024, &v)) m = {v, "MemAvailable in /proc/meminfo"};
    if (cgroup_room(&v) && v < m.available) m = {v, "the cgroup's memory limit"};
    rlimit rl{};
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        uint64_t pages = 0;
        const long page = sysconf(_SC_PAGE_SIZE);
        const uint64_t size = read_number("/proc/self/statm", "", page > 0 ? static_cast<uint64_t>(page) : 4096, &pages)
                                  ? pages : 0;
        const uint64_t lim = static_cast<uint64_t>(rl.rlim_cur);
        const uint64_t room = lim > size ? lim - size : 0;
        if (room < m.available) m = {room, "the address-space limit (ulimit -v) less this process's size"};
    }
    return m;
}

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
