// The communicator behind hspmn_comm (native/README.md "Data parallelism"): collectives over the ranks
// of a data-parallel job on buffers in a context's internal memory (Backend::internal_memory: host on
// the CPU backend, device on CUDA), ordered after the work already queued on the context's stream.
// Two implementations: LOCAL (local_comm.cpp: ranks are threads of this process, a host rendezvous)
// and NCCL (nccl_comm.cpp: libnccl opened with dlopen, CUDA builds only). Every failure of a
// collective (timeout, abort, NCCL error) throws Error{HSPMN_ERR_COMM} and leaves the communicator
// dead: every later collective fails at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "../core/alloc.h"
#include "../core/backend.h"
#include "hspmn.h"

namespace hspmn {

// A float32 array in the context's internal memory.
struct FloatSpan {
    float* data;
    int64_t numel;
};

// Where the time of the collectives of one backward went (hspmn_data_parallel_stats).
struct CommTiming {
    double busy_ms = 0.0;        // summed duration of the collectives started since begin_timing
    double overlapped_ms = 0.0;  // the part of busy_ms before the context's stream reached join
};

class Comm : public Tracked {
public:
    Comm(Backend& be, const hspmn_comm_params& p) : be_(be), rank_(p.rank), world_(p.world), timeout_ms_(p.timeout_ms) {}
    virtual ~Comm() = default;
    Comm(const Comm&) = delete;
    Comm& operator=(const Comm&) = delete;

    int rank() const { return rank_; }
    int world() const { return world_; }
    virtual hspmn_comm_kind kind() const = 0;
    Backend& backend() const { return be_; }

    // Starts the sum over the ranks (mean: divided by world) of every span, in place. The spans must
    // not be touched by the context's stream until join() (NCCL runs it on a stream of its own and
    // returns at once; LOCAL is done when it returns).
    virtual void all_reduce(const FloatSpan* spans, int count, bool mean) = 0;
    // In place: rank r's chunk_bytes at buf + r * chunk_bytes reach every rank's buf. buf holds
    // world * chunk_bytes bytes. Started like all_reduce.
    virtual void all_gather(void* buf, std::size_t chunk_bytes) = 0;
    // Queues the context's stream after every started collective, and waits on the host (up to the
    // timeout) until they finished, so a dead rank surfaces here as Error{COMM}, not as a hang later.
    virtual void join() = 0;
    // Host floats: sum (mean: / world) over the ranks, in place; returns when done.
    virtual void all_reduce_host(float* host, int64_t n, bool mean) = 0;
    virtual void barrier() = 0;
    // Any thread: pending and later collectives fail with Error{COMM}.
    virtual void abort() noexcept = 0;

    // Timing of the collectives from begin_timing to the next join (LOCAL: host time, never overlapped).
    virtual void begin_timing() {}
    virtual CommTiming timing() const { return timing_; }

protected:
    Backend& be_;
    int rank_, world_;
    int timeout_ms_;
    CommTiming timing_;
};

// Throws Error{COMM} when the rendezvous fails, Error{INVALID_ARGUMENT} for a world that differs from
// the one the first rank of the id announced.
Comm* create_local_comm(Backend& be, const hspmn_comm_params& p);
void local_unique_id(uint8_t* out);

// NCCL: Error{NOT_BUILT} without the CUDA backend, Error{NO_DEVICE} when libnccl cannot be loaded
// (the message says where it looked), Error{INVALID_ARGUMENT} for a context that is not CUDA.
Comm* create_nccl_comm(Backend& be, const hspmn_comm_params& p);
// True when libnccl loads; else false with the reason in *why.
bool nccl_available(std::string* why);
void nccl_unique_id(uint8_t* out);

}  // namespace hspmn
