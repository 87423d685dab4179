// The CPU backend: host memory for every memory kind but DEVICE, one thread pool per context.
#include <cstring>
#include <thread>

#include "../core/non_finite.h"
#include "../core/backend.h"
#include "../core/error.h"
#include "../core/objects.h"
#include "cpu_block.h"
#include "ops.h"
#include "thread_pool.h"

namespace hspmn {
namespace cpu {
namespace {

class CpuBackend final : public Backend {
public:
    explicit CpuBackend(int threads) : pool_(new ThreadPool(threads)) {}
    ~CpuBackend() override { delete pool_; }

    hspmn_backend kind() const override { return HSPMN_BACKEND_CPU; }

    void* tensor_alloc(int32_t memory, std::size_t bytes) override {
        if (memory == HSPMN_MEMORY_DEVICE)
            fail(HSPMN_ERR_MEMORY_KIND, "memory DEVICE on a CPU context: the CPU backend has only host memory "
                                        "(use HSPMN_MEMORY_HOST or HSPMN_MEMORY_PINNED)");
        void* p = tracked_alloc(bytes);
        std::memset(p, 0, bytes);
        return p;
    }
    void tensor_free(int32_t, void* p, std::size_t bytes) noexcept override { tracked_free(p, bytes); }
    bool host_addressable(int32_t) const override { return true; }
    void copy_to_host(const hspmn_tensor* src, void* dst) override {
        std::memcpy(dst, src->data, static_cast<std::size_t>(src->nbytes));
    }
    void copy_from_host(hspmn_tensor* dst, const void* src) override {
        std::memcpy(dst->data, src, static_cast<std::size_t>(dst->nbytes));
    }
    void copy(hspmn_tensor* dst, const hspmn_tensor* src) override {
        std::memmove(dst->data, src->data, static_cast<std::size_t>(dst->nbytes));
    }
    int64_t find_non_finite(const hspmn_tensor* t) override {
        return host_find_non_finite(t->data, t->dtype, t->numel);
    }
    void synchronize() override {}
    BlockImpl* create_block(const BlockConfig& cfg, uint64_t seed) override { return new CpuBlock(*pool_, cfg, seed); }
    void gumbel_noise(uint64_t seed, int64_t step, int32_t layer, hspmn_tensor* out) override {
        cpu::gumbel_noise(*pool_, seed, step, layer, out->shape[0], out->shape[1], static_cast<float*>(out->data));
    }

private:
    ThreadPool* pool_;
};

}  // namespace
}  // namespace cpu

Backend* create_cpu_backend(const hspmn_context_params& params) {
    int threads = params.num_threads;
    if (threads == 0) {
        unsigned hw = std::thread::hardware_concurrency();
        threads = hw == 0 ? 1 : static_cast<int>(hw);
    }
    return new cpu::CpuBackend(threads);
}

}  // namespace hspmn
