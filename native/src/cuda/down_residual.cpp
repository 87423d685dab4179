// runtime.h's down_residual: the MLP's down projection with the block's residual in the epilogue, through
// the hand-written sm_90a kernel (sm90a/down_residual_wgmma.cu), whose TMA descriptors are encoded here on
// every call. The checks below make every launch valid; a library built without sm_90a refuses.
#include "../core/env_choice.h"
#include "../core/error.h"
#include "device.h"
#include "driver_api.h"
#include "runtime.h"
#if HSPMN_SM90A
#include "sm90a/down_residual_wgmma.h"
#endif

namespace hspmn::cuda {

namespace {

constexpr int64_t kAlign = 8;  // D and F: TMA needs 16-byte row strides (8 bf16)

bool aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

void check_args(int64_t N, int64_t D, int64_t F, const void* act, const void* w_down, const void* x,
                const int32_t* row_slot, const void* out, const float* res_sel) {
    const int64_t lim = int64_t(1) << 31;
    if (N < 0 || D < kAlign || F < kAlign || D % kAlign || F % kAlign || N >= lim || D >= lim || F >= lim)
        fail(HSPMN_ERR_SHAPE,
             "down_residual: N %lld, D %lld, F %lld: N >= 0, D and F multiples of %lld (>= %lld), all < 2^31",
             static_cast<long long>(N), static_cast<long long>(D), static_cast<long long>(F),
             static_cast<long long>(kAlign), static_cast<long long>(kAlign));
    if (!act || !w_down || !x || !out)
        fail(HSPMN_ERR_INVALID_ARGUMENT, "down_residual: act, w_down, x and out must not be null");
    if ((row_slot == nullptr) != (res_sel == nullptr))
        fail(HSPMN_ERR_INVALID_ARGUMENT, "down_residual: row_slot and res_sel are both given or both null");
    if (!aligned(act, 16) || !aligned(w_down, 16))
        fail(HSPMN_ERR_INVALID_ARGUMENT, "down_residual: act and w_down must start 16-byte aligned (TMA)");
    if (!aligned(x, 4) || !aligned(out, 4) || !aligned(row_slot, 4) || !aligned(res_sel, 8))
        fail(HSPMN_ERR_INVALID_ARGUMENT,
             "down_residual: x and out must start 4-byte aligned, row_slot 4, res_sel 8 (pairs of columns)");
}

#if HSPMN_SM90A
// HSPMN_DOWN_RESIDUAL_CLUSTER (read at every call, for measurements): 2 (default) CTA pairs share each
// W_down tile through TMA multicast, 1 every CTA loads its own.
int wgmma_cluster() {
    return 1 + env_choice("HSPMN_DOWN_RESIDUAL_CLUSTER", {"1", "2"}, 1, "1 or 2 (CTAs sharing a W_down tile)");
}

// HSPMN_DOWN_RESIDUAL_GROUP and HSPMN_DOWN_RESIDUAL_L2 (read at every call, for measurements): the tile
// walk's group of units (2 by default) and the L2 hints (1: act evict-first, W_down evict-last; off by
// default). Group 2 without hints was the fastest of the 12 settings at N = 65,536 and 131,072 (H100,
// `down_residual_cuda --sweep`, BENCHMARKS.md 2026-12-07, seventeenth session): 0.94x / 0.96x the time
// of cuBLASLt's GEMM against 0.89x / 0.84x with the group of 16 before it; every hinted setting was slower.
int wgmma_group() {
    static constexpr int kGroups[] = {1, 2, 4, 8, 16, 32};
    return kGroups[env_choice("HSPMN_DOWN_RESIDUAL_GROUP", {"1", "2", "4", "8", "16", "32"}, 1,
                              "1, 2, 4, 8, 16 or 32 (units of row tiles walked together)")];
}
int wgmma_l2_hints() {
    return env_choice("HSPMN_DOWN_RESIDUAL_L2", {"0", "1"}, 0, "1 (act evicts first from L2, W_down last) or 0");
}
#endif

}  // namespace

bool down_residual_available(Device& d) { return HSPMN_SM90A && d.arch == 90; }

bool down_residual_wanted(Device& d, int64_t D, int64_t F, std::initializer_list<const void*> tma,
                          std::initializer_list<const void*> pairs) {
    // Unset: never. On an H100 (BENCHMARKS.md, 2026-12-07, fifteenth session) the kernel's main loop ran
    // at 575-644 TFLOP/s against cuBLASLt's 674-704, which costs more than the residual pass it saves at
    // N = 262,144 (0.935x) and in the block (B = 64, S = 4096: 5.608 M tok/s against 5.632-5.666 without).
    const int choice = env_choice("HSPMN_DOWN_RESIDUAL", {"0", "1"}, 0,
                                  "1 (the down GEMM with the residual in its epilogue, inference and training "
                                  "forwards) or 0 / unset (a cuBLASLt GEMM, then residual_out)");
    if (choice != 1 || D % kAlign || F % kAlign || !down_residual_available(d)) return false;
    for (const void* p : tma)
        if (!aligned(p, 16)) return false;
    for (const void* p : pairs)
        if (!aligned(p, 8)) return false;
    return true;
}

void down_residual(Device& d, int64_t N, int64_t D, int64_t F, const __nv_bfloat16* act,
                   const __nv_bfloat16* w_down, const __nv_bfloat16* x, const int32_t* row_slot, __nv_bfloat16* out,
                   float* res_sel) {
    check_args(N, D, F, act, w_down, x, row_slot, out, res_sel);
#if HSPMN_SM90A
    if (d.arch != 90)
        fail(HSPMN_ERR_BACKEND, "down_residual: the wgmma kernel runs on sm_90 only (this device is sm_%d)", d.arch);
    if (N == 0) return;
    const char* what = "down_residual: cuTensorMapEncodeTiled";
    const CUtensorMap ma = bf16_tensor_map(act, N, F, sm90a::down::kBlockM, sm90a::down::kBlockK, what);
    const CUtensorMap mw = bf16_tensor_map(w_down, D, F, sm90a::down::kBoxN, sm90a::down::kBlockK, what);
    check(sm90a::down::launch(stream(d), d.sm_count, wgmma_cluster(), d.down_residual_pairs, ma, mw,
                              static_cast<int>(N), static_cast<int>(D), static_cast<int>(F), x, row_slot, out, res_sel,
                              wgmma_group(), wgmma_l2_hints()),
          "down_residual (wgmma)");
#else
    (void)N, (void)D, (void)F, (void)act, (void)w_down, (void)x, (void)row_slot, (void)out, (void)res_sel;
    fail(HSPMN_ERR_BACKEND, "down_residual: this libhspmn has no sm_90a kernel (add 90 to HSPMN_CUDA_ARCHS); device "
         "sm_%d", d.arch);
#endif
}

}  // namespace hspmn::cuda
