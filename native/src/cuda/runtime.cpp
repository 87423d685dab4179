// Device, DeviceBuffer and the error helpers of runtime.h.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "../core/error.h"
#include "device.h"

namespace hspmn::cuda {

// ---- errors ----

namespace {

// Per device ordinal, for the whole process: a sticky error corrupts the process's (primary) CUDA
// context of the device, which every hspmn context on it and any other CUDA code share.
constexpr int kMaxDevices = 64;
struct LostDevice {
    std::atomic<bool> lost{false};
    std::mutex mutex;
    std::string text;  // the first sticky error, written once under mutex before lost is set
};
LostDevice g_lost[kMaxDevices];

LostDevice* lost_slot(int ordinal) {
    return ordinal >= 0 && ordinal < kMaxDevices ? &g_lost[ordinal] : nullptr;
}

}  // namespace

bool is_sticky_error(int code) {
    switch (code) {
        case cudaErrorIllegalAddress:
        case cudaErrorLaunchFailure:
        case cudaErrorLaunchTimeout:
        case cudaErrorHardwareStackError:
        case cudaErrorIllegalInstruction:
        case cudaErrorMisalignedAddress:
        case cudaErrorInvalidAddressSpace:
        case cudaErrorInvalidPc:
        case cudaErrorAssert:
        case cudaErrorECCUncorrectable:
        case cudaErrorNvlinkUncorrectable:
        case cudaErrorContextIsDestroyed:
            return true;
        default:
            return false;
    }
}

void device_lost(int ordinal, const char* text) {
    // cudaGetDevice is a host-side query that still answers on a corrupt context.
    if (ordinal < 0 && cudaGetDevice(&ordinal) != cudaSuccess) ordinal = 0;
    if (LostDevice* slot = lost_slot(ordinal)) {
        std::lock_guard<std::mutex> lock(slot->mutex);
        if (!slot->lost.load(std::memory_order_relaxed)) {
            slot->text = text;
            slot->lost.store(true, std::memory_order_release);
        }
    }
    fail(HSPMN_ERR_DEVICE_LOST,
         "%s; a sticky CUDA error: the process's CUDA context of device %d is unusable, destroy this "
         "context and its objects and restart the process to use the device again",
         text, ordinal);
}

void device_lost_check(int ordinal) {
    LostDevice* slot = lost_slot(ordinal);
    if (!slot || !slot->lost.load(std::memory_order_acquire)) return;
    std::string text;
    {
        std::lock_guard<std::mutex> lock(slot->mutex);
        text = slot->text;
    }
    fail(HSPMN_ERR_DEVICE_LOST,
         "CUDA device %d was lost to an earlier sticky error (%s): the process's CUDA context of it is "
         "unusable, destroy this context and its objects and restart the process to use the device again",
         ordinal, text.c_str());
}

void fail_status(bool sticky, bool out_of_memory, const char* text, const char* sticky_cause) {
    if (sticky) device_lost(-1, sticky_cause ? format("%s after %s", text, sticky_cause).c_str() : text);
    fail(out_of_memory ? HSPMN_ERR_OUT_OF_MEMORY : HSPMN_ERR_BACKEND, "%s", text);
}

void check(cudaError_t e, const char* what) {
    if (e == cudaSuccess) return;
    // Allocation failures are not sticky: clear them so the context stays usable.
    if (e == cudaErrorMemoryAllocation) (void)cudaGetLastError();
    fail_status(is_sticky_error(e), e == cudaErrorMemoryAllocation,
                format("%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e)).c_str());
}

void check_alloc(cudaError_t e, const char* what, std::size_t bytes, bool device_memory) {
    if (e == cudaSuccess) return;
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        std::size_t free_b = 0, total_b = 0;
        if (device_memory && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
            fail(HSPMN_ERR_OUT_OF_MEMORY, "%s of %zu bytes: %s (%s); %zu of %zu bytes of device memory free", what,
                 bytes, cudaGetErrorString(e), cudaGetErrorName(e), free_b, total_b);
        fail(HSPMN_ERR_OUT_OF_MEMORY, "%s of %zu bytes: %s (%s)", what, bytes, cudaGetErrorString(e),
             cudaGetErrorName(e));
    }
    check(e, format("%s of %zu bytes", what, bytes).c_str());
}

void check_launch(const char* what) { check(cudaGetLastError(), what); }

int device_ordinal(const Device& d) { return d.ordinal; }
cudaStream_t stream(const Device& d) { return d.stream; }
int sm_count(const Device& d) { return d.sm_count; }
DeviceBuffer& non_finite_buffer(Device& d) { return d.non_finite_first; }

// ---- DeviceBuffer ----

namespace {

void free_device(const Device* d, void* p, std::size_t bytes) noexcept {
    if (!p) return;
    (void)cudaSetDevice(d->ordinal);
    (void)cudaFree(p);  // waits for the kernels still reading it
    stats_count_bytes(-static_cast<int64_t>(bytes));
}

}  // namespace

DeviceBuffer::DeviceBuffer(Device& d, std::size_t bytes) { ensure(d, bytes); }

DeviceBuffer::~DeviceBuffer() { free_device(dev_, ptr_, bytes_); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : dev_(o.dev_), ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
        free_device(dev_, ptr_, bytes_);
        dev_ = o.dev_;
        ptr_ = o.ptr_;
        bytes_ = o.bytes_;
        o.ptr_ = nullptr;
        o.bytes_ = 0;
    }
    return *this;
}

void DeviceBuffer::ensure(Device& d, std::size_t bytes) {
    if (ptr_ && bytes_ >= bytes) return;
    free_device(dev_, ptr_, bytes_);
    ptr_ = nullptr;
    bytes_ = 0;
    dev_ = &d;
    if (bytes == 0) return;
    d.activate();
    void* p = nullptr;
    // On failure the buffer stays empty (the old one is already freed): the next call retries.
    check_alloc(cudaMalloc(&p, bytes), "cudaMalloc (scratch)", bytes, true);
    ptr_ = p;
    bytes_ = bytes;
    stats_count_bytes(static_cast<int64_t>(bytes));
}

void DeviceBuffer::zero(Device& d) {
    if (ptr_) check(cudaMemsetAsync(ptr_, 0, bytes_, d.stream), "cudaMemsetAsync (scratch)");
}

// ---- Device ----

Device::Device(int ord, cudaStream_t user_stream) : ordinal(ord) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        fail(HSPMN_ERR_NO_DEVICE,
             "no CUDA device: %s (%s); the CUDA backend needs an NVIDIA GPU and a driver for CUDA %d.%d or newer",
             cudaGetErrorString(e), cudaGetErrorName(e), CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
    }
    if (count == 0) fail(HSPMN_ERR_NO_DEVICE, "no CUDA device: the driver reports 0 devices");
    if (ord >= count)
        fail(HSPMN_ERR_INVALID_ARGUMENT, "device (%d) is out of range: the driver reports %d CUDA device(s)", ord,
             count);
    lt = &cublaslt();
    try {
        activate();
        int major = 0, minor = 0;
        check(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, ord), "cudaDeviceGetAttribute");
        check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, ord), "cudaDeviceGetAttribute");
        check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, ord), "cudaDeviceGetAttribute");
        arch = major * 10 + minor;
        if (user_stream == cudaStreamLegacy || user_stream == cudaStreamPerThread) {
            // The default streams of the current device, which every entry point makes ours.
            stream = user_stream;
        } else if (user_stream) {
            // A stream of another device would fail every launch later with a less helpful message.
            int owner = -1;
            cudaError_t se = cudaStreamGetDevice(user_stream, &owner);
            if (se != cudaSuccess) {
                (void)cudaGetLastError();
                fail(HSPMN_ERR_INVALID_ARGUMENT, "cuda_stream (%p) is not a usable CUDA stream: %s (%s)", user_stream,
                     cudaGetErrorString(se), cudaGetErrorName(se));
            }
            if (owner != ord)
                fail(HSPMN_ERR_INVALID_ARGUMENT, "cuda_stream belongs to CUDA device %d, the context is on device %d",
                     owner, ord);
            stream = user_stream;
        } else {
            // Non-blocking: no implicit ordering with the legacy default stream of other libraries.
            check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
            owns_stream = true;
        }
        check_lt(lt->create(&lt_handle), "cublasLtCreate");
        workspace.ensure(*this, kWorkspaceBytes);
    } catch (...) {
        release();
        throw;
    }
}

Device::~Device() { release(); }

void Device::release() noexcept {
    (void)cudaSetDevice(ordinal);
    if (stream) (void)cudaStreamSynchronize(stream);
    unload_triton(*this);
    destroy_gemm_plans(*this);
    delete shared_activations;
    shared_activations = nullptr;
    attention_delta = DeviceBuffer();
    triton_scratch = DeviceBuffer();
    non_finite_first = DeviceBuffer();
    rows_arena = DeviceBuffer();
    training_arena = DeviceBuffer();
    backward_partials = DeviceBuffer();
    aux_partials = DeviceBuffer();
    workspace = DeviceBuffer();
    side_workspace = DeviceBuffer();
    if (side_stream) (void)cudaStreamDestroy(side_stream);
    if (fork_event) (void)cudaEventDestroy(fork_event);
    if (join_event) (void)cudaEventDestroy(join_event);
    side_stream = nullptr;
    fork_event = join_event = nullptr;
    if (lt_handle) lt->destroy(lt_handle);
    lt_handle = nullptr;
    if (stream && owns_stream) (void)cudaStreamDestroy(stream);  // a caller's stream stays the caller's
    stream = nullptr;
}

void Device::activate() const {
    device_lost_check(ordinal);
    check(cudaSetDevice(ordinal), "cudaSetDevice");
}

namespace {

// HSPMN_POISON_SCRATCH=1 (read at every call; for tests): an arena handed out is first filled with 0xFF
// bytes (NaN as bf16 and f32, -1 as integers), so a kernel that reads scratch no kernel of the call wrote
// shows as NaN instead of passing on whatever the last call left there.
char* poisoned(Device& d, DeviceBuffer& arena, std::size_t bytes) {
    const char* e = std::getenv("HSPMN_POISON_SCRATCH");
    if (e && std::strcmp(e, "1") == 0 && bytes > 0)
        check(cudaMemsetAsync(arena.data(), 0xFF, bytes, d.stream), "cudaMemsetAsync (HSPMN_POISON_SCRATCH)");
    return arena.as<char>();
}

}  // namespace

char* rows_arena(Device& d, std::size_t bytes) {
    if (d.rows_arena.bytes() < bytes) {
        d.rows_arena.ensure(d, bytes);
        ++d.rows_arena_generation;
    }
    return poisoned(d, d.rows_arena, bytes);
}

uint64_t rows_arena_generation(const Device& d) { return d.rows_arena_generation; }

char* training_arena(Device& d, std::size_t bytes) {
    d.training_arena.ensure(d, bytes);
    return poisoned(d, d.training_arena, bytes);
}

DeviceBuffer& backward_partials(Device& d) { return d.backward_partials; }

double* aux_partials(Device& d) {
    d.aux_partials.ensure(d, static_cast<std::size_t>(2 * kAuxMaxBlocks) * sizeof(double));
    return d.aux_partials.as<double>();
}

}  // namespace hspmn::cuda
