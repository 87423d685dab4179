// Graphs of whatever a body queues on a device's stream (the decoder's step: model/decoder.cpp).
// Kernels that take Triton's shared scratch bake its address in, so a replay checks it has not moved
// (a larger attention launch regrows it) and otherwise refuses with HSPMN_ERR_STATE: capture again.
#include <cuda_runtime.h>

#include <string>

#include "../core/error.h"
#include "cuda_block.h"
#include "device.h"

namespace hspmn::cuda {

namespace {

class StreamGraph final : public GraphImpl {
public:
    StreamGraph(Device& d, cudaGraphExec_t exec, const void* shared_scratch)
        : d_(d), exec_(exec), shared_scratch_(shared_scratch) {}
    ~StreamGraph() override {
        (void)cudaSetDevice(device_ordinal(d_));
        (void)cudaGraphExecDestroy(exec_);  // one still in flight is freed when it completes
    }
    void launch() override {
        d_.activate();
        if (triton_scratch(d_) != shared_scratch_)
            fail(HSPMN_ERR_STATE, "the device's attention scratch moved since the step was captured; capture again");
        check(cudaGraphLaunch(exec_, stream(d_)), "cudaGraphLaunch (step)");
    }

private:
    Device& d_;
    cudaGraphExec_t exec_;
    const void* shared_scratch_;
};

}  // namespace

cudaGraph_t record_stream(Device& d, void (*body)(void*), void* arg, const char* what) {
    cudaStream_t s = stream(d);
    // Thread-local: a host sync or cudaMalloc on this thread fails the capture instead of passing
    // silently, while other threads (other contexts) keep allocating.
    check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    cudaGraph_t graph = nullptr;
    try {
        body(arg);
    } catch (...) {
        // Never leave the stream capturing: every later call on the context would fail.
        (void)cudaStreamEndCapture(s, &graph);
        if (graph) (void)cudaGraphDestroy(graph);
        (void)cudaGetLastError();
        throw;
    }
    const cudaError_t e = cudaStreamEndCapture(s, &graph);
    if (e != cudaSuccess) {
        if (graph) (void)cudaGraphDestroy(graph);
        (void)cudaGetLastError();
        check(e, ("cudaStreamEndCapture (" + std::string(what) + " could not be captured)").c_str());
    }
    return graph;
}

cudaGraphExec_t instantiate_graph(cudaGraph_t graph) {
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    (void)cudaGraphDestroy(graph);  // the executable graph is independent of it
    check(e, "cudaGraphInstantiate");
    return exec;
}

GraphImpl* capture_stream(Device& d, void (*body)(void*), void* arg) {
    const void* shared_scratch = triton_scratch(d);
    cudaGraph_t graph = record_stream(d, body, arg, "a call of the step");
    if (triton_scratch(d) != shared_scratch) {
        (void)cudaGraphDestroy(graph);
        fail(HSPMN_ERR_INTERNAL, "step capture: the attention scratch was reallocated while captured");
    }
    cudaGraphExec_t exec = instantiate_graph(graph);
    try {
        return new StreamGraph(d, exec, shared_scratch);
    } catch (...) {
        (void)cudaGraphExecDestroy(exec);
        throw;
    }
}

}  // namespace hspmn::cuda
