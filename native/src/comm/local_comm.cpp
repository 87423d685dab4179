// HSPMN_COMM_LOCAL: the ranks are threads of this process, one context each, meeting in a host
// rendezvous keyed by the id. Every collective copies the rank's data to the host (waiting for its
// stream), meets the others at a barrier, computes its result from every rank's host copy in rank
// order (so all ranks get bitwise the same sums), meets them again (nobody's copy is freed while
// another still reads it) and copies the result back. Correctness over speed: the reference the NCCL
// path is compared with, and what CPU tests and a host without NCCL use.
//
// On a CPU context a gradient bucket's all-reduce runs on a thread of the communicator, so the rank's
// backward goes on with the earlier layers meanwhile (the CPU backend's ops are done when they
// return, so the bucket is final when it is handed over); join() waits for the queue. On a CUDA
// context each collective runs on the calling thread: its copies wait for the context's stream.
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "../core/error.h"
#include "../core/splitmix.h"
#include "comm.h"

namespace hspmn {
namespace {

using Clock = std::chrono::steady_clock;

struct Group {
    explicit Group(int w) : world(w), joined(static_cast<std::size_t>(w), false), deposit(static_cast<std::size_t>(w)) {}
    std::mutex mu;
    std::condition_variable cv;
    const int world;
    std::vector<bool> joined;
    int arrived = 0;
    uint64_t generation = 0;
    bool aborted = false;
    std::string why;
    std::vector<const void*> deposit;  // each rank's host copy for the collective under way
};

std::mutex registry_mu;
std::map<std::string, std::shared_ptr<Group>>& registry() {
    static auto* r = new std::map<std::string, std::shared_ptr<Group>>();  // never destroyed: threads may outlive statics
    return *r;
}

[[noreturn]] void dead(const Group& g) { fail(HSPMN_ERR_COMM, "communicator is dead: %s", g.why.c_str()); }

class LocalComm final : public Comm {
public:
    LocalComm(Backend& be, const hspmn_comm_params& p, std::shared_ptr<Group> g) : Comm(be, p), g_(std::move(g)) {}
    // A rank that leaves kills the group, so the others fail at their next collective instead of
    // waiting out the timeout (a collective every rank finished is not affected).
    ~LocalComm() override {
        kill_group("destroyed its communicator");
        {
            std::lock_guard<std::mutex> lk(qmu_);
            stop_ = true;
        }
        qcv_.notify_all();
        if (worker_.joinable()) worker_.join();  // a collective under way fails at once: the group is dead
    }

    hspmn_comm_kind kind() const override { return HSPMN_COMM_LOCAL; }

    void all_reduce(const FloatSpan* spans, int count, bool mean) override {
        std::vector<FloatSpan> v(spans, spans + count);
        if (be_.internal_memory() == HSPMN_MEMORY_HOST) {
            enqueue(std::move(v), mean);
            return;
        }
        join();
        const auto t0 = Clock::now();
        reduce_spans(v, mean);
        timing_.busy_ms += ms_between(t0, Clock::now());
    }

    void all_gather(void* buf, std::size_t chunk_bytes) override {
        join();
        const auto t0 = Clock::now();
        std::vector<unsigned char> mine(chunk_bytes), all(chunk_bytes * static_cast<std::size_t>(world_));
        be_.copy_to_host_raw(mine.data(), static_cast<unsigned char*>(buf) + chunk_bytes * static_cast<std::size_t>(rank_),
                             chunk_bytes);
        exchange(mine.data(), "all_gather", [&] {
            for (int r = 0; r < world_; ++r)
                std::memcpy(all.data() + chunk_bytes * static_cast<std::size_t>(r), g_->deposit[static_cast<std::size_t>(r)],
                            chunk_bytes);
        });
        be_.copy_from_host_raw(buf, all.data(), all.size());
        timing_.busy_ms += ms_between(t0, Clock::now());
    }

    // Waits for the queued all-reduces; the time they ran before this call (the end of the rank's
    // backward) counts as overlapped. A failure of one of them is thrown here.
    void join() override {
        const auto end = Clock::now();
        std::unique_lock<std::mutex> lk(qmu_);
        qcv_.wait(lk, [&] { return queue_.empty() && !busy_; });
        for (const auto& t : ran_) {
            timing_.busy_ms += ms_between(t.first, t.second);
            timing_.overlapped_ms += std::max(0.0, ms_between(t.first, std::min(t.second, end)));
        }
        ran_.clear();
        if (error_) {
            std::exception_ptr e = error_;
            error_ = nullptr;
            std::rethrow_exception(e);
        }
    }

    void all_reduce_host(float* host, int64_t n, bool mean) override {
        join();
        std::vector<float> sum(static_cast<std::size_t>(n));
        exchange(host, "all_reduce_f32", [&] { reduce(sum.data(), 0, n, mean); });
        std::memcpy(host, sum.data(), sum.size() * 4);
    }

    void barrier() override {
        join();
        std::unique_lock<std::mutex> lk(g_->mu);
        arrive(lk, "barrier");
    }

    void abort() noexcept override { kill_group("called hspmn_comm_abort"); }

    void begin_timing() override { timing_ = CommTiming{}; }

private:
    static double ms_between(Clock::time_point a, Clock::time_point b) {
        return std::chrono::duration<double, std::milli>(b - a).count();
    }

    void kill_group(const char* what) noexcept {
        std::lock_guard<std::mutex> lk(g_->mu);
        if (!g_->aborted) {
            g_->aborted = true;
            try {
                g_->why = format("rank %d %s", rank_, what);
            } catch (...) {
            }
        }
        g_->cv.notify_all();
    }

    // The spans to the host, the exchange, the sums back.
    void reduce_spans(const std::vector<FloatSpan>& spans, bool mean) {
        int64_t total = 0;
        for (const FloatSpan& sp : spans) total += sp.numel;
        std::vector<float> mine(static_cast<std::size_t>(total)), sum(static_cast<std::size_t>(total));
        int64_t off = 0;
        for (const FloatSpan& sp : spans) {
            be_.copy_to_host_raw(mine.data() + off, sp.data, static_cast<std::size_t>(sp.numel) * 4);
            off += sp.numel;
        }
        exchange(mine.data(), "all_reduce", [&] { reduce(sum.data(), 0, total, mean); });
        off = 0;
        for (const FloatSpan& sp : spans) {
            be_.copy_from_host_raw(sp.data, sum.data() + off, static_cast<std::size_t>(sp.numel) * 4);
            off += sp.numel;
        }
    }

    void enqueue(std::vector<FloatSpan> spans, bool mean) {
        std::lock_guard<std::mutex> lk(qmu_);
        if (!worker_.joinable()) worker_ = std::thread([this] { work(); });
        queue_.push_back({std::move(spans), mean});
        qcv_.notify_all();
    }

    // The worker: queued all-reduces in order. After a failure the rest are dropped and the group is
    // killed, so no rank waits for a collective this one will not make.
    void work() {
        std::unique_lock<std::mutex> lk(qmu_);
        for (;;) {
            qcv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
            if (stop_) {
                queue_.clear();
                qcv_.notify_all();
                return;
            }
            Task t = std::move(queue_.front());
            queue_.pop_front();
            busy_ = true;
            const bool skip = error_ != nullptr;
            lk.unlock();
            std::exception_ptr err;
            const auto a = Clock::now();
            if (!skip) {
                try {
                    reduce_spans(t.spans, t.mean);
                } catch (...) {
                    err = std::current_exception();
                    kill_group("failed an all-reduce");
                }
            }
            const auto b = Clock::now();
            lk.lock();
            if (err && !error_) error_ = err;
            if (!skip) ran_.emplace_back(a, b);
            busy_ = false;
            qcv_.notify_all();
        }
    }

    // out[k] = sum over ranks in rank order of deposit[r][first + k] (mean: / world): the same bits on
    // every rank.
    void reduce(float* out, int64_t first, int64_t n, bool mean) const {
        for (int64_t k = 0; k < n; ++k) out[k] = 0.0f;
        for (int r = 0; r < world_; ++r) {
            const float* in = static_cast<const float*>(g_->deposit[static_cast<std::size_t>(r)]) + first;
            for (int64_t k = 0; k < n; ++k) out[k] += in[k];
        }
        if (mean)
            for (int64_t k = 0; k < n; ++k) out[k] /= static_cast<float>(world_);
    }

    // Deposits `mine`, waits for every rank, runs `read` (which may read every deposit), waits again.
    template <class Read>
    void exchange(const void* mine, const char* what, Read read) {
        std::unique_lock<std::mutex> lk(g_->mu);
        g_->deposit[static_cast<std::size_t>(rank_)] = mine;
        arrive(lk, what);
        lk.unlock();
        read();
        lk.lock();
        arrive(lk, what);
    }

    // A barrier of the group with the timeout: a rank that waits past it aborts the group, so every
    // rank fails instead of some waiting forever.
    void arrive(std::unique_lock<std::mutex>& lk, const char* what) {
        Group& g = *g_;
        if (g.aborted) dead(g);
        const uint64_t gen = g.generation;
        if (++g.arrived == g.world) {
            g.arrived = 0;
            ++g.generation;
            g.cv.notify_all();
            return;
        }
        const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms_);
        while (g.generation == gen && !g.aborted) {
            if (g.cv.wait_until(lk, deadline) == std::cv_status::timeout && g.generation == gen && !g.aborted) {
                g.aborted = true;
                g.why = format("rank %d waited %d ms in %s for the other ranks (%d of %d arrived)", rank_, timeout_ms_,
                               what, g.arrived, g.world);
                g.cv.notify_all();
            }
        }
        if (g.generation == gen) dead(g);
    }

    std::shared_ptr<Group> g_;
    // The all-reduce worker (CPU contexts): its queue, whether it runs one, what it ran since the
    // last join (start, end), its first failure.
    struct Task {
        std::vector<FloatSpan> spans;
        bool mean;
    };
    std::mutex qmu_;
    std::condition_variable qcv_;
    std::deque<Task> queue_;
    bool busy_ = false, stop_ = false;
    std::vector<std::pair<Clock::time_point, Clock::time_point>> ran_;
    std::exception_ptr error_;
    std::thread worker_;
};

}  // namespace

Comm* create_local_comm(Backend& be, const hspmn_comm_params& p) {
    const std::string key(reinterpret_cast<const char*>(p.id), HSPMN_COMM_ID_BYTES);
    std::shared_ptr<Group> g;
    {
        std::lock_guard<std::mutex> lk(registry_mu);
        auto& reg = registry();
        auto it = reg.find(key);
        if (it == reg.end() || it->second->aborted) {
            g = std::make_shared<Group>(p.world);
            reg[key] = g;
        } else {
            g = it->second;
        }
        if (g->world != p.world)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "world (%d) differs from the world (%d) another rank of this id gave",
                 p.world, g->world);
        std::lock_guard<std::mutex> gl(g->mu);
        if (g->joined[static_cast<std::size_t>(p.rank)])
            fail(HSPMN_ERR_INVALID_ARGUMENT, "rank %d of this id was already created", p.rank);
        g->joined[static_cast<std::size_t>(p.rank)] = true;
    }
    std::unique_ptr<LocalComm> c(new LocalComm(be, p, g));
    try {
        c->barrier();
    } catch (...) {
        std::lock_guard<std::mutex> lk(registry_mu);
        auto it = registry().find(key);
        if (it != registry().end() && it->second == g) registry().erase(it);
        throw;
    }
    {
        // Everyone joined: the id is spent, a later create with it starts a new group.
        std::lock_guard<std::mutex> lk(registry_mu);
        auto it = registry().find(key);
        if (it != registry().end() && it->second == g) registry().erase(it);
    }
    return c.release();
}

void local_unique_id(uint8_t* out) {
    static std::mutex mu;
    static uint64_t counter = 0;
    uint64_t state;
    {
        std::lock_guard<std::mutex> lk(mu);
        state = ++counter;
    }
    state ^= static_cast<uint64_t>(Clock::now().time_since_epoch().count()) * 0x9E3779B97F4A7C15ull;
    state ^= static_cast<uint64_t>(getpid()) << 32;
    state ^= reinterpret_cast<uintptr_t>(&counter);
    static const char kMagic[8] = {'h', 's', 'p', 'm', 'n', 'L', 'O', 'C'};
    std::memcpy(out, kMagic, 8);
    for (int i = 8; i < HSPMN_COMM_ID_BYTES; i += 8) {
        const uint64_t v = splitmix64(state);
        std::memcpy(out + i, &v, 8);
    }
}

}  // namespace hspmn
