// SideStream (runtime.h): a second stream forked from the context's stream and joined back to it by events.
#include <cuda_runtime.h>

#include <utility>

#include "../core/env_choice.h"
#include "../core/error.h"
#include "device.h"

namespace hspmn::cuda {

bool side_stream_enabled() {
    return env_choice("HSPMN_STREAMS", {"1", "2"}, 0,
                      "1 (every op on the context's stream) or 2 (the reflexive stream's GEMMs on a second stream "
                      "beside the attention's)") == 1;
}

namespace {

// Swaps the context's stream and workspace with the side stream's: ops read d.stream and d.workspace.
void swap_sides(Device& d) noexcept {
    std::swap(d.stream, d.side_stream);
    std::swap(d.workspace, d.side_workspace);
    d.on_side = !d.on_side;
}

bool capturing(cudaStream_t s) {
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    check(cudaStreamIsCapturing(s, &st), "cudaStreamIsCapturing (side stream)");
    return st != cudaStreamCaptureStatusNone;
}

// The side stream, its events and workspace, all or none: a failure part way frees what was made, so the
// next call starts over without leaking.
void make_side(Device& d) {
    cudaEvent_t fork = nullptr, join = nullptr;
    cudaStream_t side = nullptr;
    try {
        check(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming), "cudaEventCreateWithFlags (fork)");
        check(cudaEventCreateWithFlags(&join, cudaEventDisableTiming), "cudaEventCreateWithFlags (join)");
        check(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking), "cudaStreamCreateWithFlags (side)");
        d.side_workspace.ensure(d, Device::kWorkspaceBytes);
    } catch (...) {
        if (side) (void)cudaStreamDestroy(side);
        if (join) (void)cudaEventDestroy(join);
        if (fork) (void)cudaEventDestroy(fork);
        throw;
    }
    d.fork_event = fork;
    d.join_event = join;
    d.side_stream = side;
}

}  // namespace

SideStream::SideStream(Device& d, bool wanted) : d_(d) {
    if (!wanted || d.on_side || !side_stream_enabled()) return;
    if (!d.side_stream) {
        // Made outside any capture: a capture in global mode may refuse the creation calls.
        if (capturing(d.stream)) return;
        make_side(d);
    }
    check(cudaEventRecord(d.fork_event, d.stream), "cudaEventRecord (fork)");
    check(cudaStreamWaitEvent(d.side_stream, d.fork_event, 0), "cudaStreamWaitEvent (fork)");
    swap_sides(d);
    active_ = true;
}

void SideStream::leave() {
    if (!active_ || left_) return;
    left_ = true;
    swap_sides(d_);
    check(cudaEventRecord(d_.join_event, d_.side_stream), "cudaEventRecord (join)");
}

void SideStream::join() {
    if (!active_) return;
    leave();
    active_ = false;
    check(cudaStreamWaitEvent(d_.stream, d_.join_event, 0), "cudaStreamWaitEvent (join)");
}

SideStream::~SideStream() {
    if (!active_) return;
    if (!left_) {
        swap_sides(d_);
        left_ = true;
        (void)cudaEventRecord(d_.join_event, d_.side_stream);
    }
    (void)cudaStreamWaitEvent(d_.stream, d_.join_event, 0);
}

}  // namespace hspmn::cuda
