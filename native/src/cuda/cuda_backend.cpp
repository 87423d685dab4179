// The CUDA backend: HOST tensors from the tracked heap, PINNED from cudaMallocHost, DEVICE from
// cudaMalloc; all work on the context's one stream (the library's own non-blocking one, or the caller's,
// hspmn_context_params.cuda_stream). The block math is cuda_block.cu's.
#include <cuda_runtime.h>

#include <cstring>

#include "../core/non_finite.h"
#include "../core/backend.h"
#include "../core/error.h"
#include "../core/objects.h"
#include "cuda_block.h"
#include "device.h"
#include "kernels/kernels.h"

namespace hspmn {
namespace cuda {
namespace {

// Makes the context's device current before every call: a context may move between threads.
class ActiveBlock final : public BlockImpl {
public:
    ActiveBlock(Device& d, BlockImpl* inner) : d_(d), inner_(inner) {}
    ~ActiveBlock() override {
        (void)cudaSetDevice(d_.ordinal);
        delete inner_;
    }
    void read_param(int index, uint16_t* dst) const override { d_.activate(); inner_->read_param(index, dst); }
    void write_param(int index, const uint16_t* src) override { d_.activate(); inner_->write_param(index, src); }
    void read_grad(int index, float* dst) const override { d_.activate(); inner_->read_grad(index, dst); }
    void zero_grad() override { d_.activate(); inner_->zero_grad(); }
    void forward(const ForwardCall& call) override { d_.activate(); inner_->forward(call); }
    void route(const RouteCall& call) override { d_.activate(); inner_->route(call); }
    void backward(const BackwardCall& call) override { d_.activate(); inner_->backward(call); }
    void drop_cache() noexcept override {
        (void)cudaSetDevice(d_.ordinal);
        inner_->drop_cache();
    }
    void share_activations(bool shared) override {
        d_.activate();
        inner_->share_activations(shared);
    }
    ParamStorage param_storage(int index) override { return inner_->param_storage(index); }
    void params_written() override { inner_->params_written(); }
    GraphImpl* capture_forward(const ForwardCall& call) override {
        d_.activate();
        return inner_->capture_forward(call);
    }
    int decode_elem_bytes() const override { return inner_->decode_elem_bytes(); }
    void decode(const DecodeCall& call) override {
        d_.activate();
        inner_->decode(call);
    }
    bool has_decode_step(int64_t n) const override { return inner_->has_decode_step(n); }
    void decode_step(const DecodeStepCall& call) override {
        d_.activate();
        inner_->decode_step(call);
    }
    void prepare_step() override {
        d_.activate();
        inner_->prepare_step();
    }
    uint64_t step_generation() const override { return inner_->step_generation(); }

private:
    Device& d_;
    BlockImpl* inner_;
};

class CudaBackend final : public Backend {
public:
    CudaBackend(int ordinal, cudaStream_t stream) : d_(new Device(ordinal, stream)) {}
    ~CudaBackend() override {
        lm_ = LmScratch();  // its buffers free through the device: before it goes
        delete d_;
    }

    hspmn_backend kind() const override { return HSPMN_BACKEND_CUDA; }
    void* cuda_stream() const override { return d_->stream; }  // data parallelism (comm/nccl_comm.cpp)
    int cuda_device() const override { return d_->ordinal; }

    void* tensor_alloc(int32_t memory, std::size_t bytes) override {
        if (memory == HSPMN_MEMORY_HOST) {
            void* p = tracked_alloc(bytes);
            std::memset(p, 0, bytes);
            return p;
        }
        d_->activate();
        void* p = nullptr;
        if (memory == HSPMN_MEMORY_PINNED) {
            check_alloc(cudaMallocHost(&p, bytes), "cudaMallocHost (tensor)", bytes, false);
            std::memset(p, 0, bytes);
        } else {
            check_alloc(cudaMalloc(&p, bytes), "cudaMalloc (tensor)", bytes, true);
            cudaError_t e = cudaMemsetAsync(p, 0, bytes, d_->stream);
            if (e != cudaSuccess) {
                (void)cudaFree(p);
                check(e, "cudaMemsetAsync (tensor)");
            }
        }
        stats_count_bytes(static_cast<int64_t>(bytes));
        return p;
    }

    void tensor_free(int32_t memory, void* p, std::size_t bytes) noexcept override {
        if (memory == HSPMN_MEMORY_HOST) {
            // Work queued on the stream may still read it (a copy or a block call on host data).
            (void)cudaSetDevice(d_->ordinal);
            (void)cudaStreamSynchronize(d_->stream);
            tracked_free(p, bytes);
            return;
        }
        if (!p) return;
        (void)cudaSetDevice(d_->ordinal);
        // cudaFree/cudaFreeHost wait for the device, so no queued kernel reads freed memory.
        if (memory == HSPMN_MEMORY_PINNED)
            (void)cudaFreeHost(p);
        else
            (void)cudaFree(p);
        stats_count_bytes(-static_cast<int64_t>(bytes));
    }

    bool host_addressable(int32_t memory) const override { return memory != HSPMN_MEMORY_DEVICE; }

    void copy_to_host(const hspmn_tensor* src, void* dst) override {
        d_->activate();
        copy_bytes(dst, src->data, src->nbytes, "cudaMemcpyAsync (copy_out)");
        sync("cudaStreamSynchronize (copy_out)");
    }

    void copy_from_host(hspmn_tensor* dst, const void* src) override {
        d_->activate();
        copy_bytes(dst->data, src, dst->nbytes, "cudaMemcpyAsync (copy_in)");
        // The caller may free or reuse src as soon as we return.
        sync("cudaStreamSynchronize (copy_in)");
    }

    void copy(hspmn_tensor* dst, const hspmn_tensor* src) override {
        d_->activate();
        copy_bytes(dst->data, src->data, dst->nbytes, "cudaMemcpyAsync (copy)");
        // Device to device stays in stream order; a host-side destination may be read right away.
        if (dst->memory != HSPMN_MEMORY_DEVICE || src->memory != HSPMN_MEMORY_DEVICE) sync("cudaStreamSynchronize (copy)");
    }

    int64_t find_non_finite(const hspmn_tensor* t) override {
        d_->activate();
        if (t->memory == HSPMN_MEMORY_DEVICE) return cuda::find_non_finite(*d_, t->data, t->dtype, t->numel);
        sync("cudaStreamSynchronize (find_non_finite)");
        return host_find_non_finite(t->data, t->dtype, t->numel);
    }

    void synchronize() override {
        d_->activate();
        sync("cudaStreamSynchronize");
    }

    bool device_memory(std::size_t* free_bytes, std::size_t* total_bytes) override {
        d_->activate();
        check(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
        return true;
    }

    BlockImpl* create_block(const BlockConfig& cfg, uint64_t seed) override {
        d_->activate();
        BlockImpl* inner = create_cuda_block(*d_, cfg, seed);
        try {
            return new ActiveBlock(*d_, inner);
        } catch (...) {
            delete inner;
            throw;
        }
    }

    void gumbel_noise(uint64_t seed, int64_t step, int32_t layer, hspmn_tensor* out) override {
        d_->activate();
        const int64_t B = out->shape[0], S = out->shape[1];
        if (out->memory == HSPMN_MEMORY_DEVICE) {
            cuda::gumbel_noise(*d_, seed, step, layer, B, S, static_cast<float*>(out->data));
            return;
        }
        DeviceBuffer tmp(*d_, static_cast<std::size_t>(out->nbytes));
        cuda::gumbel_noise(*d_, seed, step, layer, B, S, tmp.as<float>());
        copy_bytes(out->data, tmp.data(), out->nbytes, "cudaMemcpyAsync (gumbel_noise)");
        sync("cudaStreamSynchronize (gumbel_noise)");
    }

    // ---- the language model's ops: device memory, queued on the stream; only sum_squares and the
    // *_host copies wait for it.
    int32_t internal_memory() const override { return HSPMN_MEMORY_DEVICE; }

    void* raw_alloc(std::size_t bytes) override { return tensor_alloc(HSPMN_MEMORY_DEVICE, bytes); }

    void raw_free(void* p, std::size_t bytes) noexcept override { tensor_free(HSPMN_MEMORY_DEVICE, p, bytes); }

    void copy_to_host_raw(void* dst, const void* src, std::size_t bytes) override {
        d_->activate();
        copy_bytes(dst, src, static_cast<int64_t>(bytes), "cudaMemcpyAsync (copy_to_host_raw)");
        sync("cudaStreamSynchronize (copy_to_host_raw)");
    }

    void copy_from_host_raw(void* dst, const void* src, std::size_t bytes) override {
        d_->activate();
        copy_bytes(dst, src, static_cast<int64_t>(bytes), "cudaMemcpyAsync (copy_from_host_raw)");
        sync("cudaStreamSynchronize (copy_from_host_raw)");  // src may be freed on return
    }

    void zero_raw(void* dst, std::size_t bytes) override {
        d_->activate();
        if (bytes > 0) check(cudaMemsetAsync(dst, 0, bytes, d_->stream), "cudaMemsetAsync (zero_raw)");
    }

    void embedding_forward(const uint16_t* table, const int32_t* tokens, int64_t N, int64_t D, uint16_t* x) override {
        d_->activate();
        cuda::embedding_forward(*d_, bf(table), tokens, N, D, bf(x));
    }

    void embedding_backward(const uint16_t* dx, const int32_t* tokens, int64_t N, int64_t D, float* d_table) override {
        d_->activate();
        cuda::embedding_backward(*d_, bf(dx), tokens, N, D, d_table, lm_.embedding);
    }

    void final_norm_forward(const uint16_t* x, const uint16_t* w, float eps, int64_t N, int64_t D, uint16_t* y,
                            float* rstd) override {
        d_->activate();
        rms_norm_forward(*d_, bf(x), bf(w), eps, N, D, bf(y), rstd);
    }

    void final_norm_backward(const uint16_t* x, const uint16_t* w, const float* rstd, const float* dy, int64_t N,
                             int64_t D, uint16_t* dx, float* dw) override {
        d_->activate();
        rms_norm_backward_bf16(*d_, bf(x), bf(w), rstd, dy, N, D, bf(dx), dw, lm_.norm_partials);
    }

    void cross_entropy_fused(const uint16_t* h, const uint16_t* table, const int32_t* targets, int64_t N, int64_t V,
                             int64_t D, float grad_scale, float* loss_sum, float* dh, float* d_table) override {
        d_->activate();
        cuda::cross_entropy_fused(*d_, bf(h), bf(table), targets, N, V, D, grad_scale, loss_sum, dh, d_table,
                                  lm_.cross_entropy);
    }

    void lm_logits(const uint16_t* h, int64_t row_stride, int64_t n, const uint16_t* table, int64_t V, int64_t D,
                   float* logits) override {
        d_->activate();
        gemm(*d_, false, true, n, V, D, 1.0f, bf(h), row_stride, bf(table), D, 0.0f, logits, DType::F32, V);
    }

    void loss_finish(const float* ce_sum, const float* stats, int64_t L, int64_t N, float* loss) override {
        d_->activate();
        cuda::loss_finish(*d_, ce_sum, stats, L, N, loss);
    }

    double sum_squares(const GradSpan* spans, int64_t count) override {
        d_->activate();
        return cuda::sum_squares(*d_, spans, count, lm_.sum_squares);
    }

    void adamw_update(float* master, uint16_t* value, const float* grad, float* m, float* v, int64_t n,
                      const AdamwScalars& s) override {
        d_->activate();
        cuda::adamw_update(*d_, master, bf(value), grad, m, v, n, s);
    }

    void fill_f32(float* dst, int64_t n, float value) override {
        d_->activate();
        cuda::fill_f32(*d_, dst, n, value);
    }

    // Pinned, so the step's copies are asynchronous and a graph can replay them.
    void* staging_alloc(std::size_t bytes) override { return tensor_alloc(HSPMN_MEMORY_PINNED, bytes); }
    void staging_free(void* p, std::size_t bytes) noexcept override { tensor_free(HSPMN_MEMORY_PINNED, p, bytes); }
    void copy_from_staging(void* dst, const void* staging, std::size_t bytes) override {
        d_->activate();
        check(cudaMemcpyAsync(dst, staging, bytes, cudaMemcpyHostToDevice, d_->stream), "cudaMemcpyAsync (step in)");
    }
    void copy_to_staging(void* staging, const void* src, std::size_t bytes) override {
        d_->activate();
        check(cudaMemcpyAsync(staging, src, bytes, cudaMemcpyDeviceToHost, d_->stream), "cudaMemcpyAsync (step out)");
    }
    GraphImpl* capture(void (*body)(void*), void* arg) override {
        d_->activate();
        return cuda::capture_stream(*d_, body, arg);
    }

    void sample_tokens(const float* logits, int64_t n, int64_t V, const hspmn_sampling_params* params, int32_t* tokens,
                       int32_t* status) override {
        d_->activate();
        if (!lm_.sample_state.data()) {  // the first call only: 8 bytes, whatever n and V
            lm_.sample_state.ensure(*d_, 2 * sizeof(unsigned));
            lm_.sample_state.zero(*d_);
        }
        cuda::sample_tokens(*d_, logits, n, V, params, tokens, status, lm_.sample_state.as<unsigned>());
    }

private:
    // The language model's scratch, kept between steps so a warm step allocates nothing.
    struct LmScratch {
        DeviceBuffer embedding, norm_partials, sum_squares;
        DeviceBuffer sample_state;  // sample_tokens: {tickets, bad word}, zero between launches
        CrossEntropyScratch cross_entropy;
    };

    static const __nv_bfloat16* bf(const uint16_t* p) { return reinterpret_cast<const __nv_bfloat16*>(p); }
    static __nv_bfloat16* bf(uint16_t* p) { return reinterpret_cast<__nv_bfloat16*>(p); }

    void copy_bytes(void* dst, const void* src, int64_t n, const char* what) {
        check(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(n), cudaMemcpyDefault, d_->stream), what);
    }
    void sync(const char* what) { check(cudaStreamSynchronize(d_->stream), what); }

    Device* d_;
    LmScratch lm_;
};

}  // namespace
}  // namespace cuda

Backend* create_cuda_backend(const hspmn_context_params& params) {
    return new cuda::CudaBackend(params.device, static_cast<cudaStream_t>(params.cuda_stream));
}

}  // namespace hspmn
