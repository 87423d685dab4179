// The seam between the CUDA block math (cuda_block.cu, kernels/) and the CUDA runtime pieces
// (device, memory, cuBLASLt, the AOT-compiled Triton attention). Everything here throws
// hspmn::Error (core/error.h) with the failing call's name and CUDA's message; nothing exits.
// No function here synchronises the host with the device unless its comment says so.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "../core/attention_shape.h"

namespace hspmn::cuda {

// Throws Error naming `what` when `e` is not cudaSuccess: HSPMN_ERR_OUT_OF_MEMORY for
// cudaErrorMemoryAllocation (cleared: not sticky), HSPMN_ERR_DEVICE_LOST for a sticky error (which also
// marks the current device lost, see device_lost_check), HSPMN_ERR_BACKEND for the rest.
void check(cudaError_t e, const char* what);
// For an allocation of `bytes`: check() with the bytes (and the device's free memory, for device
// allocations) in the message.
void check_alloc(cudaError_t e, const char* what, std::size_t bytes, bool device_memory);
// Whether a CUDA runtime or driver error code (same numbers for these) is sticky: the process's CUDA
// context of the device is corrupt and every later call there fails or computes garbage.
bool is_sticky_error(int code);
// Records the first sticky error seen on device `ordinal` (-1: the current device) and throws
// Error{HSPMN_ERR_DEVICE_LOST} with `text`.
[[noreturn]] void device_lost(int ordinal, const char* text);
// Throws Error{HSPMN_ERR_DEVICE_LOST} naming the recorded error when device `ordinal` was lost; every
// entry point on a CUDA context passes here (Device::activate), so none runs kernels on a corrupt
// context. Process-wide: every context of the device shares the process's CUDA context.
void device_lost_check(int ordinal);
// After a kernel launch: check(cudaGetLastError(), what).
void check_launch(const char* what);
// How check() and the driver's and cuBLASLt's checks (check_cu, check_lt) end on a failed status: `text`
// ("what: message (code)") as HSPMN_ERR_DEVICE_LOST when `sticky` (followed by " after <sticky_cause>"
// when one is given), else as HSPMN_ERR_OUT_OF_MEMORY when `out_of_memory`, else as HSPMN_ERR_BACKEND.
[[noreturn]] void fail_status(bool sticky, bool out_of_memory, const char* text, const char* sticky_cause = nullptr);

// The function table load() builds (the driver's entry points, cuBLASLt's symbols), once per process and
// table type; a load that throws leaves it unbuilt, so a later call retries.
template <class Table>
const Table& load_once(Table (*load)()) {
    static const Table table = load();
    return table;
}

// One per context: the device, its stream, the cuBLASLt handle and workspace, loaded Triton modules.
class Device;

int device_ordinal(const Device& d);
// The stream every op of the context goes on: the library's own (non-blocking) or the caller's
// (hspmn_context_params.cuda_stream). Nothing in the backend uses another stream (but SideStream's, forked
// from and joined back to this one within a call), the legacy default
// stream or cudaDeviceSynchronize. Host waits are cudaStreamSynchronize on this stream (and the gemm
// algorithm search's events, on a shape's first call); what still waits for the whole device is
// cudaFree / cudaFreeHost / cudaMallocHost, which the backend calls only when a tensor, block, model,
// decoder or context is created or destroyed, when scratch grows (the first call of a larger shape,
// the search's scratch of an accumulating gemm included) and in hspmn_gumbel_noise into a host tensor;
// never in a warm forward, backward, decode or optimizer step.
cudaStream_t stream(const Device& d);
int sm_count(const Device& d);

// A second stream for ops independent of what the context's stream runs meanwhile (the reflexive
// stream's GEMMs beside the attention's, cuda_block_rows.cu). While one is entered, stream(d) and the
// cuBLASLt workspace are the side stream's; its ops start after everything queued on the context's stream
// before the constructor, and join() makes the context's stream wait for all of them, so callers see one
// stream's order (a graph captured from the context's stream records the fork and the join as
// dependencies). Inert (stream(d) unchanged, no events) unless `wanted`, HSPMN_STREAMS=2 and the stream is
// not capturing before the side stream exists (it is made at first use, outside any capture).
class SideStream {
public:
    SideStream(Device& d, bool wanted);
    ~SideStream();  // join(), its errors dropped (an exception is already on its way)
    SideStream(const SideStream&) = delete;
    SideStream& operator=(const SideStream&) = delete;
    // Back to the context's stream; the side stream's ops stay in flight until join().
    void leave();
    // leave(), then the context's stream waits for the side stream's ops.
    void join();
    bool active() const { return active_; }
private:
    Device& d_;
    bool active_ = false;  // entered and not yet joined
    bool left_ = false;
};
// Whether HSPMN_STREAMS=2 (read once per process): SideStream's switch.
bool side_stream_enabled();

class DeviceBuffer;
// find_non_finite's [1] u64 result, kept by the device so a scan frees nothing (cudaFree would wait
// for every stream of the device).
DeviceBuffer& non_finite_buffer(Device& d);

// Device scratch memory from the tracked allocator (counted in hspmn_alloc_stats), freed by the
// destructor. Not zero-filled unless zero() is called (cudaMemsetAsync on the stream).
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    DeviceBuffer(Device& d, std::size_t bytes);
    ~DeviceBuffer();
    DeviceBuffer(DeviceBuffer&& o) noexcept;
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    void* data() const { return ptr_; }
    template <class T> T* as() const { return static_cast<T*>(ptr_); }
    std::size_t bytes() const { return bytes_; }
    // Grows (discarding contents) when smaller than `bytes`.
    void ensure(Device& d, std::size_t bytes);
    void zero(Device& d);
private:
    Device* dev_ = nullptr;
    void* ptr_ = nullptr;
    std::size_t bytes_ = 0;
};

// The device's rows arena: one buffer of scratch that every block of the context shares for the calls
// that run their rows in bounded chunks (decode, the chunked inference forward). The stream runs one
// call at a time, so one call's scratch is dead when the next begins. rows_arena returns at least
// `bytes` (contents undefined), regrowing it when smaller; each regrowth bumps the generation, which
// a captured graph that used the arena compares at each replay. With HSPMN_POISON_SCRATCH=1 (tests) both
// arenas are filled with 0xFF bytes (NaN as bf16 and f32) each time one is handed out, on the stream, so
// a read of scratch that the call did not write shows as NaN.
char* rows_arena(Device& d, std::size_t bytes);
uint64_t rows_arena_generation(const Device& d);

// The device's training arena: the temporaries of a block backward (gradients of the activations,
// [N, D], [N, F] and [BC, D] pieces) and the pieces of a training forward that are dead once it ends
// (the f32 residual sum, K and Q before RoPE), shared by every block of the context for the same
// reason as the rows arena (one call at a time on the stream). Per block they would cost a model of L
// layers L copies of what one call needs at a time: about as much as the activations training keeps.
// No graph reads it (graphs record inference forwards), so a regrowth needs no generation.
// backward_partials: the column partials of the backward's weight-gradient reductions (the kernels
// grow it themselves), shared likewise.
char* training_arena(Device& d, std::size_t bytes);
DeviceBuffer& backward_partials(Device& d);
// aux_partials: the f64 partial sums of aux_loss (kernels/aux_loss.cu), 2 kAuxMaxBlocks doubles, made
// at the first call and never regrown, so a graph that records aux_loss keeps a valid address.
constexpr int64_t kAuxMaxBlocks = 1024;
double* aux_partials(Device& d);

enum class DType { BF16, F32 };

// Row-major GEMM on the context's stream through cuBLASLt, bf16 operands, fp32 accumulation:
//   C[M, N] = alpha * op(A) · op(B) + beta * C
//   op(A) is A [M, K] (trans_a = false) or A stored [K, M] (trans_a = true); likewise op(B) is
//   B [K, N] (trans_b = false) or B stored [N, K] (trans_b = true; the usual case, weights are [out, in]).
//   lda/ldb/ldc are row strides in elements of the stored matrices. C is bf16 or f32.
//   beta != 0 reads C (accumulation of weight gradients into f32).
// The algorithm is chosen once per shape and cached: by timing the heuristic's candidates on the first
// call outside a graph capture (which waits for the stream), or the heuristic's first answer
// (gemm_search.h; README.md "GEMM algorithms"). Every context of the process uses the same one.
void gemm(Device& d, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
          float alpha, const __nv_bfloat16* A, int64_t lda, const __nv_bfloat16* B, int64_t ldb,
          float beta, void* C, DType c_type, int64_t ldc);

// SQDK attention (native/kernels/triton/, AOT-compiled cubins loaded with the driver API), in the
// selected-rows layout every backend takes (core/attention_shape.h, the CPU op's too): q, o, k, v bf16,
// lse f32, pos and counts i32 on the device. Dh must be one the kernels were compiled for
// (attention_supports_head_dim).
using hspmn::AttentionShape;
bool attention_supports_head_dim(int64_t Dh);
// The device's Triton global scratch (null while no kernel asked for one). Every block shares it
// and a launch with a larger grid regrows it, so a captured graph compares it at each replay.
const void* triton_scratch(const Device& d);
void sqdk_attention_forward(Device& d, const AttentionShape& s, const __nv_bfloat16* q, const int32_t* pos,
                            const int32_t* counts, const __nv_bfloat16* k, const __nv_bfloat16* v,
                            __nv_bfloat16* o, float* lse);
// Backward: dq [B, C, H, Dh] bf16, dk/dv [B, S, Hkv, Dh] bf16 (overwritten), delta scratch inside.
// dk and dv rows (token by token) are dkv_stride elements apart: Hkv*Dh when contiguous, 2 Hkv*Dh for
// the block's [N, 2 Hkv*Dh] buffer with dv = dk + Hkv*Dh; a multiple of Dh, 16-byte aligned rows.
void sqdk_attention_backward(Device& d, const AttentionShape& s, const __nv_bfloat16* q, const int32_t* pos,
                             const int32_t* counts, const __nv_bfloat16* k, const __nv_bfloat16* v,
                             const __nv_bfloat16* o, const float* lse, const __nv_bfloat16* d_o,
                             __nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv, int64_t dkv_stride);

// swiglu_gemm: the gate and up GEMMs of the SwiGLU MLP with the activation in the epilogue, one kernel:
//   act = bf16(silu(bf16(c W_gate^T)) * bf16(c W_up^T)), float32 accumulation, the activation's
//   arithmetic swiglu_forward's; gate and up are written too when both are non-null (training), rows
//   ld_gu elements apart (0: F; a multiple of 8).
// c [N, D], w_gate and w_up [F, D], act [N, F], all bf16, contiguous, 16-byte aligned; N >= 0, D and F
// multiples of 8 (TMA rows), everything < 2^31. Two kernels: kWgmma, written by hand for sm_90a
// (sm90a/swiglu_gemm_wgmma.cu; built when HSPMN_CUDA_ARCHS holds 90), and kTriton
// (native/kernels/triton/swiglu_gemm.py, AOT-compiled like the attention; gate/up only as [N, F]).
// kAuto: kWgmma where it runs, else kTriton. swiglu_gemm_available: this library carries that kernel
// for d's architecture.
enum class SwigluGemmKernel { kAuto, kWgmma, kTriton };
bool swiglu_gemm_available(Device& d, SwigluGemmKernel k = SwigluGemmKernel::kAuto);
void swiglu_gemm(Device& d, int64_t N, int64_t D, int64_t F, const __nv_bfloat16* c, const __nv_bfloat16* w_gate,
                 const __nv_bfloat16* w_up, __nv_bfloat16* act, __nv_bfloat16* gate, __nv_bfloat16* up,
                 int64_t ld_gu = 0, SwigluGemmKernel k = SwigluGemmKernel::kAuto);
// Whether the block computes gate, up and act with swiglu_gemm's kWgmma kernel instead of a cuBLASLt
// GEMM and swiglu_forward (the same bits: native/reference/check_swiglu_gemm.py): the kernel runs here
// (sm_90), D and F are multiples of 8, every pointer is 16-byte aligned, and HSPMN_SWIGLU_GEMM (read at
// every call) is unset or 1 (0: never). From H100 timings (BENCHMARKS.md, 2026-12-07): faster in
// inference at every shape of issue 12's table and in the 1B LM's training step (swiglu_gemm.cpp).
bool swiglu_gemm_wanted(Device& d, int64_t D, int64_t F, std::initializer_list<const void*> pointers);

// swiglu_backward_gemm: the MLP backward's d_act GEMM with swiglu_backward in the epilogue, one kernel
// (swiglu_gemm's sm_90a kernel with its backward epilogue), so d_act never goes to memory:
//   d_act = bf16(alpha dm W_down) (f32 accumulation, alpha applied before the rounding, as cuBLASLt's),
//   dg, du = swiglu_backward(g, u, d_act) with swiglu_backward's arithmetic (kernels/swiglu.cu).
// dm [N, D]; w_down_t [F, D]: W_down ([D, F]) transposed (transpose_bf16), K-major like W_gate; g, u (the
// forward's gate and up) and dg, du rows of ld elements (a multiple of 8, >= F). All bf16, 16-byte
// aligned; N >= 0, D and F multiples of 8, everything < 2^31; sm_90 with the sm_90a kernel built
// (swiglu_gemm_available(d, kWgmma)), else HSPMN_ERR_BACKEND.
void swiglu_backward_gemm(Device& d, int64_t N, int64_t D, int64_t F, const __nv_bfloat16* dm,
                          const __nv_bfloat16* w_down_t, float alpha, const __nv_bfloat16* g, const __nv_bfloat16* u,
                          __nv_bfloat16* dg, __nv_bfloat16* du, int64_t ld);
// Whether the block's backward takes swiglu_backward_gemm (with W_down transposed into the d_act scratch
// it no longer needs) instead of a cuBLASLt GEMM into d_act and swiglu_backward (the same bits:
// native/reference/check_swiglu_gemm.py): the kernel runs here, D and F are multiples of 8, the pointers
// are 16-byte aligned, room (the scratch holds W_down^T), and HSPMN_SWIGLU_BACKWARD_GEMM (read at every
// call) is 1 (unset or 0: never; on an H100 the kernel ran at 0.76x the unfused path's speed, swiglu_gemm.cpp).
bool swiglu_backward_gemm_wanted(Device& d, int64_t D, int64_t F, bool room,
                                 std::initializer_list<const void*> pointers);

// down_residual: the MLP's down projection m = act W_down^T with the block's residual in the epilogue
// (sm90a/down_residual_wgmma.cu), so m never goes to memory: out[r] = bf16(m[r] + x[r]) for a row with
// row_slot[r] < 0, res_sel[q] = m[r] + x[r] (f32) for a row with slot q = row_slot[r] >= 0, to which
// residual_out_selected (kernels.h) adds o[q] once o exists. Together: residual_out's bits, with m's
// [N, D] f32 written and read by no one. row_slot null (with res_sel null): every row is of the first
// kind. act [N, F], w_down [D, F] (16-byte aligned: TMA), x and out [N, D] bf16 (4-byte aligned; out may
// be x), res_sel [*, D] f32 (8-byte aligned); N >= 0, D and F multiples of 8, all < 2^31.
// down_residual_available: this library carries the kernel for d's architecture (sm_90).
bool down_residual_available(Device& d);
void down_residual(Device& d, int64_t N, int64_t D, int64_t F, const __nv_bfloat16* act,
                   const __nv_bfloat16* w_down, const __nv_bfloat16* x, const int32_t* row_slot, __nv_bfloat16* out,
                   float* res_sel);
// Whether the block runs down_residual instead of a cuBLASLt GEMM into f32 m and residual_out: the kernel
// runs here, D and F are multiples of 8, the tma pointers are 16-byte aligned and the pairs pointers
// 8-byte aligned, and HSPMN_DOWN_RESIDUAL=1 (read at every call; unset or 0: never) asks for it. Off by
// default: slower than cuBLASLt + residual_out at the block's large shapes on an H100 (BENCHMARKS.md,
// 2026-12-07, fifteenth session).
bool down_residual_wanted(Device& d, int64_t D, int64_t F, std::initializer_list<const void*> tma,
                          std::initializer_list<const void*> pairs);

}  // namespace hspmn::cuda
