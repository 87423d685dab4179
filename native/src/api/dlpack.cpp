// hspmn_tensor_to_dlpack: a DLManagedTensor over a tensor's memory; hspmn_tensor_from_dlpack(_versioned):
// a tensor over a producer's DLManagedTensor(Versioned). The structs below are the DLPack 0.8 and 1.x
// ABI (github.com/dmlc/dlpack, dlpack.h), declared here so the public header needs no dlpack.h.
#include <cinttypes>
#include <cstdint>

#include "../core/alloc.h"
#include "../core/error.h"
#include "../core/objects.h"
#include "checks.h"
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

// DLPack 1.x: the version comes first so a consumer can refuse a major version it does not know.
struct DLPackVersion {
    uint32_t major;
    uint32_t minor;
};
struct DLManagedTensorVersioned {
    DLPackVersion version;
    void* manager_ctx;
    void (*deleter)(DLManagedTensorVersioned* self);
    uint64_t flags;
    DLTensor dl_tensor;
};

constexpr int32_t kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3;
constexpr uint8_t kDLInt = 0, kDLFloat = 2, kDLBfloat = 4;
constexpr uint64_t kDLFlagReadOnly = 1;

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
        clear_out(out);
        check_not_null(t, "t");
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

namespace {

// As hspmn_tensor_create: anything larger is a garbage shape.
constexpr int64_t kMaxImportBytes = int64_t(1) << 46;
// The CUDA kernels load 16 bytes at a time from the tensors they are given (device allocations are
// 256-byte aligned); the CPU ones need element alignment. One rule for every backend.
constexpr uintptr_t kImportAlign = 16;

const char* device_name(int32_t type) {
    switch (type) {
        case kDLCPU: return "kDLCPU";
        case kDLCUDA: return "kDLCUDA";
        case kDLCUDAHost: return "kDLCUDAHost";
        case 4: return "kDLOpenCL";
        case 7: return "kDLVulkan";
        case 8: return "kDLMetal";
        case 10: return "kDLROCM";
        case 11: return "kDLROCMHost";
        case 13: return "kDLCUDAManaged";
        case 14: return "kDLOneAPI";
        default: return "an unknown device type";
    }
}

int32_t import_dtype(const DLDataType& t) {
    if (t.lanes == 1) {
        if (t.code == kDLBfloat && t.bits == 16) return HSPMN_DTYPE_BF16;
        if (t.code == kDLFloat && t.bits == 32) return HSPMN_DTYPE_F32;
        if (t.code == kDLInt && t.bits == 32) return HSPMN_DTYPE_I32;
    }
    fail(HSPMN_ERR_DTYPE,
         "DLPack dtype (code %u, bits %u, lanes %u) is not one the library computes with: bf16 (kDLBfloat 16), "
         "f32 (kDLFloat 32) or i32 (kDLInt 32), lanes 1; convert it in the producer first",
         static_cast<unsigned>(t.code), static_cast<unsigned>(t.bits), static_cast<unsigned>(t.lanes));
}

int32_t import_memory(const hspmn_context* ctx, const DLDevice& dev) {
    const bool cuda = ctx->backend->kind() == HSPMN_BACKEND_CUDA;
    switch (dev.device_type) {
        case kDLCPU:
            return HSPMN_MEMORY_HOST;
        case kDLCUDAHost:
            return HSPMN_MEMORY_PINNED;
        case kDLCUDA:
            if (!cuda)
                fail(HSPMN_ERR_MEMORY_KIND,
                     "DLPack device kDLCUDA (GPU memory) on a CPU context: the CPU backend reads host memory only; "
                     "import it on a CUDA context or copy it to the host first");
            if (dev.device_id != ctx->params.device)
                fail(HSPMN_ERR_MEMORY_KIND,
                     "DLPack tensor is on CUDA device %d, the context on device %d; import it on a context of "
                     "device %d",
                     dev.device_id, ctx->params.device, dev.device_id);
            return HSPMN_MEMORY_DEVICE;
        default:
            fail(HSPMN_ERR_MEMORY_KIND,
                 "DLPack device type %d (%s) is not one the library reads: kDLCPU, kDLCUDAHost or kDLCUDA",
                 dev.device_type, device_name(dev.device_type));
    }
}

// A tensor over d's memory, checked as hspmn.h says; the caller attaches the owner. Throws before
// anything is allocated, so a failure keeps nothing.
hspmn_tensor* import_tensor(hspmn_context* ctx, const DLTensor& d) {
    if (d.ndim < 1 || d.ndim > HSPMN_MAX_DIMS)
        fail(HSPMN_ERR_SHAPE, "DLPack ndim (%d) must be in [1, %d]", d.ndim, HSPMN_MAX_DIMS);
    if (!d.shape) fail(HSPMN_ERR_INVALID_ARGUMENT, "DLPack shape is NULL");
    const int32_t dtype = import_dtype(d.dtype);
    const int32_t memory = import_memory(ctx, d.device);
    const int64_t elem = dtype_size(dtype);
    int64_t numel = 1;
    for (int i = 0; i < d.ndim; ++i) {
        if (d.shape[i] < 1)
            fail(HSPMN_ERR_SHAPE, "DLPack shape[%d] (%" PRId64 ") must be >= 1 (the library has no empty tensors)",
                 i, d.shape[i]);
        if (d.shape[i] > kMaxImportBytes || numel > kMaxImportBytes / d.shape[i])
            fail(HSPMN_ERR_SHAPE, "DLPack shape is too large (more than 2^46 elements)");
        numel *= d.shape[i];
    }
    if (numel > kMaxImportBytes / elem) fail(HSPMN_ERR_SHAPE, "DLPack tensor of %" PRId64 " elements is too large", numel);
    if (d.strides) {
        int64_t want = 1;
        for (int i = d.ndim - 1; i >= 0; --i) {
            if (d.shape[i] != 1 && d.strides[i] != want)
                fail(HSPMN_ERR_SHAPE,
                     "DLPack tensor is not compact row-major: strides[%d] is %" PRId64 " elements, %" PRId64
                     " expected; only contiguous tensors are imported (e.g. .contiguous() in PyTorch)",
                     i, d.strides[i], want);
            want *= d.shape[i];
        }
    }
    if (!d.data) fail(HSPMN_ERR_INVALID_ARGUMENT, "DLPack data is NULL");
    const uintptr_t addr = reinterpret_cast<uintptr_t>(d.data) + static_cast<uintptr_t>(d.byte_offset);
    if (addr % kImportAlign != 0)
        fail(HSPMN_ERR_INVALID_ARGUMENT,
             "DLPack data + byte_offset (0x%" PRIxPTR ") is not 16-byte aligned: the kernels load 16 bytes at a time; "
             "copy it into a tensor of hspmn_tensor_create instead",
             addr);

    hspmn_tensor* t = new hspmn_tensor();
    t->ctx = ctx;
    t->dtype = dtype;
    t->memory = memory;
    t->ndim = d.ndim;
    for (int i = 0; i < HSPMN_MAX_DIMS; ++i) t->shape[i] = i < d.ndim ? d.shape[i] : 1;
    t->numel = numel;
    t->nbytes = numel * elem;
    t->data = reinterpret_cast<void*>(addr);
    return t;
}

void release_managed(void* owner) {
    DLManagedTensor* m = static_cast<DLManagedTensor*>(owner);
    if (m->deleter) m->deleter(m);
}

void release_versioned(void* owner) {
    DLManagedTensorVersioned* m = static_cast<DLManagedTensorVersioned*>(owner);
    if (m->deleter) m->deleter(m);
}

// The common tail: checks ctx and out, imports, and hands ownership to the tensor only on success.
template <class Check>
void import_into(hspmn_context* ctx, void* managed, const DLTensor* d, hspmn_tensor** out, void (*release)(void*),
                 Check&& check) {
    clear_out(out);
    check_not_null(ctx, "ctx", managed, "managed");
    check();
    BusyGuard busy(ctx->busy, "context");
    hspmn_tensor* t = import_tensor(ctx, *d);
    t->import_owner = managed;
    t->import_release = release;
    ctx->live_tensors.fetch_add(1);
    stats_count_tensor(+1);
    *out = t;
}

}  // namespace

extern "C" hspmn_status hspmn_tensor_from_dlpack(hspmn_context* ctx, void* managed, hspmn_tensor** out) {
    return guarded("hspmn_tensor_from_dlpack", [&] {
        DLManagedTensor* m = static_cast<DLManagedTensor*>(managed);
        import_into(ctx, managed, m ? &m->dl_tensor : nullptr, out, release_managed, [] {});
    });
}

extern "C" hspmn_status hspmn_tensor_from_dlpack_versioned(hspmn_context* ctx, void* managed, hspmn_tensor** out) {
    return guarded("hspmn_tensor_from_dlpack_versioned", [&] {
        DLManagedTensorVersioned* m = static_cast<DLManagedTensorVersioned*>(managed);
        import_into(ctx, managed, m ? &m->dl_tensor : nullptr, out, release_versioned, [&] {
            if (m->version.major != 1)
                fail(HSPMN_ERR_INVALID_ARGUMENT,
                     "DLManagedTensorVersioned of DLPack %u.%u: the library reads major version 1 only",
                     m->version.major, m->version.minor);
            if (m->flags & kDLFlagReadOnly)
                fail(HSPMN_ERR_INVALID_ARGUMENT,
                     "DLPack tensor is read-only (DLPACK_FLAG_BITMASK_READ_ONLY): the library may write any tensor "
                     "it is given; import a writable one or copy it");
        });
    });
}
