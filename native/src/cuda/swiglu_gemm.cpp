// runtime.h's swiglu_gemm: the embedded Triton cubins swiglu_gemm_infer / swiglu_gemm_train
// (native/kernels/triton/aot_compile_swiglu_gemm.py), launched through triton_loader.h over one
// program per SM (the kernel is persistent: each program walks its share of the tiles).
#include <cstring>

#include "../core/error.h"
#include "device.h"
#include "triton_loader.h"

namespace hspmn::cuda {

namespace {

const char* const kInfer = "swiglu_gemm_infer";
const char* const kTrain = "swiglu_gemm_train";
constexpr int64_t kAlign = 8;  // D and F: TMA needs 16-byte row strides (8 bf16)

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The values the kernels take, by their Triton argument names.
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

void check(int64_t N, int64_t D, int64_t F, const void* c, const void* w_gate, const void* w_up, const void* act,
           const void* gate, const void* up) {
    const int64_t lim = int64_t(1) << 31;
    if (N < 0 || D < kAlign || F < kAlign || D % kAlign || F % kAlign || N >= lim || D >= lim || F >= lim)
        fail(HSPMN_ERR_SHAPE,
             "swiglu_gemm: N %lld, D %lld, F %lld: N >= 0, D and F multiples of %lld (>= %lld), all < 2^31",
             static_cast<long long>(N), static_cast<long long>(D), static_cast<long long>(F),
             static_cast<long long>(kAlign), static_cast<long long>(kAlign));
    if ((gate == nullptr) != (up == nullptr))
        fail(HSPMN_ERR_INVALID_ARGUMENT, "swiglu_gemm: gate and up are both given (training) or both null");
    if (!c || !w_gate || !w_up || !act)
        fail(HSPMN_ERR_INVALID_ARGUMENT, "swiglu_gemm: c, w_gate, w_up and act must not be null");
    for (const void* p : {c, w_gate, w_up, act, gate, up})
        if (p && !aligned16(p))
            fail(HSPMN_ERR_INVALID_ARGUMENT, "swiglu_gemm: every tensor must start 16-byte aligned (TMA)");
}

}  // namespace

bool swiglu_gemm_available(Device& d) {
    return triton_find(kInfer, 0, d.arch) != nullptr && triton_find(kTrain, 0, d.arch) != nullptr;
}

void swiglu_gemm(Device& d, int64_t N, int64_t D, int64_t F, const __nv_bfloat16* c, const __nv_bfloat16* w_gate,
                 const __nv_bfloat16* w_up, __nv_bfloat16* act, __nv_bfloat16* gate, __nv_bfloat16* up) {
    check(N, D, F, c, w_gate, w_up, act, gate, up);
    const bool train = gate != nullptr;
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

}  // namespace hspmn::cuda
