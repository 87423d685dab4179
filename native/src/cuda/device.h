// What a Device holds (runtime.h declares it opaque for the block math): one per CUDA context.
#pragma once

#include <mutex>

#include "../core/alloc.h"
#include "cublaslt.h"
#include "runtime.h"

namespace hspmn::cuda {

struct GemmPlans;      // gemm.cpp: cuBLASLt descriptors and algorithm per shape (gemm_search.h)
struct TritonModules;  // triton_loader.cpp: the loaded cubins of this device

// What a file outside the runtime keeps per device and frees with it: the virtual destructor lets
// Device::release free it without knowing its type (the test programs link the runtime alone).
struct DeviceOwned : Tracked {
    virtual ~DeviceOwned() = default;
};

class Device : public Tracked {
public:
    // Throws Error{NO_DEVICE} when the driver finds no device or cuBLASLt is missing,
    // Error{INVALID_ARGUMENT} for an ordinal past the device count or a caller's stream of another
    // device. user_stream null: the device makes (and later destroys) a non-blocking stream of its own;
    // else every op goes on user_stream, which is never destroyed here.
    explicit Device(int ordinal, cudaStream_t user_stream = nullptr);
    ~Device();
    Device(const Device&) = delete;
    Device& operator=(const Device&) = delete;

    // The context may be used from several threads, one at a time: every entry point makes its
    // device current on the calling thread first.
    void activate() const;

    int ordinal = 0;
    int sm_count = 0;
    int arch = 0;  // compute capability, major*10+minor
    cudaStream_t stream = nullptr;
    bool owns_stream = false;  // false for the caller's stream (hspmn_context_params.cuda_stream)
    const CublasLt* lt = nullptr;
    cublasLtHandle_t lt_handle = nullptr;
    DeviceBuffer workspace;  // cuBLASLt's, kWorkspaceBytes

    std::mutex gemm_mutex;
    GemmPlans* gemm_plans = nullptr;
    // The algorithm search for this context's new gemm plans: -1 the process's (HSPMN_GEMM_SEARCH), else a
    // GemmSearch value (gemm_search.h). For tests and benchmarks only: OFF neither reads nor keeps the
    // process's choices, so such a context may compute other bits than the rest.
    int gemm_search = -1;
    std::mutex triton_mutex;
    TritonModules* triton = nullptr;
    DeviceBuffer attention_delta;    // [B, H, C] f32 of the backward
    DeviceBuffer triton_scratch;     // Triton's global scratch, when a kernel asks for one
    DeviceBuffer non_finite_first;   // [1] u64 of find_non_finite, kept: a per-call cudaFree syncs the device
    DeviceBuffer rows_arena;         // runtime.h rows_arena
    uint64_t rows_arena_generation = 0;
    DeviceBuffer training_arena;     // runtime.h training_arena
    DeviceBuffer backward_partials;  // column partials of the backward's weight-gradient reductions
    DeviceBuffer aux_partials;       // runtime.h aux_partials
    DeviceOwned* shared_activations = nullptr;  // cuda_block.cu SharedActivations (BlockImpl::share_activations)
    // SideStream's (runtime.h), made at its first use: the second stream, its cuBLASLt workspace (two
    // GEMMs in flight at once must not share one) and the fork / join events.
    cudaStream_t side_stream = nullptr;
    DeviceBuffer side_workspace;
    cudaEvent_t fork_event = nullptr;
    cudaEvent_t join_event = nullptr;
    bool on_side = false;  // while a SideStream has swapped stream and workspace
    // swiglu_gemm's sm_90a kernel: how many of its CTA pairs fit on the device at once (asked at its first
    // launch; 0 not yet, -1 none, so it runs as single CTAs).
    int swiglu_gemm_pairs = 0;
    int down_residual_pairs = 0;  // the same for down_residual's kernel

    static constexpr std::size_t kWorkspaceBytes = std::size_t(32) << 20;

private:
    void release() noexcept;
};

void destroy_gemm_plans(Device& d) noexcept;
void unload_triton(Device& d) noexcept;

}  // namespace hspmn::cuda
