// runtime.h's sqdk_attention: launches the embedded Triton cubins (triton_loader.h) with the
// driver API. Arguments are bound by name from the metadata, so a reordered or extended kernel
// signature needs no change here as long as every argument is one we know.
#include <cstdint>
#include <cstring>

#include "../core/error.h"
#include "device.h"
#include "triton_loader.h"

namespace hspmn::cuda {

namespace {

const char* const kFwd = "sqdk_attention_fwd";
// The forward compiled with a smaller query tile for small grids, where built (Dh 128: 128 rows
// against the 256 of kFwd; sqdk_attention.py's TILES says why): see forward_kernel below.
const char* const kFwdFew = "sqdk_attention_fwd_few";
// kFwd's grid must give every SM at least kFwdMinPerSm programs for kFwd to run, or kFwdMinPerSmLong
// when the sequences have kFwdLongSeq keys or more (long key ranges amortise the 256-row tile's
// spills and wider masked diagonal); else kFwdFew. The numbers sit between timed shapes (BENCHMARKS.md,
// "two Gluon forwards, and the forward tile's boundary"). sqdk_attention.py's torch launcher applies
// the same rule (FWD_MIN_PROGRAMS_PER_SM, FWD_MIN_PROGRAMS_PER_SM_LONG, FWD_LONG_SEQ: held equal to
// these by test_sqdk_interpret.py).
constexpr int64_t kFwdMinPerSm = 4;
constexpr int64_t kFwdMinPerSmLong = 2;
constexpr int64_t kFwdLongSeq = 24576;
const char* const kPre = "sqdk_attention_bwd_preprocess";
const char* const kDkdv = "sqdk_attention_bwd_dkdv";
const char* const kDq = "sqdk_attention_bwd_dq";
const char* const kAll[] = {kFwd, kPre, kDkdv, kDq};

const TritonLoaded& kernel(Device& d, const char* name, int64_t head_dim) {
    if (const TritonLoaded* l = triton_loaded(d, name, head_dim)) return *l;
    fail(HSPMN_ERR_BACKEND,
         "sqdk_attention: no %s kernel for head dim %lld on sm_%d in this libhspmn (kernels built for %s; "
         "rebuild with -DHSPMN_CUDA_ARCHS=%d)",
         name, static_cast<long long>(head_dim), d.arch, triton_built_archs().c_str(), d.arch);
}

// The values a kernel may take, by the Triton argument name.
struct Bindings {
    const void* Q = nullptr, *K = nullptr, *V = nullptr, *O = nullptr, *Lse = nullptr, *Pos = nullptr,
                *Counts = nullptr, *DO = nullptr, *DQ = nullptr, *DK = nullptr, *DV = nullptr, *Delta = nullptr;
    int32_t C = 0, S = 0, H = 0, HKV = 0, HEAD_DIM = 0, DKV_STRIDE = 0;

    void* slot(const char* n, int size) {
        struct P { const char* name; const void* const* ptr; };
        const P ptrs[] = {{"Q", &Q},   {"K", &K},           {"V", &V},           {"O", &O},
                          {"Lse", &Lse}, {"Pos", &Pos},     {"Counts", &Counts}, {"DO", &DO},
                          {"DQ", &DQ}, {"DK", &DK},         {"DV", &DV},         {"Delta", &Delta}};
        for (const P& p : ptrs)
            if (std::strcmp(p.name, n) == 0 && size == 8) return const_cast<const void**>(p.ptr);
        struct I { const char* name; int32_t* v; };
        const I ints[] = {{"C", &C}, {"S", &S}, {"H", &H}, {"HKV", &HKV}, {"HEAD_DIM", &HEAD_DIM},
                          {"DKV_STRIDE", &DKV_STRIDE}};
        for (const I& i : ints)
            if (std::strcmp(i.name, n) == 0 && size == 4) return i.v;
        fail(HSPMN_ERR_INTERNAL, "sqdk_attention: kernel argument %s of %d bytes is unknown to the launcher", n, size);
    }
};

struct Grid {
    int64_t x, y;
};

Grid grid_of(const TritonKernel& k, const AttentionShape& s) {
    const int64_t extent = k.grid_x_extent == 'S'   ? s.S
                           : k.grid_x_extent == 'G' ? s.C * (s.H / s.Hkv)  // query slot and head pairs of a kv group
                                                    : s.C;
    return {(extent + k.grid_x_tile - 1) / k.grid_x_tile, s.B * (k.grid_y_kv_heads ? s.Hkv : s.H)};
}

// kFwd, or kFwdFew where it is built and kFwd's grid would leave SMs short of programs (few query
// slots: decode steps, short prompts, where most of a 256-row tile would also be empty rows).
const TritonLoaded& forward_kernel(Device& d, const AttentionShape& s) {
    const TritonLoaded& fwd = kernel(d, kFwd, s.Dh);
    const TritonLoaded* few = triton_loaded(d, kFwdFew, s.Dh);
    if (!few) return fwd;
    const Grid g = grid_of(*fwd.meta, s);
    const int64_t per_sm = s.S >= kFwdLongSeq ? kFwdMinPerSmLong : kFwdMinPerSm;
    return g.x * g.y < per_sm * d.sm_count ? *few : fwd;
}

void launch(Device& d, const TritonLoaded& l, const AttentionShape& s, Bindings& b) {
    const Grid g = grid_of(*l.meta, s);
    if (g.x == 0 || g.y == 0) return;
    if (g.y > 65535)
        fail(HSPMN_ERR_SHAPE, "sqdk_attention: grid (%lld, %lld) exceeds CUDA's limits (B * heads must be <= 65535)",
             static_cast<long long>(g.x), static_cast<long long>(g.y));
    triton_launch(d, l, g.x, g.y, [&b](const char* n, int size) { return b.slot(n, size); }, l.meta->kernel);
}

void launch(Device& d, const char* name, const AttentionShape& s, Bindings& b) {
    launch(d, kernel(d, name, s.Dh), s, b);
}

void check_shape(const AttentionShape& s) {
    if (!attention_supports_head_dim(s.Dh))
        fail(HSPMN_ERR_SHAPE,
             "sqdk_attention: head dim %lld has no compiled kernel (the Triton kernels take even head dims 8..128)",
             static_cast<long long>(s.Dh));
    if (s.Hkv <= 0 || s.H % s.Hkv != 0)
        fail(HSPMN_ERR_SHAPE, "sqdk_attention: H (%lld) must be a multiple of Hkv (%lld)", static_cast<long long>(s.H),
             static_cast<long long>(s.Hkv));
    // The kernels index within one sequence in int32 (native/kernels/triton/README.md).
    const int64_t lim = int64_t(1) << 31;
    if (s.C * s.H * s.Dh >= lim || s.S * s.Hkv * s.Dh >= lim || s.H * s.C >= lim)
        fail(HSPMN_ERR_SHAPE, "sqdk_attention: one sequence (C %lld, S %lld) exceeds the kernels' int32 indexing",
             static_cast<long long>(s.C), static_cast<long long>(s.S));
}

Bindings bind(const AttentionShape& s) {
    Bindings b;
    b.C = static_cast<int32_t>(s.C);
    b.S = static_cast<int32_t>(s.S);
    b.H = static_cast<int32_t>(s.H);
    b.HKV = static_cast<int32_t>(s.Hkv);
    b.HEAD_DIM = static_cast<int32_t>(s.Dh);  // read by the padded variants only
    return b;
}

}  // namespace

const void* triton_scratch(const Device& d) { return d.triton_scratch.data(); }

bool attention_supports_head_dim(int64_t Dh) {
    for (const char* k : kAll)
        if (!triton_find(k, Dh, -1)) return false;
    return true;
}

void sqdk_attention_forward(Device& d, const AttentionShape& s, const __nv_bfloat16* q, const int32_t* pos,
                            const int32_t* counts, const __nv_bfloat16* k, const __nv_bfloat16* v,
                            __nv_bfloat16* o, float* lse) {
    check_shape(s);
    Bindings b = bind(s);
    b.Q = q;
    b.Pos = pos;
    b.Counts = counts;
    b.K = k;
    b.V = v;
    b.O = o;
    b.Lse = lse;
    launch(d, forward_kernel(d, s), s, b);
}

void sqdk_attention_backward(Device& d, const AttentionShape& s, const __nv_bfloat16* q, const int32_t* pos,
                             const int32_t* counts, const __nv_bfloat16* k, const __nv_bfloat16* v,
                             const __nv_bfloat16* o, const float* lse, const __nv_bfloat16* d_o,
                             __nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv, int64_t dkv_stride) {
    check_shape(s);
    // The dkdv kernels are compiled for a stride that is a multiple of 16 (exact head dims) or 2
    // (padded), and 16-byte aligned pointers, of which the padded ones use 4 bytes (aot_compile.py).
    const int64_t kv = s.Hkv * s.Dh;
    const std::uintptr_t align = (s.Dh & (s.Dh - 1)) == 0 ? 16 : 4;
    if (dkv_stride < kv || dkv_stride % s.Dh != 0 || s.S * dkv_stride >= (int64_t(1) << 31) ||
        reinterpret_cast<std::uintptr_t>(dk) % align != 0 || reinterpret_cast<std::uintptr_t>(dv) % align != 0)
        fail(HSPMN_ERR_INTERNAL, "sqdk_attention_backward: dk/dv row stride %lld (Hkv*Dh %lld, Dh %lld, S %lld) or "
             "their alignment is not one the kernels take", static_cast<long long>(dkv_stride),
             static_cast<long long>(kv), static_cast<long long>(s.Dh), static_cast<long long>(s.S));
    d.attention_delta.ensure(d, static_cast<std::size_t>(s.B * s.H * s.C) * sizeof(float));
    Bindings b = bind(s);
    b.Q = q;
    b.Pos = pos;
    b.Counts = counts;
    b.K = k;
    b.V = v;
    b.O = o;
    b.Lse = lse;
    b.DO = d_o;
    b.DQ = dq;
    b.DK = dk;
    b.DV = dv;
    b.DKV_STRIDE = static_cast<int32_t>(dkv_stride);
    b.Delta = d.attention_delta.data();
    launch(d, kPre, s, b);   // delta = rowsum(dO * O), read by both of the next two
    launch(d, kDkdv, s, b);
    launch(d, kDq, s, b);
}

}  // namespace hspmn::cuda
