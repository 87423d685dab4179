// A fixed set of worker threads per context plus the calling thread, running one parallel_for at a
// time. Chunks are handed out through an atomic counter so uneven rows (causal attention) balance.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "../core/alloc.h"

namespace hspmn::cpu {

class ThreadPool : public Tracked {
public:
    // num_threads counts the caller: 1 runs everything inline.
    explicit ThreadPool(int num_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return num_threads_; }

    // fn(begin, end, worker) over [0, n) in chunks of `grain`; worker in [0, size()) indexes
    // per-thread scratch. Exceptions from fn are rethrown on the caller after all chunks finish.
    template <class Fn>
    void parallel_for(int64_t n, int64_t grain, const Fn& fn) {
        // A non-owning reference instead of std::function: no heap allocation outside the tracked
        // allocator, no copy of the caller's lambda.
        RangeFn ref{&fn, [](const void* f, int64_t b, int64_t e, int w) { (*static_cast<const Fn*>(f))(b, e, w); }};
        run(n, grain, ref);
    }

private:
    struct RangeFn {
        const void* obj;
        void (*call)(const void* obj, int64_t begin, int64_t end, int worker);
        void operator()(int64_t b, int64_t e, int w) const { call(obj, b, e, w); }
    };
    void run(int64_t n, int64_t grain, const RangeFn& fn);
    void worker_loop(int worker);
    void run_chunks(int worker);

    int num_threads_;
    std::vector<std::thread, TrackedAllocator<std::thread>> threads_;
    std::mutex mu_;
    std::condition_variable wake_;
    std::condition_variable done_;
    uint64_t generation_ = 0;
    int active_ = 0;
    bool stop_ = false;

    const RangeFn* fn_ = nullptr;
    int64_t n_ = 0, grain_ = 1, chunks_ = 0;
    std::atomic<int64_t> next_{0};
    std::exception_ptr error_;
    std::mutex error_mu_;
};

}  // namespace hspmn::cpu
