// HSPMN_COMM_NCCL: libnccl.so.2 opened with dlopen at first use (the library loads where NCCL is
// absent, as with cuBLASLt), declared here with the few types and functions used, so no NCCL header
// is needed to build. Communicators are nonblocking (ncclConfig_t.blocking = 0): every call that
// could wait for other ranks is polled with ncclCommGetAsyncError against the timeout, and a rank
// that never comes or dies makes this one call ncclCommAbort and fail with HSPMN_ERR_COMM.
//
// Collectives run on a stream of the communicator's own, after an event of the context's stream,
// so a bucket's all-reduce overlaps the rest of the backward; join() makes the context's stream wait
// for them and polls their completion on the host.
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <glob.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "../core/dynlib.h"
#include "../core/error.h"
#include "../cuda/runtime.h"
#include "comm.h"

namespace hspmn {
namespace {

// ---- the NCCL ABI we use (nccl.h, stable since 2.14) ---------------------------------------------
typedef struct ncclComm* ncclComm_t;
struct ncclUniqueId {
    char internal[128];
};
typedef int ncclResult_t;
constexpr ncclResult_t ncclSuccess = 0, ncclInProgress = 7;
constexpr int ncclUint8 = 1, ncclFloat32 = 7;
constexpr int ncclSum = 0, ncclAvg = 4;
// ncclConfig_t as of NCCL 2.17 (version 21700): NCCL reads `size` bytes of it and defaults the fields
// of later versions, so this older layout stays valid with newer libraries.
struct ncclConfigV21700 {
    std::size_t size;
    unsigned int magic;
    unsigned int version;
    int blocking;
    int cgaClusterSize;
    int minCTAs;
    int maxCTAs;
    const char* netName;
    int splitShare;
};
constexpr int kUndefInt = -2147483647 - 1;  // NCCL_CONFIG_UNDEF_INT (INT_MIN)
static_assert(sizeof(ncclUniqueId) == HSPMN_COMM_ID_BYTES, "hspmn_comm ids carry an ncclUniqueId");

struct Nccl {
    ncclResult_t (*get_version)(int*);
    ncclResult_t (*get_unique_id)(ncclUniqueId*);
    ncclResult_t (*comm_init_rank_config)(ncclComm_t*, int, ncclUniqueId, int, ncclConfigV21700*);
    ncclResult_t (*comm_finalize)(ncclComm_t);
    ncclResult_t (*comm_destroy)(ncclComm_t);
    ncclResult_t (*comm_abort)(ncclComm_t);
    ncclResult_t (*comm_get_async_error)(ncclComm_t, ncclResult_t*);
    const char* (*get_error_string)(ncclResult_t);
    const char* (*get_last_error)(ncclComm_t);
    ncclResult_t (*all_reduce)(const void*, void*, std::size_t, int, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*all_gather)(const void*, void*, std::size_t, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*group_start)();
    ncclResult_t (*group_end)();
    int version = 0;
    std::string path;
};

// Where libnccl.so.2 is looked for: $HSPMN_NCCL, the loader's path, then the nvidia-nccl wheel that
// PyTorch installs (site-packages/nvidia/nccl/lib) under the usual Python prefixes.
std::vector<std::string> candidates() {
    std::vector<std::string> out;
    if (const char* e = std::getenv("HSPMN_NCCL"); e && *e) out.push_back(e);
    out.push_back("libnccl.so.2");
    std::vector<std::string> patterns;
    for (const char* var : {"VIRTUAL_ENV", "CONDA_PREFIX"})
        if (const char* e = std::getenv(var); e && *e)
            patterns.push_back(std::string(e) + "/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2");
    if (const char* h = std::getenv("HOME"); h && *h)
        patterns.push_back(std::string(h) + "/.local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2");
    for (const char* prefix : {"/usr/local/lib", "/usr/lib", "/opt/conda/lib"})
        for (const char* dir : {"site-packages", "dist-packages"})
            patterns.push_back(std::string(prefix) + "/python3*/" + dir + "/nvidia/nccl/lib/libnccl.so.2");
    patterns.push_back("/usr/lib/python3/dist-packages/nvidia/nccl/lib/libnccl.so.2");
    for (const std::string& p : patterns) {
        glob_t g{};
        if (glob(p.c_str(), 0, nullptr, &g) == 0)
            for (std::size_t i = 0; i < g.gl_pathc; ++i) out.push_back(g.gl_pathv[i]);
        globfree(&g);
    }
    return out;
}

void* symbol(void* lib, const char* name) {
    dlerror();
    void* p = dlsym(lib, name);
    if (!p) fail(HSPMN_ERR_NO_DEVICE, "NCCL: libnccl has no %s", name);
    return p;
}

Nccl load() {
    std::string tried, path;
    void* lib = dlopen_first(candidates(), &tried, &path);
    if (!lib)
        fail(HSPMN_ERR_NO_DEVICE,
             "NCCL not found (%s); install NCCL or the nvidia-nccl-cu13 wheel (PyTorch brings it) and put "
             "libnccl.so.2 on LD_LIBRARY_PATH, or set HSPMN_NCCL to its path",
             tried.c_str());
    Nccl t{};  // the library is never dlclose'd: the table lives as long as the process
#define HSPMN_NCCL_FN(field, name) t.field = reinterpret_cast<decltype(t.field)>(symbol(lib, name))
    HSPMN_NCCL_FN(get_version, "ncclGetVersion");
    HSPMN_NCCL_FN(get_unique_id, "ncclGetUniqueId");
    HSPMN_NCCL_FN(comm_init_rank_config, "ncclCommInitRankConfig");
    HSPMN_NCCL_FN(comm_finalize, "ncclCommFinalize");
    HSPMN_NCCL_FN(comm_destroy, "ncclCommDestroy");
    HSPMN_NCCL_FN(comm_abort, "ncclCommAbort");
    HSPMN_NCCL_FN(comm_get_async_error, "ncclCommGetAsyncError");
    HSPMN_NCCL_FN(get_error_string, "ncclGetErrorString");
    HSPMN_NCCL_FN(get_last_error, "ncclGetLastError");
    HSPMN_NCCL_FN(all_reduce, "ncclAllReduce");
    HSPMN_NCCL_FN(all_gather, "ncclAllGather");
    HSPMN_NCCL_FN(group_start, "ncclGroupStart");
    HSPMN_NCCL_FN(group_end, "ncclGroupEnd");
#undef HSPMN_NCCL_FN
    if (t.get_version(&t.version) != ncclSuccess) t.version = 0;
    // Nonblocking communicators and ncclCommFinalize need 2.14; ncclAvg 2.10.
    if (t.version < 21400)
        fail(HSPMN_ERR_NO_DEVICE, "NCCL %d at %s is older than 2.14, which nonblocking communicators need", t.version,
             path.c_str());
    t.path = path;
    return t;
}

const Nccl& nccl() {
    static const Nccl table = load();  // a throwing initialiser leaves it unset: a later call retries
    return table;
}

using Clock = std::chrono::steady_clock;

class NcclComm final : public Comm {
public:
    NcclComm(Backend& be, const hspmn_comm_params& p) : Comm(be, p), lib_(nccl()) {
        ordinal_ = be.cuda_device();
        compute_ = static_cast<cudaStream_t>(be.cuda_stream());
        activate();
        cuda::check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags (comm)");
        try {
            ncclUniqueId id;
            std::memcpy(id.internal, p.id, sizeof id.internal);
            ncclConfigV21700 cfg{sizeof(ncclConfigV21700), 0xcafebeefu, 21700u, 0, kUndefInt, kUndefInt, kUndefInt,
                                 nullptr, kUndefInt};
            ncclResult_t r = lib_.comm_init_rank_config(&comm_, world_, id, rank_, &cfg);
            if (r != ncclSuccess && r != ncclInProgress) nccl_fail(r, "ncclCommInitRankConfig");
            wait_nccl("ncclCommInitRankConfig (waiting for every rank to join)");
        } catch (...) {
            teardown();
            throw;
        }
    }

    ~NcclComm() override { teardown(); }

    hspmn_comm_kind kind() const override { return HSPMN_COMM_NCCL; }

    void all_reduce(const FloatSpan* spans, int count, bool mean) override {
        begin_op();
        launch("ncclAllReduce", [&] {
            for (int i = 0; i < count; ++i) {
                ncclResult_t r = lib_.all_reduce(spans[i].data, spans[i].data, static_cast<std::size_t>(spans[i].numel),
                                                 ncclFloat32, mean ? ncclAvg : ncclSum, comm_, stream_);
                if (r != ncclSuccess && r != ncclInProgress) return r;
            }
            return ncclSuccess;
        });
        end_op();
    }

    void all_gather(void* buf, std::size_t chunk_bytes) override {
        begin_op();
        char* b = static_cast<char*>(buf);
        launch("ncclAllGather", [&] {
            return lib_.all_gather(b + chunk_bytes * static_cast<std::size_t>(rank_), b, chunk_bytes, ncclUint8, comm_,
                                   stream_);
        });
        end_op();
    }

    void join() override {
        alive();
        activate();
        // Where the context's stream stands now: the end of the backward, for the overlap measure.
        cudaEvent_t compute_end = event(compute_end_);
        cuda::check(cudaEventRecord(compute_end, compute_), "cudaEventRecord (comm join)");
        cudaEvent_t done = event(done_);
        cuda::check(cudaEventRecord(done, stream_), "cudaEventRecord (comm done)");
        cuda::check(cudaStreamWaitEvent(compute_, done, 0), "cudaStreamWaitEvent (comm join)");
        wait_event(done, "the collectives to finish");
        if (timing_on_) {
            // The comm stream may finish first; compute_end waits for local kernels only (it was
            // recorded before the context's stream waits for `done`), so this cannot hang on a peer.
            cuda::check(cudaEventSynchronize(compute_end), "cudaEventSynchronize (comm timing)");
            const float end_ms = elapsed(t0_, compute_end);
            for (std::size_t i = 0; i < n_ops_; ++i) {
                const float a = elapsed(t0_, starts_[i]), b = elapsed(t0_, ends_[i]);
                timing_.busy_ms += b - a;
                timing_.overlapped_ms += std::max(0.0f, std::min(b, end_ms) - a);
            }
        }
        timing_on_ = false;
        n_ops_ = 0;
    }

    void all_reduce_host(float* host, int64_t n, bool mean) override {
        alive();
        activate();
        const std::size_t bytes = static_cast<std::size_t>(n) * 4;
        if (scratch_bytes_ < bytes) {
            free_scratch();
            cuda::check_alloc(cudaMalloc(&scratch_, bytes), "cudaMalloc (comm scratch)", bytes, true);
            cuda::check_alloc(cudaMallocHost(&pinned_, bytes), "cudaMallocHost (comm scratch)", bytes, false);
            scratch_bytes_ = bytes;
        }
        // Through pinned memory: a copy to pageable memory would block the host until the all-reduce
        // ends, out of reach of the timeout.
        std::memcpy(pinned_, host, bytes);
        cuda::check(cudaMemcpyAsync(scratch_, pinned_, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync (comm)");
        launch("ncclAllReduce", [&] {
            return lib_.all_reduce(scratch_, scratch_, static_cast<std::size_t>(n), ncclFloat32, mean ? ncclAvg : ncclSum,
                                   comm_, stream_);
        });
        cuda::check(cudaMemcpyAsync(pinned_, scratch_, bytes, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync (comm)");
        cudaEvent_t done = event(done_);
        cuda::check(cudaEventRecord(done, stream_), "cudaEventRecord (comm)");
        wait_event(done, "an all-reduce of host floats");
        std::memcpy(host, pinned_, bytes);
    }

    void barrier() override {
        float x = 0.0f;
        all_reduce_host(&x, 1, false);
    }

    void abort() noexcept override { abort_requested_.store(true); }

    void begin_timing() override {
        alive();
        activate();
        timing_ = CommTiming{};
        n_ops_ = 0;
        cuda::check(cudaEventRecord(event(t0_), compute_), "cudaEventRecord (comm timing)");
        timing_on_ = true;
    }

private:
    void free_scratch() noexcept {
        if (scratch_) (void)cudaFree(scratch_);
        if (pinned_) (void)cudaFreeHost(pinned_);
        scratch_ = pinned_ = nullptr;
        scratch_bytes_ = 0;
    }

    void activate() const { cuda::check(cudaSetDevice(ordinal_), "cudaSetDevice (comm)"); }

    static cudaEvent_t event(cudaEvent_t& e) {
        if (!e) cuda::check(cudaEventCreate(&e), "cudaEventCreate (comm)");
        return e;
    }

    float elapsed(cudaEvent_t a, cudaEvent_t b) const {
        float ms = 0.0f;
        cuda::check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime (comm)");
        return ms;
    }

    void alive() {
        if (abort_requested_.load()) kill(format("rank %d called hspmn_comm_abort", rank_));
        if (!comm_) fail(HSPMN_ERR_COMM, "communicator is dead: %s", why_.c_str());
    }

    // The comm stream waits for what the context's stream queued so far; a timing event opens the op.
    void begin_op() {
        alive();
        activate();
        cudaEvent_t ready = event(ready_);
        cuda::check(cudaEventRecord(ready, compute_), "cudaEventRecord (comm ready)");
        cuda::check(cudaStreamWaitEvent(stream_, ready, 0), "cudaStreamWaitEvent (comm ready)");
        if (timing_on_) {
            if (n_ops_ == starts_.size()) {
                starts_.push_back(nullptr);
                ends_.push_back(nullptr);
            }
            cuda::check(cudaEventRecord(event(starts_[n_ops_]), stream_), "cudaEventRecord (comm start)");
        }
    }

    void end_op() {
        if (timing_on_) {
            cuda::check(cudaEventRecord(event(ends_[n_ops_]), stream_), "cudaEventRecord (comm end)");
            ++n_ops_;
        }
    }

    // One group of NCCL calls; a nonblocking communicator may answer ncclInProgress until queued.
    template <class Body>
    void launch(const char* what, Body body) {
        ncclResult_t r = lib_.group_start();
        if (r != ncclSuccess) nccl_fail(r, "ncclGroupStart");
        r = body();
        const ncclResult_t e = lib_.group_end();
        if (r != ncclSuccess && r != ncclInProgress) nccl_fail(r, what);
        if (e != ncclSuccess && e != ncclInProgress) nccl_fail(e, "ncclGroupEnd");
        if (e == ncclInProgress) wait_nccl(what);
    }

    // Polls the communicator's state until nothing is in progress, an error, an abort or the timeout.
    void wait_nccl(const char* what) {
        const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms_);
        for (;;) {
            ncclResult_t st = ncclInProgress;
            ncclResult_t r = lib_.comm_get_async_error(comm_, &st);
            if (r != ncclSuccess) nccl_fail(r, "ncclCommGetAsyncError");
            if (st == ncclSuccess) return;
            if (st != ncclInProgress) nccl_fail(st, what);
            poll_checks(deadline, what);
        }
    }

    // Waits for a CUDA event of the comm stream, watching NCCL's state, the abort flag and the timeout.
    void wait_event(cudaEvent_t e, const char* what) {
        const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms_);
        for (;;) {
            const cudaError_t q = cudaEventQuery(e);
            if (q == cudaSuccess) return;
            if (q != cudaErrorNotReady) cuda::check(q, "cudaEventQuery (comm)");
            ncclResult_t st = ncclSuccess;
            if (lib_.comm_get_async_error(comm_, &st) == ncclSuccess && st != ncclSuccess && st != ncclInProgress)
                nccl_fail(st, what);
            poll_checks(deadline, what);
        }
    }

    void poll_checks(Clock::time_point deadline, const char* what) {
        if (abort_requested_.load()) kill(format("rank %d called hspmn_comm_abort while waiting for %s", rank_, what));
        if (Clock::now() > deadline)
            kill(format("rank %d waited %d ms for %s: another rank did not join or died", rank_, timeout_ms_, what));
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }

    [[noreturn]] void nccl_fail(ncclResult_t r, const char* what) {
        const char* last = comm_ ? lib_.get_last_error(comm_) : nullptr;
        kill(format("%s: %s%s%s", what, lib_.get_error_string(r), last && *last ? ": " : "", last ? last : ""));
    }

    // Aborts the NCCL communicator (its kernels stop waiting for peers) and throws Error{COMM}.
    [[noreturn]] void kill(const std::string& why) {
        if (comm_) {
            (void)lib_.comm_abort(comm_);
            comm_ = nullptr;
        }
        if (why_.empty()) why_ = why;
        fail(HSPMN_ERR_COMM, "%s", why.c_str());
    }

    void teardown() noexcept {
        (void)cudaSetDevice(ordinal_);
        if (comm_) {
            bool clean = !abort_requested_.load() && lib_.comm_finalize(comm_) == ncclSuccess;
            if (clean) {
                // Finalize flushes what was issued; a peer that left makes it hang: bounded like the rest.
                try {
                    wait_nccl("ncclCommFinalize");
                } catch (...) {
                    clean = false;
                }
            }
            if (comm_) (void)(clean ? lib_.comm_destroy(comm_) : lib_.comm_abort(comm_));
            comm_ = nullptr;
        }
        if (stream_) (void)cudaStreamSynchronize(stream_);
        for (cudaEvent_t* e : {&ready_, &done_, &t0_, &compute_end_})
            if (*e) (void)cudaEventDestroy(*e);
        for (cudaEvent_t e : starts_)
            if (e) (void)cudaEventDestroy(e);
        for (cudaEvent_t e : ends_)
            if (e) (void)cudaEventDestroy(e);
        free_scratch();
        if (stream_) (void)cudaStreamDestroy(stream_);
        stream_ = nullptr;
    }

    const Nccl& lib_;
    int ordinal_ = 0;
    cudaStream_t compute_ = nullptr;  // the context's
    cudaStream_t stream_ = nullptr;   // the collectives'
    ncclComm_t comm_ = nullptr;       // null once dead
    std::string why_;
    std::atomic<bool> abort_requested_{false};
    cudaEvent_t ready_ = nullptr, done_ = nullptr, t0_ = nullptr, compute_end_ = nullptr;
    std::vector<cudaEvent_t> starts_, ends_;
    std::size_t n_ops_ = 0;
    bool timing_on_ = false;
    void* scratch_ = nullptr;  // device, and its pinned host twin, for all_reduce_host
    void* pinned_ = nullptr;
    std::size_t scratch_bytes_ = 0;
};

}  // namespace

Comm* create_nccl_comm(Backend& be, const hspmn_comm_params& p) {
    if (be.kind() != HSPMN_BACKEND_CUDA || !be.cuda_stream())
        fail(HSPMN_ERR_INVALID_ARGUMENT, "an NCCL communicator needs a CUDA context");
    return new NcclComm(be, p);
}

bool nccl_available(std::string* why) {
    try {
        (void)nccl();
        return true;
    } catch (const Error& e) {
        if (why) *why = e.message;
        return false;
    }
}

void nccl_unique_id(uint8_t* out) {
    const Nccl& lib = nccl();
    ncclUniqueId id;
    const ncclResult_t r = lib.get_unique_id(&id);
    if (r != ncclSuccess) fail(HSPMN_ERR_COMM, "ncclGetUniqueId: %s", lib.get_error_string(r));
    std::memcpy(out, id.internal, sizeof id.internal);
}

}  // namespace hspmn
