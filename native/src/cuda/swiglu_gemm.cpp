// runtime.h's swiglu_gemm, two kernels behind one op (and swiglu_backward_gemm, the sm_90a kernel's
// backward launch, at the end):
//  - kWgmma: the hand-written sm_90a kernel (sm90a/swiglu_gemm_wgmma.cu), whose TMA descriptors are
//    encoded here through the driver API on every call (a host-side encode of 128 bytes each);
//  - kTriton: the embedded Triton cubins swiglu_gemm_infer / swiglu_gemm_train
//    (native/kernels/triton/aot_compile_swiglu_gemm.py), launched through triton_loader.h over one
//    program per SM (the kernel is persistent: each program walks its share of the tiles).
#include <cmath>
#include <cstring>

#include "../core/env_choice.h"
#include "../core/error.h"
#include "device.h"
#include "driver_api.h"
#include "triton_loader.h"
#if HSPMN_SM90A
#include "sm90a/swiglu_gemm_wgmma.h"
#endif

namespace hspmn::cuda {

namespace {

const char* const kInfer = "swiglu_gemm_infer";
const char* const kTrain = "swiglu_gemm_train";
constexpr int64_t kAlign = 8;  // D and F: TMA needs 16-byte row strides (8 bf16)

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The values the Triton kernels take, by their argument names.
struct Bindings {
    const void* X = nullptr, *WG = nullptr, *WU = nullptr, *ACT = nullptr, *GATE = nullptr, *UP = nullptr;
    int32_t N = 0, F = 0, D = 0;

    void* slot(const char* n, int size) {
        struct P { const char* name; const void** ptr; };
        const P ptrs[] = {{"X", &X}, {"WG", &WG}, {"WU", &WU}, {"ACT", &ACT}, {"GATE", &GATE}, {"UP", &UP}};
        for (const P& p : ptrs)
            if (std::strcmp(p.name, n) == 0 && size == 8) return p.ptr;
        struct I { const char* name; int32_t* v; };
        const I ints[] = {{"N", &N}, {"F", &F}, {"D", &D}};
        for (const I& i : ints)
            if (std::strcmp(i.name, n) == 0 && size == 4) return i.v;
        fail(HSPMN_ERR_INTERNAL, "swiglu_gemm: kernel argument %s of %d bytes is unknown to the launcher", n, size);
    }
};

constexpr int64_t kLimit = int64_t(1) << 31;

// N >= 0, D and F multiples of kAlign (TMA rows), everything < 2^31 (the kernels' int indices).
void check_dims(const char* op, int64_t N, int64_t D, int64_t F) {
    if (N < 0 || D < kAlign || F < kAlign || D % kAlign || F % kAlign || N >= kLimit || D >= kLimit || F >= kLimit)
        fail(HSPMN_ERR_SHAPE, "%s: N %lld, D %lld, F %lld: N >= 0, D and F multiples of %lld (>= %lld), all < 2^31",
             op, static_cast<long long>(N), static_cast<long long>(D), static_cast<long long>(F),
             static_cast<long long>(kAlign), static_cast<long long>(kAlign));
}

void check_args(int64_t N, int64_t D, int64_t F, const void* c, const void* w_gate, const void* w_up, const void* act,
           const void* gate, const void* up, int64_t ld_gu) {
    check_dims("swiglu_gemm", N, D, F);
    if ((gate == nullptr) != (up == nullptr))
        fail(HSPMN_ERR_INVALID_ARGUMENT, "swiglu_gemm: gate and up are both given (training) or both null");
    if (!c || !w_gate || !w_up || !act)
        fail(HSPMN_ERR_INVALID_ARGUMENT, "swiglu_gemm: c, w_gate, w_up and act must not be null");
    for (const void* p : {c, w_gate, w_up, act, gate, up})
        if (p && !aligned16(p))
            fail(HSPMN_ERR_INVALID_ARGUMENT, "swiglu_gemm: every tensor must start 16-byte aligned (TMA)");
    if (gate && (ld_gu < F || ld_gu % kAlign || ld_gu >= kLimit))
        fail(HSPMN_ERR_SHAPE, "swiglu_gemm: gate/up row stride %lld: a multiple of 8, >= F (%lld), < 2^31",
             static_cast<long long>(ld_gu), static_cast<long long>(F));
}

void triton_swiglu_gemm(Device& d, int64_t N, int64_t D, int64_t F, const __nv_bfloat16* c,
                        const __nv_bfloat16* w_gate, const __nv_bfloat16* w_up, __nv_bfloat16* act,
                        __nv_bfloat16* gate, __nv_bfloat16* up, int64_t ld_gu) {
    const bool train = gate != nullptr;
    if (train && ld_gu != F)
        fail(HSPMN_ERR_INVALID_ARGUMENT, "swiglu_gemm: the Triton kernel writes gate and up as [N, F] (stride %lld "
             "given)", static_cast<long long>(ld_gu));
    const char* name = train ? kTrain : kInfer;
    const TritonLoaded* l = triton_loaded(d, name, 0);
    if (!l)
        fail(HSPMN_ERR_BACKEND, "swiglu_gemm: no %s kernel for sm_%d in this libhspmn (kernels built for %s)", name,
             d.arch, triton_built_archs().c_str());
    if (N == 0) return;
    Bindings b;
    b.X = c;
    b.WG = w_gate;
    b.WU = w_up;
    b.ACT = act;
    b.GATE = train ? gate : act;  // the inference kernel takes them but never reads them
    b.UP = train ? up : act;
    b.N = static_cast<int32_t>(N);
    b.F = static_cast<int32_t>(F);
    b.D = static_cast<int32_t>(D);
    triton_launch(d, *l, d.sm_count, 1, [&b](const char* n, int size) { return b.slot(n, size); }, name);
}

#if HSPMN_SM90A
// HSPMN_SWIGLU_GEMM_CLUSTER (read at every call, for measurements): 2 (default) CTA pairs share each
// W tile through TMA multicast, 1 every CTA loads its own.
int wgmma_cluster() {
    return 1 + env_choice("HSPMN_SWIGLU_GEMM_CLUSTER", {"1", "2"}, 1, "1 or 2 (CTAs sharing a W tile)");
}

CUtensorMap tensor_map(const void* base, int64_t rows, int64_t cols, int box_rows) {
    return bf16_tensor_map(base, rows, cols, box_rows, sm90a::kBlockK, "swiglu_gemm: cuTensorMapEncodeTiled");
}
#endif

// Fails (HSPMN_ERR_BACKEND) unless this library carries the sm_90a kernel and d is an sm_90 device.
void require_wgmma(Device& d, const char* op) {
#if HSPMN_SM90A
    if (d.arch != 90)
        fail(HSPMN_ERR_BACKEND, "%s: the wgmma kernel runs on sm_90 only (this device is sm_%d)", op, d.arch);
#else
    fail(HSPMN_ERR_BACKEND, "%s: this libhspmn has no sm_90a kernel (built for %s; add 90 to HSPMN_CUDA_ARCHS); "
         "device sm_%d", op, triton_built_archs().c_str(), d.arch);
#endif
}

// Where the block may take the sm_90a kernel: it runs on d, D and F are TMA rows, every pointer is
// 16-byte aligned (swiglu_gemm_wanted and swiglu_backward_gemm_wanted add their own switches).
bool wgmma_fits(Device& d, int64_t D, int64_t F, std::initializer_list<const void*> pointers) {
    if (D % kAlign || F % kAlign || !swiglu_gemm_available(d, SwigluGemmKernel::kWgmma)) return false;
    for (const void* p : pointers)
        if (!aligned16(p)) return false;
    return true;
}

void wgmma_swiglu_gemm(Device& d, int64_t N, int64_t D, int64_t F, const __nv_bfloat16* c,
                       const __nv_bfloat16* w_gate, const __nv_bfloat16* w_up, __nv_bfloat16* act,
                       __nv_bfloat16* gate, __nv_bfloat16* up, int64_t ld_gu) {
    require_wgmma(d, "swiglu_gemm");
#if HSPMN_SM90A
    if (N == 0) return;
    const CUtensorMap mc = tensor_map(c, N, D, sm90a::kBlockM);
    const CUtensorMap mg = tensor_map(w_gate, F, D, sm90a::kBlockF);
    const CUtensorMap mu = tensor_map(w_up, F, D, sm90a::kBlockF);
    check(sm90a::launch(stream(d), d.sm_count, wgmma_cluster(), d.swiglu_gemm_pairs, mc, mg, mu,
                        static_cast<int>(N), static_cast<int>(F), static_cast<int>(D), act, gate, up,
                        gate ? ld_gu : F),
          "swiglu_gemm (wgmma)");
#else
    (void)N, (void)D, (void)F, (void)c, (void)w_gate, (void)w_up, (void)act, (void)gate, (void)up, (void)ld_gu;
#endif
}

void check_backward_args(int64_t N, int64_t D, int64_t F, const void* dm, const void* w_down_t, float alpha,
                         const void* g, const void* u, const void* dg, const void* du, int64_t ld) {
    check_dims("swiglu_backward_gemm", N, D, F);
    if (ld < F || ld % kAlign || ld >= kLimit)
        fail(HSPMN_ERR_SHAPE, "swiglu_backward_gemm: row stride %lld: a multiple of 8, >= F (%lld), < 2^31",
             static_cast<long long>(ld), static_cast<long long>(F));
    for (const void* p : {dm, w_down_t, g, u, dg, du}) {
        if (!p) fail(HSPMN_ERR_INVALID_ARGUMENT, "swiglu_backward_gemm: dm, w_down_t, g, u, dg and du must not be null");
        if (!aligned16(p))
            fail(HSPMN_ERR_INVALID_ARGUMENT, "swiglu_backward_gemm: every tensor must start 16-byte aligned (TMA)");
    }
    if (!std::isfinite(alpha))
        fail(HSPMN_ERR_INVALID_ARGUMENT, "swiglu_backward_gemm: alpha (%g) must be finite", static_cast<double>(alpha));
}

}  // namespace

bool swiglu_gemm_available(Device& d, SwigluGemmKernel k) {
    const bool wgmma = HSPMN_SM90A && d.arch == 90;
    const bool triton = triton_find(kInfer, 0, d.arch) != nullptr && triton_find(kTrain, 0, d.arch) != nullptr;
    switch (k) {
        case SwigluGemmKernel::kWgmma: return wgmma;
        case SwigluGemmKernel::kTriton: return triton;
        case SwigluGemmKernel::kAuto: return wgmma || triton;
    }
    return false;
}

bool swiglu_gemm_wanted(Device& d, int64_t D, int64_t F, std::initializer_list<const void*> pointers) {
    // Unset or 1: inference and training forwards. The 4-stage kernel's training launch (which also
    // writes gate | up) takes 0.87-0.99x the time of cuBLASLt + swiglu_forward on an H100, and the 1B LM
    // step ran 0.9 % faster with it in three pairs of runs (BENCHMARKS.md, 2026-12-07, sixteenth session;
    // with the 3-stage kernel before it the step lost, thirteenth session).
    const int choice = env_choice("HSPMN_SWIGLU_GEMM", {"0", "1"}, 1,
                                  "1 or unset (gate, up and act in one kernel, inference and training) or 0 "
                                  "(a cuBLASLt GEMM, then swiglu_forward)");
    return choice == 1 && wgmma_fits(d, D, F, pointers);
}

void swiglu_gemm(Device& d, int64_t N, int64_t D, int64_t F, const __nv_bfloat16* c, const __nv_bfloat16* w_gate,
                 const __nv_bfloat16* w_up, __nv_bfloat16* act, __nv_bfloat16* gate, __nv_bfloat16* up,
                 int64_t ld_gu, SwigluGemmKernel k) {
    if (ld_gu == 0) ld_gu = F;
    check_args(N, D, F, c, w_gate, w_up, act, gate, up, ld_gu);
    if (k == SwigluGemmKernel::kAuto)
        k = swiglu_gemm_available(d, SwigluGemmKernel::kWgmma) ? SwigluGemmKernel::kWgmma : SwigluGemmKernel::kTriton;
    if (k == SwigluGemmKernel::kWgmma)
        wgmma_swiglu_gemm(d, N, D, F, c, w_gate, w_up, act, gate, up, ld_gu);
    else
        triton_swiglu_gemm(d, N, D, F, c, w_gate, w_up, act, gate, up, ld_gu);
}

void swiglu_backward_gemm(Device& d, int64_t N, int64_t D, int64_t F, const __nv_bfloat16* dm,
                          const __nv_bfloat16* w_down_t, float alpha, const __nv_bfloat16* g, const __nv_bfloat16* u,
                          __nv_bfloat16* dg, __nv_bfloat16* du, int64_t ld) {
    check_backward_args(N, D, F, dm, w_down_t, alpha, g, u, dg, du, ld);
    require_wgmma(d, "swiglu_backward_gemm");
#if HSPMN_SM90A
    if (N == 0) return;
    const CUtensorMap mdm = tensor_map(dm, N, D, sm90a::kBlockM);
    const CUtensorMap mwt = tensor_map(w_down_t, F, D, sm90a::kBlockF);
    check(sm90a::launch_backward(stream(d), d.sm_count, wgmma_cluster(), d.swiglu_gemm_pairs, mdm, mwt,
                                 static_cast<int>(N), static_cast<int>(F), static_cast<int>(D), alpha, g, u, dg, du,
                                 ld),
          "swiglu_backward_gemm (wgmma)");
#else
    (void)dm, (void)w_down_t, (void)alpha, (void)g, (void)u, (void)dg, (void)du;
#endif
}

bool swiglu_backward_gemm_wanted(Device& d, int64_t D, int64_t F, bool room,
                                 std::initializer_list<const void*> pointers) {
    // 1: the fused backward. Unset or 0: on an H100 it ran at 0.76x the unfused path's speed at N = 16,384
    // and the training step lost (BENCHMARKS.md, 2026-12-07, seventeenth session): its three epilogue warps
    // wait on their gate/up loads (twice the forward's values per MMA, and two loads besides).
    const int choice = env_choice("HSPMN_SWIGLU_BACKWARD_GEMM", {"0", "1"}, 0,
                                  "0 or unset (a cuBLASLt GEMM into d_act, then swiglu_backward) or 1 (d_gate and "
                                  "d_up from the d_act GEMM's epilogue)");
    return choice == 1 && room && wgmma_fits(d, D, F, pointers);
}

}  // namespace hspmn::cuda
