#include "thread_pool.h"

#include <algorithm>

namespace hspmn::cpu {

ThreadPool::ThreadPool(int num_threads) : num_threads_(num_threads < 1 ? 1 : num_threads) {
    threads_.reserve(static_cast<std::size_t>(num_threads_ - 1));
    try {
        for (int w = 1; w < num_threads_; ++w) threads_.emplace_back([this, w] { worker_loop(w); });
    } catch (...) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto& t : threads_) t.join();
        throw;
    }
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
}

void ThreadPool::run_chunks(int worker) {
    for (;;) {
        int64_t c = next_.fetch_add(1, std::memory_order_relaxed);
        if (c >= chunks_) return;
        int64_t begin = c * grain_, end = std::min(n_, begin + grain_);
        try {
            (*fn_)(begin, end, worker);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mu_);
            if (!error_) error_ = std::current_exception();
            next_.store(chunks_, std::memory_order_relaxed);  // stop handing out work
        }
    }
}

void ThreadPool::worker_loop(int worker) {
    uint64_t seen = 0;
    for (;;) {
        {
            std::unique_lock<std::mutex> lock(mu_);
            wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
        }
        run_chunks(worker);
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (--active_ == 0) done_.notify_one();
        }
    }
}

void ThreadPool::run(int64_t n, int64_t grain, const RangeFn& fn) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    int64_t chunks = (n + grain - 1) / grain;
    if (num_threads_ == 1 || chunks == 1) {
        for (int64_t b = 0; b < n; b += grain) fn(b, std::min(n, b + grain), 0);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(mu_);
        fn_ = &fn;
        n_ = n;
        grain_ = grain;
        chunks_ = chunks;
        next_.store(0, std::memory_order_relaxed);
        error_ = nullptr;
        active_ = num_threads_ - 1;
        ++generation_;
    }
    wake_.notify_all();
    run_chunks(0);
    {
        std::unique_lock<std::mutex> lock(mu_);
        done_.wait(lock, [&] { return active_ == 0; });
        fn_ = nullptr;
    }
    if (error_) std::rethrow_exception(error_);
}

}  // namespace hspmn::cpu
