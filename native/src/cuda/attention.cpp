// runtime.h's sqdk_attention: launches the embedded Triton cubins (triton_kernels.h) with the
// driver API. Arguments are bound by name from the metadata, so a reordered or extended kernel
// signature needs no change here as long as every argument is one we know.
#include <cstring>
#include <vector>

#include "../core/error.h"
#include "device.h"
#include "driver_api.h"
#include "triton_kernels.h"

namespace hspmn::cuda {

namespace {

const char* const kFwd = "sqdk_attention_fwd";
const char* const kPre = "sqdk_attention_bwd_preprocess";
const char* const kDkdv = "sqdk_attention_bwd_dkdv";
const char* const kDq = "sqdk_attention_bwd_dq";
const char* const kAll[] = {kFwd, kPre, kDkdv, kDq};

struct Loaded {
    const TritonKernel* meta;
    CUmodule module;
    CUfunction fn;
};

bool serves(const TritonKernel& k, int64_t head_dim) {
    return head_dim >= k.head_dim_min && head_dim <= k.head_dim_max && (head_dim - k.head_dim_min) % k.head_dim_step == 0;
}

// Of two kernels serving a head dim, the one serving fewest: an exact variant (its head dim
// compiled in, no column mask) over the padded one of the same tile width.
bool narrower(const TritonKernel& a, const TritonKernel* b) {
    return b == nullptr || a.head_dim_max - a.head_dim_min < b->head_dim_max - b->head_dim_min;
}

const TritonKernel* find(const char* kernel, int64_t head_dim, int arch) {
    const TritonKernel* best = nullptr;
    for (int i = 0; i < kTritonKernelCount; ++i) {
        const TritonKernel& k = kTritonKernels[i];
        if (std::strcmp(k.kernel, kernel) == 0 && serves(k, head_dim) && (arch < 0 || k.arch == arch) &&
            narrower(k, best))
            best = &k;
    }
    return best;
}

std::string built_archs() {
    std::string s;
    for (int i = 0; i < kTritonKernelCount; ++i) {
        std::string a = "sm_" + std::to_string(kTritonKernels[i].arch);
        if (s.find(a) == std::string::npos) s += (s.empty() ? "" : ", ") + a;
    }
    return s.empty() ? "none" : s;
}

}  // namespace

struct TritonModules : Tracked {
    std::vector<Loaded, TrackedAllocator<Loaded>> kernels;
};

void unload_triton(Device& d) noexcept {
    if (!d.triton) return;
    for (const Loaded& l : d.triton->kernels) (void)driver_api().module_unload(l.module);
    delete d.triton;
    d.triton = nullptr;
}

namespace {

// Loads every cubin built for this device's architecture on first use; a failure leaves nothing
// loaded, so the next call retries.
const Loaded& kernel(Device& d, const char* name, int64_t head_dim) {
    std::lock_guard<std::mutex> lock(d.triton_mutex);
    if (!d.triton) {
        const DriverApi& api = driver_api();
        TritonModules* mods = new TritonModules();
        try {
            for (int i = 0; i < kTritonKernelCount; ++i) {
                const TritonKernel& k = kTritonKernels[i];
                if (k.arch != d.arch) continue;
                Loaded l{&k, nullptr, nullptr};
                check_cu(api.module_load_data(&l.module, k.cubin), "cuModuleLoadData (sqdk_attention)");
                mods->kernels.push_back(l);
                check_cu(api.module_get_function(&mods->kernels.back().fn, l.module, k.symbol), "cuModuleGetFunction");
                if (k.shared_bytes > 48 * 1024)
                    check_cu(api.func_set_attribute(mods->kernels.back().fn,
                                                    CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, k.shared_bytes),
                             "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)");
            }
        } catch (...) {
            for (const Loaded& l : mods->kernels) (void)api.module_unload(l.module);
            delete mods;
            throw;
        }
        d.triton = mods;
    }
    const Loaded* best = nullptr;
    for (const Loaded& l : d.triton->kernels)
        if (serves(*l.meta, head_dim) && std::strcmp(l.meta->kernel, name) == 0 &&
            narrower(*l.meta, best ? best->meta : nullptr))
            best = &l;
    if (best) return *best;
    fail(HSPMN_ERR_BACKEND,
         "sqdk_attention: no %s kernel for head dim %lld on sm_%d in this libhspmn (kernels built for %s; "
         "rebuild with -DHSPMN_CUDA_ARCHS=%d)",
         name, static_cast<long long>(head_dim), d.arch, built_archs().c_str(), d.arch);
}

// The values a kernel may take, by the Triton argument name.
struct Bindings {
    const void* Q = nullptr, *K = nullptr, *V = nullptr, *O = nullptr, *Lse = nullptr, *Pos = nullptr,
                *Counts = nullptr, *DO = nullptr, *DQ = nullptr, *DK = nullptr, *DV = nullptr, *Delta = nullptr;
    int32_t C = 0, S = 0, H = 0, HKV = 0, HEAD_DIM = 0;
    const void* global_scratch = nullptr;
    const void* profile_scratch = nullptr;

    void* slot(const char* n, int size) {
        struct P { const char* name; const void* const* ptr; };
        const P ptrs[] = {{"Q", &Q},   {"K", &K},           {"V", &V},           {"O", &O},
                          {"Lse", &Lse}, {"Pos", &Pos},     {"Counts", &Counts}, {"DO", &DO},
                          {"DQ", &DQ}, {"DK", &DK},         {"DV", &DV},         {"Delta", &Delta},
                          {"global_scratch", &global_scratch}, {"profile_scratch", &profile_scratch}};
        for (const P& p : ptrs)
            if (std::strcmp(p.name, n) == 0 && size == 8) return const_cast<const void**>(p.ptr);
        struct I { const char* name; int32_t* v; };
        const I ints[] = {{"C", &C}, {"S", &S}, {"H", &H}, {"HKV", &HKV}, {"HEAD_DIM", &HEAD_DIM}};
        for (const I& i : ints)
            if (std::strcmp(i.name, n) == 0 && size == 4) return i.v;
        fail(HSPMN_ERR_INTERNAL, "sqdk_attention: kernel argument %s of %d bytes is unknown to the launcher", n, size);
    }
};

void launch(Device& d, const char* name, const AttentionShape& s, Bindings& b) {
    const Loaded& l = kernel(d, name, s.Dh);
    const TritonKernel& k = *l.meta;
    const int64_t extent = k.grid_x_extent == 'S' ? s.S : s.C;
    const int64_t gx = (extent + k.grid_x_tile - 1) / k.grid_x_tile;
    const int64_t gy = s.B * (k.grid_y_kv_heads ? s.Hkv : s.H);
    if (gx == 0 || gy == 0) return;
    if (gy > 65535 || gx > 2147483647)
        fail(HSPMN_ERR_SHAPE, "sqdk_attention: grid (%lld, %lld) exceeds CUDA's limits (B * heads must be <= 65535)",
             static_cast<long long>(gx), static_cast<long long>(gy));
    b.global_scratch = nullptr;
    b.profile_scratch = nullptr;
    if (k.global_scratch_size > 0) {
        d.triton_scratch.ensure(d, static_cast<std::size_t>(gx * gy * k.global_scratch_size));
        b.global_scratch = d.triton_scratch.data();
    }
    if (k.profile_scratch_size > 0) {
        d.triton_scratch.ensure(d, static_cast<std::size_t>(gx * gy * (k.global_scratch_size + k.profile_scratch_size)));
        b.profile_scratch = static_cast<char*>(d.triton_scratch.data()) + gx * gy * k.global_scratch_size;
    }
    void* params[32];
    if (k.num_args > 32) fail(HSPMN_ERR_INTERNAL, "sqdk_attention: %s takes %d arguments", name, k.num_args);
    for (int i = 0; i < k.num_args; ++i) params[i] = b.slot(k.args[i].name, k.args[i].size);
    check_cu(driver_api().launch_kernel(l.fn, static_cast<unsigned>(gx), static_cast<unsigned>(gy), 1,
                                        static_cast<unsigned>(k.block_x), 1, 1, static_cast<unsigned>(k.shared_bytes),
                                        reinterpret_cast<CUstream>(d.stream), params, nullptr),
             name);
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
        if (!find(k, Dh, -1)) return false;
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
    launch(d, kFwd, s, b);
}

void sqdk_attention_backward(Device& d, const AttentionShape& s, const __nv_bfloat16* q, const int32_t* pos,
                             const int32_t* counts, const __nv_bfloat16* k, const __nv_bfloat16* v,
                             const __nv_bfloat16* o, const float* lse, const __nv_bfloat16* d_o,
                             __nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv) {
    check_shape(s);
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
    b.Delta = d.attention_delta.data();
    launch(d, kPre, s, b);   // delta = rowsum(dO * O), read by both of the next two
    launch(d, kDkdv, s, b);
    launch(d, kDq, s, b);
}

}  // namespace hspmn::cuda
