"""hspmn_tensor_to_dlpack through PyTorch's DLPack import (CPU backend, or --backend cuda with DEVICE
tensors imported as CUDA tensors): the framework's tensor shares
the library's memory both ways, for bf16, f32 and i32; the library refuses to free an exported tensor
until the framework drops its view (the deleter runs), and then frees it with no bytes left behind.

    .venv/bin/python native/reference/test_dlpack.py [--backend cpu|cuda] [--lib native/build/libhspmn.so]
"""
import argparse
import ctypes as C
import gc
import os
import sys

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hspmn_ctypes import AllocStats, ContextParams  # noqa: E402

HSPMN_ERR_STATE = 10


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=os.path.join(ROOT, "native", "build", "libhspmn.so"))
    ap.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    args = ap.parse_args()
    lib = C.CDLL(args.lib)
    cuda = args.backend == "cuda"
    memory = 1 if cuda else 0  # DEVICE on CUDA, HOST on the CPU
    P = C.c_void_p
    lib.hspmn_last_error.restype = C.c_char_p
    lib.hspmn_tensor_to_dlpack.argtypes = [P, C.POINTER(P)]
    lib.hspmn_tensor_create.argtypes = [P, C.c_int32, C.c_int32, C.c_int32, C.POINTER(C.c_int64), C.POINTER(P)]
    lib.hspmn_tensor_copy_in.argtypes = [P, P, C.c_int64]
    lib.hspmn_tensor_copy_out.argtypes = [P, P, C.c_int64]
    lib.hspmn_tensor_destroy.argtypes = [P]
    lib.hspmn_context_destroy.argtypes = [P]
    capsule_new = C.pythonapi.PyCapsule_New
    capsule_new.restype = C.py_object
    capsule_new.argtypes = [P, C.c_char_p, P]
    failures = []

    def ok(status, what):
        if status != 0:
            raise RuntimeError(f"{what}: status {status}: {lib.hspmn_last_error().decode()}")

    params = ContextParams(1 if cuda else 0, 0, 1, 0)
    ctx = P()
    ok(lib.hspmn_context_create(C.byref(params), C.byref(ctx)), "context")
    for dtype_code, torch_dtype in ((0, torch.bfloat16), (1, torch.float32), (2, torch.int32)):
        shape = (3, 5, 7)
        t = P()
        ok(lib.hspmn_tensor_create(ctx, dtype_code, memory, 3, (C.c_int64 * 3)(*shape), C.byref(t)), "tensor")
        src = (torch.arange(105) - 50).reshape(shape).to(torch_dtype)
        ok(lib.hspmn_tensor_copy_in(t, src.data_ptr(), src.numel() * src.element_size()), "copy_in")
        managed = P()
        ok(lib.hspmn_tensor_to_dlpack(t, C.byref(managed)), "to_dlpack")
        lib.hspmn_context_synchronize(ctx)
        view = torch.from_dlpack(capsule_new(managed, b"dltensor", None))
        if cuda and not view.is_cuda:
            failures.append(f"{torch_dtype}: a DEVICE tensor was imported on {view.device}")
        if view.dtype != torch_dtype or tuple(view.shape) != shape or not torch.equal(view.cpu(), src):
            failures.append(f"{torch_dtype}: imported {view.dtype} {tuple(view.shape)} differs from what was written")
        view[1, 2, 3] = 42  # written through the framework ...
        if cuda:
            torch.cuda.synchronize()
        back = torch.empty_like(src)
        ok(lib.hspmn_tensor_copy_out(t, back.data_ptr(), back.numel() * back.element_size()), "copy_out")
        if back[1, 2, 3].item() != 42:
            failures.append(f"{torch_dtype}: a write through the DLPack view is not in the library's tensor")
        status = lib.hspmn_tensor_destroy(t)  # ... and the library refuses to free memory still shared
        if status != HSPMN_ERR_STATE or b"DLPack" not in lib.hspmn_last_error():
            failures.append(f"{torch_dtype}: destroy while exported gave {status}, want STATE naming DLPack")
        del view
        gc.collect()
        ok(lib.hspmn_tensor_destroy(t), "destroy after the deleter ran")
    ok(lib.hspmn_context_destroy(ctx), "context destroy")
    st = AllocStats()
    ok(lib.hspmn_alloc_stats_get(C.byref(st)), "stats")
    if st.live_bytes or st.live_tensors:
        failures.append(f"after everything: {st.live_tensors} tensors, {st.live_bytes} bytes still held")
    for f in failures:
        print("FAIL", f)
    print(f"test_dlpack ({args.backend}): 3 dtypes, {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
