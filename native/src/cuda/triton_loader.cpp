// triton_loader.h: the embedded cubins, loaded per device on first use and launched by argument name.
#include "triton_loader.h"

#include <cstring>
#include <vector>

#include "../core/error.h"

namespace hspmn::cuda {

namespace {

bool serves(const TritonKernel& k, int64_t head_dim) {
    return head_dim >= k.head_dim_min && head_dim <= k.head_dim_max && (head_dim - k.head_dim_min) % k.head_dim_step == 0;
}

// Of two kernels serving a head dim, the one serving fewest: an exact variant (its head dim
// compiled in, no column mask) over the padded one of the same tile width.
bool narrower(const TritonKernel& a, const TritonKernel* b) {
    return b == nullptr || a.head_dim_max - a.head_dim_min < b->head_dim_max - b->head_dim_min;
}

}  // namespace

const TritonKernel* triton_find(const char* name, int64_t head_dim, int arch) {
    const TritonKernel* best = nullptr;
    for (int i = 0; i < kTritonKernelCount; ++i) {
        const TritonKernel& k = kTritonKernels[i];
        if (std::strcmp(k.kernel, name) == 0 && serves(k, head_dim) && (arch < 0 || k.arch == arch) &&
            narrower(k, best))
            best = &k;
    }
    return best;
}

std::string triton_built_archs() {
    std::string s;
    for (int i = 0; i < kTritonKernelCount; ++i) {
        std::string a = "sm_" + std::to_string(kTritonKernels[i].arch);
        if (s.find(a) == std::string::npos) s += (s.empty() ? "" : ", ") + a;
    }
    return s.empty() ? "none" : s;
}

struct TritonModules : Tracked {
    std::vector<TritonLoaded, TrackedAllocator<TritonLoaded>> kernels;
};

void unload_triton(Device& d) noexcept {
    if (!d.triton) return;
    for (const TritonLoaded& l : d.triton->kernels) (void)driver_api().module_unload(l.module);
    delete d.triton;
    d.triton = nullptr;
}

const TritonLoaded* triton_loaded(Device& d, const char* name, int64_t head_dim) {
    std::lock_guard<std::mutex> lock(d.triton_mutex);
    if (!d.triton) {
        const DriverApi& api = driver_api();
        TritonModules* mods = new TritonModules();
        try {
            for (int i = 0; i < kTritonKernelCount; ++i) {
                const TritonKernel& k = kTritonKernels[i];
                if (k.arch != d.arch) continue;
                TritonLoaded l{&k, nullptr, nullptr};
                check_cu(api.module_load_data(&l.module, k.cubin), "cuModuleLoadData (Triton cubin)");
                mods->kernels.push_back(l);
                check_cu(api.module_get_function(&mods->kernels.back().fn, l.module, k.symbol), "cuModuleGetFunction");
                if (k.shared_bytes > 48 * 1024)
                    check_cu(api.func_set_attribute(mods->kernels.back().fn,
                                                    CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, k.shared_bytes),
                             "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)");
            }
        } catch (...) {
            for (const TritonLoaded& l : mods->kernels) (void)api.module_unload(l.module);
            delete mods;
            throw;
        }
        d.triton = mods;
    }
    const TritonLoaded* best = nullptr;
    for (const TritonLoaded& l : d.triton->kernels)
        if (serves(*l.meta, head_dim) && std::strcmp(l.meta->kernel, name) == 0 &&
            narrower(*l.meta, best ? best->meta : nullptr))
            best = &l;
    return best;
}

void triton_launch(Device& d, const TritonLoaded& l, int64_t gx, int64_t gy,
                   const std::function<void*(const char* name, int size)>& slot, const char* what) {
    const TritonKernel& k = *l.meta;
    if (gx == 0 || gy == 0) return;
    if (gy > 65535 || gx > 2147483647)
        fail(HSPMN_ERR_SHAPE, "%s: grid (%lld, %lld) exceeds CUDA's limits", what, static_cast<long long>(gx),
             static_cast<long long>(gy));
    const void* global_scratch = nullptr;
    const void* profile_scratch = nullptr;
    if (k.global_scratch_size > 0) {
        d.triton_scratch.ensure(d, static_cast<std::size_t>(gx * gy * k.global_scratch_size));
        global_scratch = d.triton_scratch.data();
    }
    if (k.profile_scratch_size > 0) {
        d.triton_scratch.ensure(d, static_cast<std::size_t>(gx * gy * (k.global_scratch_size + k.profile_scratch_size)));
        global_scratch = k.global_scratch_size > 0 ? d.triton_scratch.data() : nullptr;
        profile_scratch = static_cast<const char*>(d.triton_scratch.data()) + gx * gy * k.global_scratch_size;
    }
    void* params[32];
    if (k.num_args > 32) fail(HSPMN_ERR_INTERNAL, "%s: %s takes %d arguments", what, k.kernel, k.num_args);
    for (int i = 0; i < k.num_args; ++i) {
        const TritonArg& a = k.args[i];
        if (std::strcmp(a.name, "global_scratch") == 0 && a.size == 8)
            params[i] = &global_scratch;
        else if (std::strcmp(a.name, "profile_scratch") == 0 && a.size == 8)
            params[i] = &profile_scratch;
        else
            params[i] = slot(a.name, a.size);
    }
    check_cu(driver_api().launch_kernel(l.fn, static_cast<unsigned>(gx), static_cast<unsigned>(gy), 1,
                                        static_cast<unsigned>(k.block_x), 1, 1, static_cast<unsigned>(k.shared_bytes),
                                        reinterpret_cast<CUstream>(d.stream), params, nullptr),
             k.kernel);
}

}  // namespace hspmn::cuda
