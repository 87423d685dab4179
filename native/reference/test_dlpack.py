"""DLPack both ways through PyTorch (CPU backend, or --backend cuda with DEVICE tensors and torch CUDA
tensors), every check failing the run when wrong:

export  hspmn_tensor_to_dlpack -> torch.from_dlpack shares the library's memory both ways for bf16, f32
        and i32; the library refuses to free an exported tensor until the framework drops its view.
import  torch tensor -> to_dlpack capsule -> PyCapsule_GetPointer (renamed "used_dltensor", as the
        protocol says) -> hspmn_tensor_from_dlpack: a block forward reads and writes torch's memory in
        place (pointers equal both ways; output bit-equal to a forward on copied tensors); the
        producer's deleter runs exactly once, at destroy, also after a re-export; DLPack 1.x
        (__dlpack__(max_version=(1, 0)), hspmn_tensor_from_dlpack_versioned); byte_offset; every bad
        input (dtype, strides, device, alignment, shape, version, read-only) gives its typed error and
        leaves the managed tensor, deleter not called, with the caller.
streams (cuda) a context on a torch stream runs in that stream's order with torch work before and after
        it and no synchronisation in between (a forward, and a CUDA graph captured on that stream; also
        on the legacy default stream), and neither it nor an import waits for a busy second stream.

    .venv/bin/python native/reference/test_dlpack.py [--backend cpu|cuda] [--lib native/build/libhspmn.so]
"""
import argparse
import ctypes as C
import gc
import os
import sys
import time

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hspmn_ctypes import AllocStats, BlockParams, ContextParams, ForwardParams  # noqa: E402

OK, INVALID_ARGUMENT, SHAPE, DTYPE, MEMORY_KIND, NOT_BUILT, NO_DEVICE, STATE = 0, 1, 2, 3, 4, 6, 7, 10
HOST, DEVICE, PINNED = 0, 1, 2
kDLCPU, kDLCUDA, kDLCUDAHost = 1, 2, 3
CUDA_STREAM_LEGACY = 1  # cudaStreamLegacy: PyTorch's default stream, whose cuda_stream reads 0
P = C.c_void_p


# ---- the DLPack ABI (dlpack.h), 0.8 and 1.x ----
class DLDevice(C.Structure):
    _fields_ = [("device_type", C.c_int32), ("device_id", C.c_int32)]


class DLDataType(C.Structure):
    _fields_ = [("code", C.c_uint8), ("bits", C.c_uint8), ("lanes", C.c_uint16)]


class DLTensor(C.Structure):
    _fields_ = [("data", P), ("device", DLDevice), ("ndim", C.c_int32), ("dtype", DLDataType),
                ("shape", C.POINTER(C.c_int64)), ("strides", C.POINTER(C.c_int64)), ("byte_offset", C.c_uint64)]


class DLManagedTensor(C.Structure):
    pass


DELETER = C.CFUNCTYPE(None, C.POINTER(DLManagedTensor))
DLManagedTensor._fields_ = [("dl_tensor", DLTensor), ("manager_ctx", P), ("deleter", DELETER)]


class DLManagedTensorVersioned(C.Structure):
    pass


DELETER_V = C.CFUNCTYPE(None, C.POINTER(DLManagedTensorVersioned))
DLManagedTensorVersioned._fields_ = [("major", C.c_uint32), ("minor", C.c_uint32), ("manager_ctx", P),
                                     ("deleter", DELETER_V), ("flags", C.c_uint64), ("dl_tensor", DLTensor)]

# Capsule names must outlive their capsules: module constants.
USED = b"used_dltensor"
USED_V = b"used_dltensor_versioned"
_get_pointer = C.pythonapi.PyCapsule_GetPointer
_get_pointer.restype, _get_pointer.argtypes = P, [C.py_object, C.c_char_p]
_set_name = C.pythonapi.PyCapsule_SetName
_set_name.restype, _set_name.argtypes = C.c_int, [C.py_object, C.c_char_p]
_capsule_new = C.pythonapi.PyCapsule_New
_capsule_new.restype, _capsule_new.argtypes = C.py_object, [P, C.c_char_p, P]


def take(capsule, versioned=False):
    """The managed tensor of a producer's capsule, which then no longer deletes it: the caller owns it."""
    name, used = (b"dltensor_versioned", USED_V) if versioned else (b"dltensor", USED)
    ptr = _get_pointer(capsule, name)
    if _set_name(capsule, used) != 0:
        raise RuntimeError("PyCapsule_SetName failed")
    return ptr


class Counted:
    """A DLManagedTensor of our own over a producer's one (same DLTensor, or a doctored copy of it), whose
    deleter counts its calls and then deletes the producer's: the test's view of "the deleter ran"."""

    def __init__(self, inner_ptr, versioned=False, **change):
        self.calls = 0
        self.versioned = versioned
        struct = DLManagedTensorVersioned if versioned else DLManagedTensor
        inner = struct.from_address(inner_ptr)
        self.m = struct()
        if versioned:
            self.m.major, self.m.minor, self.m.flags = inner.major, inner.minor, inner.flags
        self.m.dl_tensor = inner.dl_tensor
        self.shape = (C.c_int64 * 8)(*[inner.dl_tensor.shape[i] for i in range(max(inner.dl_tensor.ndim, 0))])
        self.m.dl_tensor.shape = self.shape
        for k, v in change.items():
            if k in ("major", "minor", "flags"):
                setattr(self.m, k, v)
            elif k == "strides":
                self.strides = (C.c_int64 * 8)(*v)
                self.m.dl_tensor.strides = self.strides
            elif k == "shape":
                self.shape = (C.c_int64 * 8)(*v)
                self.m.dl_tensor.shape = self.shape
            elif k in ("device_type", "device_id"):
                setattr(self.m.dl_tensor.device, k, v)
            elif k in ("code", "bits", "lanes"):
                setattr(self.m.dl_tensor.dtype, k, v)
            else:
                setattr(self.m.dl_tensor, k, v)
        self.inner = inner

        def deleter(_):
            self.calls += 1
            if self.inner.deleter:
                self.inner.deleter(C.pointer(self.inner))

        self.fn = (DELETER_V if versioned else DELETER)(deleter)
        self.m.deleter = self.fn

    @property
    def ptr(self):
        return C.addressof(self.m)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=os.path.join(ROOT, "native", "build", "libhspmn.so"))
    ap.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    args = ap.parse_args()
    lib = C.CDLL(args.lib)
    cuda = args.backend == "cuda"
    memory = DEVICE if cuda else HOST
    dev = torch.device("cuda", 0) if cuda else torch.device("cpu")
    lib.hspmn_last_error.restype = C.c_char_p
    lib.hspmn_context_default_params.restype = ContextParams
    lib.hspmn_context_create.argtypes = [C.POINTER(ContextParams), C.POINTER(P)]
    lib.hspmn_tensor_to_dlpack.argtypes = [P, C.POINTER(P)]
    lib.hspmn_tensor_from_dlpack.argtypes = [P, P, C.POINTER(P)]
    lib.hspmn_tensor_from_dlpack_versioned.argtypes = [P, P, C.POINTER(P)]
    lib.hspmn_tensor_create.argtypes = [P, C.c_int32, C.c_int32, C.c_int32, C.POINTER(C.c_int64), C.POINTER(P)]
    lib.hspmn_tensor_data.argtypes = [P, C.POINTER(P)]
    lib.hspmn_tensor_copy_in.argtypes = [P, P, C.c_int64]
    lib.hspmn_tensor_copy_out.argtypes = [P, P, C.c_int64]
    lib.hspmn_tensor_destroy.argtypes = [P]
    lib.hspmn_context_destroy.argtypes = [P]
    lib.hspmn_context_synchronize.argtypes = [P]
    lib.hspmn_block_default_params.restype = BlockParams
    lib.hspmn_block_create.argtypes = [P, C.POINTER(BlockParams), C.c_uint64, C.POINTER(P)]
    lib.hspmn_block_destroy.argtypes = [P]
    lib.hspmn_forward_default_params.restype = ForwardParams
    lib.hspmn_block_forward.argtypes = [P, C.POINTER(ForwardParams), P, P, P]
    failures = []
    checks = [0]

    def expect(cond, what):
        checks[0] += 1
        if not cond:
            failures.append(what)

    def ok(status, what):
        if status != OK:
            raise RuntimeError(f"{what}: status {status}: {lib.hspmn_last_error().decode()}")

    def context(stream=None, nan_policy=0):
        p = lib.hspmn_context_default_params()
        p.backend, p.num_threads, p.nan_policy = (1 if cuda else 0), 2, nan_policy
        p.cuda_stream = stream
        h = P()
        ok(lib.hspmn_context_create(C.byref(p), C.byref(h)), "context")
        return h

    def new_tensor(ctx, dtype, shape, mem=memory):
        t = P()
        ok(lib.hspmn_tensor_create(ctx, dtype, mem, len(shape), (C.c_int64 * len(shape))(*shape), C.byref(t)),
           "tensor")
        return t

    def import_(ctx, ptr, versioned=False):
        t = P()
        f = lib.hspmn_tensor_from_dlpack_versioned if versioned else lib.hspmn_tensor_from_dlpack
        status = f(ctx, ptr, C.byref(t))
        return status, t

    def export(t):
        """The library tensor as a torch tensor over the same memory."""
        m = P()
        ok(lib.hspmn_tensor_to_dlpack(t, C.byref(m)), "to_dlpack")
        return torch.from_dlpack(_capsule_new(m, b"dltensor", None))

    def sync():
        if cuda:
            torch.cuda.synchronize()

    # ---------------- export (hspmn -> torch) ----------------
    ctx = context()
    for dtype_code, torch_dtype in ((0, torch.bfloat16), (1, torch.float32), (2, torch.int32)):
        shape = (3, 5, 7)
        t = new_tensor(ctx, dtype_code, shape)
        src = (torch.arange(105) - 50).reshape(shape).to(torch_dtype)
        ok(lib.hspmn_tensor_copy_in(t, src.data_ptr(), src.numel() * src.element_size()), "copy_in")
        lib.hspmn_context_synchronize(ctx)
        view = export(t)
        expect(not cuda or view.is_cuda, f"export {torch_dtype}: a DEVICE tensor was imported on {view.device}")
        expect(view.dtype == torch_dtype and tuple(view.shape) == shape and torch.equal(view.cpu(), src),
               f"export {torch_dtype}: imported {view.dtype} {tuple(view.shape)} differs from what was written")
        view[1, 2, 3] = 42  # written through the framework ...
        sync()
        back = torch.empty_like(src)
        ok(lib.hspmn_tensor_copy_out(t, back.data_ptr(), back.numel() * back.element_size()), "copy_out")
        expect(back[1, 2, 3].item() == 42, f"export {torch_dtype}: a write through the view is not in the tensor")
        status = lib.hspmn_tensor_destroy(t)  # ... and the library refuses to free memory still shared
        expect(status == STATE and b"DLPack" in lib.hspmn_last_error(),
               f"export {torch_dtype}: destroy while exported gave {status}, want STATE naming DLPack")
        del view
        gc.collect()
        ok(lib.hspmn_tensor_destroy(t), "destroy after the deleter ran")

    # ---------------- import (torch -> hspmn) and a forward in place ----------------
    bp = lib.hspmn_block_default_params()
    bp.dim, bp.num_heads, bp.num_kv_heads = 128, 2, 1
    B, S, D = 2, 64, 128
    block = P()
    ok(lib.hspmn_block_create(ctx, C.byref(bp), 7, C.byref(block)), "block")
    fp = lib.hspmn_forward_default_params()
    gen = torch.Generator().manual_seed(3)
    x_cpu = torch.randn(B, S, D, generator=gen).to(torch.bfloat16)

    def forward_copied(x_host):
        """The reference: the same forward on library tensors filled by copy."""
        hx, ho = new_tensor(ctx, 0, (B, S, D)), new_tensor(ctx, 0, (B, S, D))
        ok(lib.hspmn_tensor_copy_in(hx, x_host.data_ptr(), x_host.numel() * 2), "copy_in x")
        ok(lib.hspmn_block_forward(block, C.byref(fp), hx, ho, None), "forward (copied)")
        out = torch.empty(B, S, D, dtype=torch.bfloat16)
        ok(lib.hspmn_tensor_copy_out(ho, out.data_ptr(), out.numel() * 2), "copy_out")
        ok(lib.hspmn_tensor_destroy(hx), "destroy")
        ok(lib.hspmn_tensor_destroy(ho), "destroy")
        return out

    def same(got, want, what):
        got = got.detach().to("cpu")
        diff = (got.float() - want.float()).abs().max().item()
        expect(torch.equal(got, want), f"{what}: differs from the forward on copied tensors (max |diff| {diff})")

    want = forward_copied(x_cpu)
    x_t = x_cpu.to(dev)
    out_t = torch.empty(B, S, D, dtype=torch.bfloat16, device=dev)
    sync()
    uses = x_t._use_count()
    status, hx = import_(ctx, take(torch.utils.dlpack.to_dlpack(x_t)))  # the plain protocol: torch's deleter
    ok(status, "from_dlpack x")
    expect(x_t._use_count() == uses + 1, f"import: torch holds {x_t._use_count()} refs to x, want {uses + 1}")
    out_counted = Counted(take(torch.utils.dlpack.to_dlpack(out_t)))
    status, hout = import_(ctx, out_counted.ptr)
    ok(status, "from_dlpack out")
    if not cuda:
        addr = P()
        ok(lib.hspmn_tensor_data(hx, C.byref(addr)), "data")
        expect(addr.value == x_t.data_ptr(), "import: the HOST tensor's data is not torch's (a copy?)")
    ok(lib.hspmn_block_forward(block, C.byref(fp), hx, hout, None), "forward on imported tensors")
    ok(lib.hspmn_context_synchronize(ctx), "synchronize")
    same(out_t, want, "forward into torch's tensor")
    # back to torch: the same memory both ways
    x_back, out_back = export(hx), export(hout)
    expect(x_back.data_ptr() == x_t.data_ptr() and out_back.data_ptr() == out_t.data_ptr(),
           "re-export: the pointers are not torch's own (a copy?)")
    expect(x_back.device == x_t.device, f"re-export: on {x_back.device}, torch's tensor on {x_t.device}")
    ho2 = new_tensor(ctx, 0, (B, S, D))
    ok(lib.hspmn_block_forward(block, C.byref(fp), hx, ho2, None), "forward into a library tensor")
    lib.hspmn_context_synchronize(ctx)
    view = export(ho2)
    if not cuda:
        addr = P()
        ok(lib.hspmn_tensor_data(ho2, C.byref(addr)), "data")
        expect(view.data_ptr() == addr.value, "export: torch's view is not the library's memory")
    same(view, want, "forward into a library tensor, read through DLPack")
    del view
    gc.collect()
    ok(lib.hspmn_tensor_destroy(ho2), "destroy")
    # ownership: a re-export holds the imported tensor, so the producer's deleter waits for it
    status = lib.hspmn_tensor_destroy(hout)
    expect(status == STATE and out_counted.calls == 0,
           f"destroy under a re-export: status {status}, deleter ran {out_counted.calls} times; want STATE, 0")
    del out_back
    gc.collect()
    ok(lib.hspmn_tensor_destroy(hout), "destroy out")
    expect(out_counted.calls == 1, f"destroy: the producer's deleter ran {out_counted.calls} times, want 1")
    del x_back
    gc.collect()
    ok(lib.hspmn_tensor_destroy(hx), "destroy x")
    expect(x_t._use_count() == uses, f"destroy: torch holds {x_t._use_count()} refs to x, want {uses} (deleter)")

    # a tensor of the library, exported and imported again in the same context
    t = new_tensor(ctx, 1, (4, 4))
    m = P()
    ok(lib.hspmn_tensor_to_dlpack(t, C.byref(m)), "to_dlpack")
    status, t2 = import_(ctx, m.value)
    ok(status, "re-import of an export")
    status = lib.hspmn_tensor_destroy(t)
    expect(status == STATE, f"round trip: the original was destroyed ({status}) under its re-import")
    ok(lib.hspmn_tensor_destroy(t2), "destroy the re-import")
    ok(lib.hspmn_tensor_destroy(t), "destroy the original after the re-import released it")

    # DLPack 1.x
    v_src = (torch.arange(24, dtype=torch.float32) * 0.5).reshape(2, 3, 4).to(dev)
    v_counted = Counted(take(v_src.__dlpack__(max_version=(1, 0)), versioned=True), versioned=True)
    status, hv = import_(ctx, v_counted.ptr, versioned=True)
    ok(status, "from_dlpack_versioned")
    got = torch.empty(2, 3, 4)
    ok(lib.hspmn_tensor_copy_out(hv, got.data_ptr(), got.numel() * 4), "copy_out versioned")
    expect(torch.equal(got, v_src.cpu()), "versioned: the imported values differ")
    vb = export(hv)
    expect(vb.data_ptr() == v_src.data_ptr(), "versioned: not torch's memory")
    del vb
    gc.collect()
    ok(lib.hspmn_tensor_destroy(hv), "destroy versioned")
    expect(v_counted.calls == 1, f"versioned: deleter ran {v_counted.calls} times, want 1")

    # byte_offset: data + 64 bytes is where the tensor starts
    base = torch.arange(64, dtype=torch.float32, device=dev)
    off = Counted(take(torch.utils.dlpack.to_dlpack(base)), shape=[8], byte_offset=64)
    status, ht = import_(ctx, off.ptr)
    ok(status, "from_dlpack with byte_offset")
    got = torch.empty(8)
    ok(lib.hspmn_tensor_copy_out(ht, got.data_ptr(), 32), "copy_out")
    expect(torch.equal(got, base[16:24].cpu()), f"byte_offset 64: read {got.tolist()}, want elements 16..23")
    ob = export(ht)
    expect(ob.data_ptr() == base.data_ptr() + 64, "byte_offset: the re-export does not start at data + 64")
    del ob
    gc.collect()
    ok(lib.hspmn_tensor_destroy(ht), "destroy")
    expect(off.calls == 1, f"byte_offset: deleter ran {off.calls} times, want 1")

    # kDLCUDAHost is PINNED (on the CPU backend plain host memory, so any host tensor stands in for it)
    if not cuda:
        lib.hspmn_tensor_describe.argtypes = [P, P]
        pinned_src = torch.arange(12, dtype=torch.int32)
        pinned = Counted(take(torch.utils.dlpack.to_dlpack(pinned_src)), device_type=kDLCUDAHost)
        status, hp = import_(ctx, pinned.ptr)
        ok(status, "import kDLCUDAHost")
        desc = (C.c_int32 * 16)()
        ok(lib.hspmn_tensor_describe(hp, desc), "describe")
        expect(desc[0] == 2 and desc[1] == PINNED, f"kDLCUDAHost: dtype {desc[0]}, memory {desc[1]}; want i32 PINNED")
        ok(lib.hspmn_tensor_destroy(hp), "destroy")
        expect(pinned.calls == 1, f"kDLCUDAHost: deleter ran {pinned.calls} times")

    # bad inputs: typed error, nothing kept, deleter not called; the caller still owns (and deletes) it
    good = torch.zeros(4, 8, dtype=torch.float32, device=dev)
    bad = [
        ("float16", torch.zeros(4, 8, dtype=torch.float16, device=dev), {}, DTYPE, b"dtype"),
        ("float64", torch.zeros(4, 8, dtype=torch.float64, device=dev), {}, DTYPE, b"dtype"),
        ("int64", torch.zeros(4, 8, dtype=torch.int64, device=dev), {}, DTYPE, b"dtype"),
        ("lanes 2", good, dict(lanes=2), DTYPE, b"lanes"),
        ("transposed", torch.zeros(8, 4, device=dev).t(), {}, SHAPE, b"compact row-major"),
        ("every other column", torch.zeros(4, 16, device=dev)[:, ::2], {}, SHAPE, b"compact row-major"),
        ("ndim 0", good, dict(ndim=0), SHAPE, b"ndim"),
        ("ndim 5", good, dict(ndim=5, shape=[1, 1, 1, 4, 8]), SHAPE, b"ndim"),
        ("extent 0", good, dict(shape=[0, 8]), SHAPE, b">= 1"),
        ("misaligned", good, dict(byte_offset=4, shape=[4, 7], strides=[7, 1]), INVALID_ARGUMENT,
         b"16-byte aligned"),
        ("data NULL", good, dict(data=None), INVALID_ARGUMENT, b"NULL"),
        ("kDLOpenCL", good, dict(device_type=4), MEMORY_KIND, b"kDLOpenCL"),
        ("another GPU" if cuda else "GPU memory on a CPU context", good,
         dict(device_type=kDLCUDA, device_id=1) if cuda else dict(device_type=kDLCUDA),
         MEMORY_KIND, b"device" if cuda else b"CPU context"),
    ]
    versioned_bad = [
        ("DLPack 2.0", dict(major=2), INVALID_ARGUMENT, b"major version"),
        ("read-only", dict(flags=1), INVALID_ARGUMENT, b"read-only"),
    ]
    cases = [(n, s, c, st, fr, False) for n, s, c, st, fr in bad]
    cases += [(n, good, c, st, fr, True) for n, c, st, fr in versioned_bad]
    for name, src, change, want_status, fragment, versioned in cases:
        cap = src.__dlpack__(max_version=(1, 0)) if versioned else torch.utils.dlpack.to_dlpack(src)
        counted = Counted(take(cap, versioned), versioned, **change)
        uses = src._use_count()
        status, t = import_(ctx, counted.ptr, versioned)
        msg = lib.hspmn_last_error()
        expect(status == want_status and fragment in msg and not t.value,
               f"bad input {name}: status {status} ({msg.decode()}), want {want_status} naming {fragment.decode()}")
        if t.value:  # wrongly accepted: the library owns it now
            ok(lib.hspmn_tensor_destroy(t), "destroy a wrongly accepted import")
            continue
        expect(counted.calls == 0, f"bad input {name}: the library ran the deleter of a tensor it refused")
        counted.m.deleter(C.pointer(counted.m))  # the caller's to delete, once
        expect(counted.calls == 1 and src._use_count() == uses - 1,
               f"bad input {name}: after the caller's delete, {counted.calls} calls and {src._use_count()} refs")
    status, t = import_(ctx, None)
    expect(status == INVALID_ARGUMENT, f"managed NULL: status {status}")
    status = lib.hspmn_tensor_from_dlpack(None, C.addressof(DLManagedTensor()), C.byref(P()))
    expect(status == INVALID_ARGUMENT, f"ctx NULL: status {status}")

    # a context's own destroy refuses while an imported tensor lives (Java's Context.close closes it first)
    held = Counted(take(torch.utils.dlpack.to_dlpack(good)))
    status, ht = import_(ctx, held.ptr)
    ok(status, "import")
    ok(lib.hspmn_block_destroy(block), "block destroy")
    status = lib.hspmn_context_destroy(ctx)
    expect(status == STATE and held.calls == 0, f"context destroy under an import: {status}, {held.calls} calls")
    ok(lib.hspmn_tensor_destroy(ht), "destroy")
    expect(held.calls == 1, f"import then destroy: {held.calls} deleter calls")
    ok(lib.hspmn_context_destroy(ctx), "context destroy")

    # a stream asks for CUDA: the CPU backend refuses it, AUTO does not fall back to the CPU
    p = lib.hspmn_context_default_params()
    p.backend, p.cuda_stream = 0, CUDA_STREAM_LEGACY
    h = P()
    status = lib.hspmn_context_create(C.byref(p), C.byref(h))
    expect(status == INVALID_ARGUMENT and b"cuda_stream" in lib.hspmn_last_error() and not h.value,
           f"CPU backend with a cuda_stream: status {status}, want INVALID_ARGUMENT")
    if not torch.cuda.is_available():
        p.backend = 2  # AUTO
        status = lib.hspmn_context_create(C.byref(p), C.byref(h))
        expect(status in (NOT_BUILT, NO_DEVICE) and not h.value,
               f"AUTO with a cuda_stream and no GPU: status {status}, want NOT_BUILT or NO_DEVICE (no CPU fallback)")

    if cuda:
        check_streams(lib, context, new_tensor, import_, export, expect, ok)

    st = AllocStats()
    ok(lib.hspmn_alloc_stats_get(C.byref(st)), "stats")
    expect(st.live_bytes == 0 and st.live_tensors == 0 and st.live_contexts == 0,
           f"after everything: {st.live_tensors} tensors, {st.live_contexts} contexts, {st.live_bytes} bytes held")
    for f in failures:
        print("FAIL", f)
    print(f"test_dlpack ({args.backend}): export 3 dtypes, import + forward + ownership + {len(cases)} bad inputs"
          f"{', streams' if cuda else ''}: {checks[0]} checks, {len(failures)} failure(s)")
    return 1 if failures else 0


def check_streams(lib, context, new_tensor, import_, export, expect, ok):
    """A context on a torch stream: stream order with torch on both sides and no sync between (eager and a
    captured graph); the legacy default stream the same way; no wait for a busy second stream."""
    B, S, D = 2, 256, 128
    bp = lib.hspmn_block_default_params()
    bp.dim, bp.num_heads, bp.num_kv_heads = D, 2, 1
    fp = lib.hspmn_forward_default_params()
    gen = torch.Generator().manual_seed(11)
    x_old = torch.randn(B, S, D, generator=gen).to(torch.bfloat16)
    x_new = torch.randn(B, S, D, generator=gen).to(torch.bfloat16)

    def new_block(ctx):
        blk = P()
        ok(lib.hspmn_block_create(ctx, C.byref(bp), 5, C.byref(blk)), "block")
        return blk

    def imported(ctx, t, what):
        """The torch tensor t in ctx through the plain protocol (torch's deleter)."""
        status, h = import_(ctx, take(torch.utils.dlpack.to_dlpack(t)))
        ok(status, what)
        return h

    def release(ctx, blk, *tensors):
        for h in tensors:
            ok(lib.hspmn_tensor_destroy(h), "destroy")
        ok(lib.hspmn_block_destroy(blk), "block destroy")
        ok(lib.hspmn_context_destroy(ctx), "context destroy")

    # the reference: the library's own stream, copied tensors
    ref_ctx = context()
    block = new_block(ref_ctx)
    hx, ho = new_tensor(ref_ctx, 0, (B, S, D)), new_tensor(ref_ctx, 0, (B, S, D))
    refs = []
    for x_host in (x_new, x_old):
        ok(lib.hspmn_tensor_copy_in(hx, x_host.data_ptr(), x_host.numel() * 2), "copy_in")
        ok(lib.hspmn_block_forward(block, C.byref(fp), hx, ho, None), "forward (reference)")
        refs.append(torch.empty(B, S, D, dtype=torch.bfloat16))
        ok(lib.hspmn_tensor_copy_out(ho, refs[-1].data_ptr(), refs[-1].numel() * 2), "copy_out")
    want, want_old = refs
    release(ref_ctx, block, hx, ho)

    lib.hspmn_graph_capture_forward.argtypes = [P, C.POINTER(ForwardParams), P, P, P, C.POINTER(P)]
    lib.hspmn_graph_launch.argtypes = [P]
    lib.hspmn_graph_destroy.argtypes = [P]

    def ordered_run(stream, handle, name, graph=False):
        """torch writes x late on `stream`, the library reads it and writes out, torch reads out: all
        queued without a sync, so only stream order makes the result right."""
        ctx = context(stream=handle, nan_policy=1)  # PROPAGATE: no NaN scan, so no host sync inside
        blk = new_block(ctx)
        with torch.cuda.stream(stream):
            x = x_old.to("cuda")
            x_next = x_new.to("cuda")  # staged now: a pageable upload later might wait for the stream
            out = torch.zeros(B, S, D, dtype=torch.bfloat16, device="cuda")
        torch.cuda.synchronize()
        tx, tout = imported(ctx, x, "import x"), imported(ctx, out, "import out")
        # warm-up on the old x: sizes the scratch, plans the GEMMs, loads the kernels (a cold call may
        # allocate, and cudaFree waits for the device); twice, so one-time work of the first forward of a
        # context (seen once on an H100: a first-stream case whose second forward still waited) is done
        for _ in range(2):
            ok(lib.hspmn_block_forward(blk, C.byref(fp), tx, tout, None), f"warm-up forward on {name}")
            ok(lib.hspmn_context_synchronize(ctx), "synchronize")
        # torch's side of the check runs once before the clock: its allocation, and the first launch of its
        # bf16 -> f32 copy and multiply kernels, which CUDA's lazy module loading loads then (a load may
        # wait for the device: torch's wait, not the library's; on an H100 the first such run reported
        # the sleep over although the forward call had returned at once: BENCHMARKS.md)
        with torch.cuda.stream(stream):
            doubled = torch.empty(B, S, D, dtype=torch.float32, device="cuda")
            doubled.copy_(out)
            doubled.mul_(2)
            done = torch.cuda.Event()
            done.record()
        torch.cuda.synchronize()
        with torch.cuda.stream(stream):
            torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time before x gets its new value
            x.copy_(x_next)
        t0 = time.perf_counter()
        ok(lib.hspmn_block_forward(blk, C.byref(fp), tx, tout, None), f"forward on {name}")
        host_ms = (time.perf_counter() - t0) * 1e3
        with torch.cuda.stream(stream):
            doubled.copy_(out)  # torch reads the library's output in stream order (no allocation)
            doubled.mul_(2)
            done.record()
        expect(not done.query(), f"{name}: the forward waited for the queued work (the check would prove "
               f"nothing; the forward call took {host_ms:.1f} ms on the host)")
        stream.synchronize()
        got = (doubled / 2).to(torch.bfloat16).cpu()
        diff = (got.float() - want.float()).abs().max().item()
        expect(torch.equal(got, want), f"{name}: out differs from the reference forward of the new x "
               f"(max |diff| {diff}): the library did not run in the stream's order")
        view = export(tout)
        expect(view.data_ptr() == out.data_ptr(), f"{name}: out is not torch's memory")
        del view
        gc.collect()
        if graph:
            # a CUDA graph captured on the caller's stream over torch's memory, replayed in stream order
            g = P()
            ok(lib.hspmn_graph_capture_forward(blk, C.byref(fp), tx, tout, None, C.byref(g)), f"capture on {name}")
            stream.synchronize()
            with torch.cuda.stream(stream):
                x_back = x_old.to("cuda")
            stream.synchronize()
            with torch.cuda.stream(stream):
                torch.cuda._sleep(200_000_000)
                x.copy_(x_back)
            ok(lib.hspmn_graph_launch(g), f"graph launch on {name}")
            with torch.cuda.stream(stream):
                doubled = out.float() * 2
                done = torch.cuda.Event()
                done.record()
            expect(not done.query(), f"{name}: the graph launch waited for the queued work")
            stream.synchronize()
            got = (doubled / 2).to(torch.bfloat16).cpu()
            diff = (got.float() - want_old.float()).abs().max().item()
            expect(torch.equal(got, want_old), f"{name}: the graph replay differs from the reference forward of "
                   f"the rewritten x (max |diff| {diff}): not in the stream's order")
            ok(lib.hspmn_graph_destroy(g), "graph destroy")
        release(ctx, blk, tx, tout)

    side = torch.cuda.Stream()
    ordered_run(side, side.cuda_stream, "a torch side stream", graph=True)
    default = torch.cuda.default_stream()
    expect(default.cuda_stream == 0, f"torch's default stream reads {default.cuda_stream}, the test assumed 0")
    ordered_run(default, CUDA_STREAM_LEGACY, "the legacy default stream (cudaStreamLegacy)")

    # no device-wide wait: a busy second stream keeps running through a warm forward, the import, the
    # destroy of an import and hspmn_context_synchronize of a context on the first stream
    mine, busy = torch.cuda.Stream(), torch.cuda.Stream()
    ctx = context(stream=mine.cuda_stream)  # NAN_REJECT: the scan's host sync is on `mine` only
    blk = new_block(ctx)
    with torch.cuda.stream(mine):
        x = x_new.to("cuda")
        out = torch.empty(B, S, D, dtype=torch.bfloat16, device="cuda")
    torch.cuda.synchronize()
    tx, tout = imported(ctx, x, "import x"), imported(ctx, out, "import out")
    ok(lib.hspmn_block_forward(blk, C.byref(fp), tx, tout, None), "warm-up forward")  # sizes the scratch
    ok(lib.hspmn_context_synchronize(ctx), "synchronize")
    with torch.cuda.stream(busy):
        torch.cuda._sleep(4_000_000_000)  # ~2 s at 2 GHz
        busy_done = torch.cuda.Event()
        busy_done.record()
    t0 = time.perf_counter()
    extra = Counted(take(torch.utils.dlpack.to_dlpack(x)))
    status, tx2 = import_(ctx, extra.ptr)
    ok(status, "import under a busy stream")
    ok(lib.hspmn_block_forward(blk, C.byref(fp), tx2, tout, None), "forward under a busy stream")
    ok(lib.hspmn_context_synchronize(ctx), "synchronize under a busy stream")
    ok(lib.hspmn_tensor_destroy(tx2), "destroy an import under a busy stream")
    elapsed = time.perf_counter() - t0
    still_busy = not busy_done.query()
    expect(still_busy and extra.calls == 1,
           f"a context on its own stream waited for another stream: the busy stream finished during "
           f"import + forward + synchronize + destroy ({elapsed * 1e3:.1f} ms; a device-wide sync?)")
    print(f"streams: import + forward + synchronize + destroy took {elapsed * 1e3:.1f} ms while another stream "
          f"was busy ({'still busy after' if still_busy else 'FINISHED before'})")
    busy.synchronize()
    got = out.cpu()
    expect(torch.equal(got, want), "busy-stream run: out differs from the reference")
    release(ctx, blk, tx, tout)


if __name__ == "__main__":
    sys.exit(main())
