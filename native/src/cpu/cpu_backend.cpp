// The CPU backend: host memory for every memory kind but DEVICE, one thread pool per context.
#include <cmath>
#include <cstring>
#include <thread>

#include "../core/non_finite.h"
#include "../core/backend.h"
#include "../core/bf16.h"
#include "../core/error.h"
#include "../core/objects.h"
#include "cpu_block.h"
#include "gemm.h"
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
    int worker_threads() const override { return static_cast<int>(pool_->size()); }
    BlockImpl* create_block(const BlockConfig& cfg, uint64_t seed) override { return new CpuBlock(*pool_, cfg, seed); }
    void gumbel_noise(uint64_t seed, int64_t step, int32_t layer, hspmn_tensor* out) override {
        cpu::gumbel_noise(*pool_, seed, step, layer, out->shape[0], out->shape[1], static_cast<float*>(out->data));
    }

    // ---- the language model's ops: host memory, float32 compute on bf16-stored values
    int32_t internal_memory() const override { return HSPMN_MEMORY_HOST; }
    void* raw_alloc(std::size_t bytes) override {
        void* p = tracked_alloc(bytes);
        if (p) std::memset(p, 0, bytes);
        return p;
    }
    void raw_free(void* p, std::size_t bytes) noexcept override { tracked_free(p, bytes); }
    void copy_to_host_raw(void* dst, const void* src, std::size_t bytes) override { std::memmove(dst, src, bytes); }
    void copy_from_host_raw(void* dst, const void* src, std::size_t bytes) override { std::memmove(dst, src, bytes); }
    void zero_raw(void* dst, std::size_t bytes) override { std::memset(dst, 0, bytes); }
    void embedding_forward(const uint16_t* table, const int32_t* tokens, int64_t N, int64_t D, uint16_t* x) override {
        cpu::embedding_forward(*pool_, table, tokens, N, D, x);
    }
    void embedding_backward(const uint16_t* dx, const int32_t* tokens, int64_t N, int64_t D, float* d_table) override {
        cpu::embedding_backward(*pool_, dx, tokens, N, D, d_table);
    }
    void final_norm_forward(const uint16_t* x, const uint16_t* w, float eps, int64_t N, int64_t D, uint16_t* y,
                            float* rstd) override {
        Buffer<float> xf(static_cast<std::size_t>(N * D)), wf(static_cast<std::size_t>(D));
        bf16_to_f32_array(*pool_, x, xf.data(), N * D);
        bf16_to_f32_array(*pool_, w, wf.data(), D);
        rms_norm_forward(*pool_, xf.data(), wf.data(), eps, N, D, xf.data(), rstd);
        f32_to_bf16_array(*pool_, xf.data(), y, N * D);
    }
    void final_norm_backward(const uint16_t* x, const uint16_t* w, const float* rstd, const float* dy, int64_t N,
                             int64_t D, uint16_t* dx, float* dw) override {
        Buffer<float> xf(static_cast<std::size_t>(N * D)), dxf(static_cast<std::size_t>(N * D)),
            wf(static_cast<std::size_t>(D));
        bf16_to_f32_array(*pool_, x, xf.data(), N * D);
        bf16_to_f32_array(*pool_, w, wf.data(), D);
        dxf.fill(0.0f);
        rms_norm_backward(*pool_, xf.data(), wf.data(), rstd, dy, N, D, dxf.data(), dw);
        f32_to_bf16_array(*pool_, dxf.data(), dx, N * D);
    }
    void cross_entropy_fused(const uint16_t* h, const uint16_t* table, const int32_t* targets, int64_t N, int64_t V,
                             int64_t D, float grad_scale, float* loss_sum, float* dh, float* d_table) override {
        Buffer<float> hf(static_cast<std::size_t>(N * D)), tf(static_cast<std::size_t>(V * D));
        bf16_to_f32_array(*pool_, h, hf.data(), N * D);
        bf16_to_f32_array(*pool_, table, tf.data(), V * D);
        *loss_sum = static_cast<float>(
            cpu::cross_entropy_fused(*pool_, hf.data(), tf.data(), targets, N, V, D, grad_scale, dh, d_table));
    }
    void lm_logits(const uint16_t* h, int64_t row_stride, int64_t n, const uint16_t* table, int64_t V, int64_t D,
                   float* logits) override {
        Buffer<float> hf(static_cast<std::size_t>(n * D)), tf(static_cast<std::size_t>(V * D));
        for (int64_t i = 0; i < n; ++i) bf16_to_f32_array(*pool_, h + i * row_stride, hf.data() + i * D, D);
        bf16_to_f32_array(*pool_, table, tf.data(), V * D);
        linear_forward(*pool_, hf.data(), tf.data(), logits, n, D, V);
    }
    void loss_finish(const float* ce_sum, const float* stats, int64_t L, int64_t N, float* loss) override {
        const double ce = static_cast<double>(*ce_sum) / static_cast<double>(N);
        double total = ce;
        for (int64_t l = 0; l < L; ++l) total += stats[2 * l];
        loss[0] = static_cast<float>(total);
        loss[1] = static_cast<float>(ce);
    }
    double sum_squares(const GradSpan* spans, int64_t count) override {
        double s = 0.0;
        for (int64_t i = 0; i < count; ++i) s += sum_squares_f32(spans[i].data, spans[i].numel);
        return s;
    }
    void adamw_update(float* master, uint16_t* value, const float* grad, float* m, float* v, int64_t n,
                      const AdamwScalars& a) override {
        cpu::adamw_update(*pool_, master, value, grad, m, v, n, a.lr, a.weight_decay, a.beta1, a.beta2, a.eps, a.bias1,
                          a.bias2_sqrt, a.grad_scale);
    }
    void fill_f32(float* dst, int64_t n, float value) override {
        for (int64_t i = 0; i < n; ++i) dst[i] = value;
    }
    void* staging_alloc(std::size_t bytes) override { return raw_alloc(bytes); }
    void staging_free(void* p, std::size_t bytes) noexcept override { raw_free(p, bytes); }
    void copy_from_staging(void* dst, const void* staging, std::size_t bytes) override {
        std::memmove(dst, staging, bytes);
    }
    void copy_to_staging(void* staging, const void* src, std::size_t bytes) override {
        std::memmove(staging, src, bytes);
    }
    void sample_tokens(const float* logits, int64_t n, int64_t V, const hspmn_sampling_params* params, int32_t* tokens,
                       int32_t* status) override {
        const std::size_t need = static_cast<std::size_t>(2 * V * pool_->size());
        if (sample_scratch_.size() < need) sample_scratch_.resize(need);  // grows only: a warm call allocates nothing
        cpu::sample_tokens(*pool_, logits, n, V, params, tokens, status, sample_scratch_.data());
    }

private:
    ThreadPool* pool_;
    Buffer<uint64_t> sample_scratch_;  // sample_tokens: mass and key arrays per worker
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
