"""ctypes view of libhspmn's C ABI (native/include/hspmn.h) shared by the Python checks and benchmarks: the
structs, constants and prototypes generated into hspmn_h.py (ci/bindings.sh), the library's functions as
lib.<name without hspmn_>, and the hand-written helpers below."""

import ctypes as C
import math

import numpy as np

from hspmn_h import *  # noqa: F401,F403  the structs and constants of hspmn.h, re-exported
import hspmn_h


class Lib:
    """Every function of hspmn.h with its ctypes prototype (hspmn_h.FUNCTIONS), as lib.<name without hspmn_>."""

    def __init__(self, path):
        L = C.CDLL(path)
        for name, (res, args) in hspmn_h.FUNCTIONS.items():
            f = getattr(L, name)
            f.restype, f.argtypes = res, args
            setattr(self, name[len("hspmn_"):], f)

    def ok(self, status, what):
        if status != 0:
            raise RuntimeError(f"{what}: status {status}: {self.last_error().decode()}")


# dtype and memory codes of hspmn.h, and what each --backend of the checks uses for every tensor
BF16, F32, I32 = hspmn_h.HSPMN_DTYPE_BF16, hspmn_h.HSPMN_DTYPE_F32, hspmn_h.HSPMN_DTYPE_I32
HOST, DEVICE = hspmn_h.HSPMN_MEMORY_HOST, hspmn_h.HSPMN_MEMORY_DEVICE
# --backend: (hspmn_backend, memory of every tensor)
BACKENDS = {"cpu": (hspmn_h.HSPMN_BACKEND_CPU, HOST), "cuda": (hspmn_h.HSPMN_BACKEND_CUDA, DEVICE)}


def bf16_bits_to_f32(bits):
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def rel(got, ref):
    """||got - ref|| / ||ref|| in float64 (0 when both are 0, inf when only ref is)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    den = np.linalg.norm(ref)
    num = np.linalg.norm(got - ref)
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return float(num / den)


class Context:
    """A context of one backend; every tensor it makes lives in that backend's memory of BACKENDS and is
    destroyed by close()."""

    def __init__(self, lib, backend, threads):
        self.lib = lib
        self.memory = BACKENDS[backend][1]
        p = lib.context_default_params()
        p.backend, p.num_threads = BACKENDS[backend][0], threads
        h = C.c_void_p()
        lib.ok(lib.context_create(C.byref(p), C.byref(h)), "context_create")
        self.h = h
        self.tensors = []

    def tensor(self, dtype, shape, data=None):
        shape = list(shape)
        arr = (C.c_int64 * len(shape))(*shape)
        h = C.c_void_p()
        self.lib.ok(self.lib.tensor_create(self.h, dtype, self.memory, len(shape), arr, C.byref(h)), "tensor_create")
        self.tensors.append(h)
        if data is not None:
            data = np.ascontiguousarray(data)
            self.lib.ok(self.lib.tensor_copy_in(h, data.ctypes.data, data.nbytes), "copy_in")
        return h

    def read(self, h, dtype, shape):
        np_dtype = {BF16: np.uint16, F32: np.float32, I32: np.int32}[dtype]
        out = np.empty(shape, dtype=np_dtype)
        self.lib.ok(self.lib.tensor_copy_out(h, out.ctypes.data, out.nbytes), "copy_out")
        if dtype == BF16:
            out = bf16_bits_to_f32(out)
        return out

    def close(self):
        for t in self.tensors:
            self.lib.ok(self.lib.tensor_destroy(t), "tensor_destroy")
        self.tensors = []
        self.lib.ok(self.lib.context_destroy(self.h), "context_destroy")
