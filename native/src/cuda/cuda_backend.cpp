// The CUDA backend: HOST tensors from the tracked heap, PINNED from cudaMallocHost, DEVICE from
// cudaMalloc; all work on the context's one non-blocking stream. The block math is cuda_block.cu's.
#include <cuda_runtime.h>

#include <cstring>

#include "../core/non_finite.h"
#include "../core/backend.h"
#include "../core/error.h"
#include "../core/objects.h"
#include "cuda_block.h"
#include "device.h"

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
    ParamStorage param_storage(int index) override { return inner_->param_storage(index); }
    void params_written() override { inner_->params_written(); }
    GraphImpl* capture_forward(const ForwardCall& call) override {
        d_.activate();
        return inner_->capture_forward(call);
    }

private:
    Device& d_;
    BlockImpl* inner_;
};

class CudaBackend final : public Backend {
public:
    explicit CudaBackend(int ordinal) : d_(new Device(ordinal)) {}
    ~CudaBackend() override { delete d_; }

    hspmn_backend kind() const override { return HSPMN_BACKEND_CUDA; }

    void* tensor_alloc(int32_t memory, std::size_t bytes) override {
        if (memory == HSPMN_MEMORY_HOST) {
            void* p = tracked_alloc(bytes);
            std::memset(p, 0, bytes);
            return p;
        }
        d_->activate();
        void* p = nullptr;
        if (memory == HSPMN_MEMORY_PINNED) {
            check(cudaMallocHost(&p, bytes), "cudaMallocHost (tensor)");
            std::memset(p, 0, bytes);
        } else {
            check(cudaMalloc(&p, bytes), "cudaMalloc (tensor)");
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

private:
    void copy_bytes(void* dst, const void* src, int64_t n, const char* what) {
        check(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(n), cudaMemcpyDefault, d_->stream), what);
    }
    void sync(const char* what) { check(cudaStreamSynchronize(d_->stream), what); }

    Device* d_;
};

}  // namespace
}  // namespace cuda

Backend* create_cuda_backend(const hspmn_context_params& params) { return new cuda::CudaBackend(params.device); }

}  // namespace hspmn
