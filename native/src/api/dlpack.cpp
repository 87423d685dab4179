// hspmn_tensor_to_dlpack: a DLManagedTensor over a tensor's memory. The structs below are the DLPack
// 0.8 ABI (github.com/dmlc/dlpack, dlpack.h), declared here so the public header needs no dlpack.h.
#include <cstdint>

#include "../core/alloc.h"
#include "../core/error.h"
#include "../core/objects.h"
#include "guard.h"
#include "hspmn.h"

using namespace hspmn;

namespace {

struct DLDevice {
    int32_t device_type;
    int32_t device_id;
};
struct DLDataType {
    uint8_t code;
    uint8_t bits;
    uint16_t lanes;
};
struct DLTensor {
    void* data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t* shape;
    int64_t* strides;
    uint64_t byte_offset;
};
struct DLManagedTensor {
    DLTensor dl_tensor;
    void* manager_ctx;
    void (*deleter)(DLManagedTensor* self);
};

constexpr int32_t kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3;
constexpr uint8_t kDLInt = 0, kDLFloat = 2, kDLBfloat = 4;

// Owns the managed tensor and its shape array; holds the export reference on the tensor.
struct Export : Tracked {
    DLManagedTensor managed{};
    int64_t shape[HSPMN_MAX_DIMS] = {1, 1, 1, 1};
    hspmn_tensor* tensor = nullptr;
};

void release(DLManagedTensor* self) {
    if (!self) return;
    Export* e = static_cast<Export*>(self->manager_ctx);
    e->tensor->dlpack_refs.fetch_sub(1);
    delete e;
}

}  // namespace

extern "C" hspmn_status hspmn_tensor_to_dlpack(hspmn_tensor* t, void** out) {
    return guarded("hspmn_tensor_to_dlpack", [&] {
        if (!out) fail(HSPMN_ERR_INVALID_ARGUMENT, "out is NULL");
        *out = nullptr;
        if (!t) fail(HSPMN_ERR_INVALID_ARGUMENT, "t is NULL");
        Export* e = new Export();
        e->tensor = t;
        DLTensor& d = e->managed.dl_tensor;
        d.data = t->data;
        const bool cuda = t->ctx->backend->kind() == HSPMN_BACKEND_CUDA;
        if (t->memory == HSPMN_MEMORY_DEVICE)
            d.device = {kDLCUDA, t->ctx->params.device};
        else if (t->memory == HSPMN_MEMORY_PINNED && cuda)
            d.device = {kDLCUDAHost, 0};
        else
            d.device = {kDLCPU, 0};
        d.ndim = t->ndim;
        if (t->dtype == HSPMN_DTYPE_BF16)
            d.dtype = {kDLBfloat, 16, 1};
        else if (t->dtype == HSPMN_DTYPE_F32)
            d.dtype = {kDLFloat, 32, 1};
        else
            d.dtype = {kDLInt, 32, 1};
        for (int i = 0; i < t->ndim; ++i) e->shape[i] = t->shape[i];
        d.shape = e->shape;
        d.strides = nullptr;
        d.byte_offset = 0;
        e->managed.manager_ctx = e;
        e->managed.deleter = release;
        t->dlpack_refs.fetch_add(1);
        *out = &e->managed;
    });
}
