"""Configurations too large for the backend's memory are refused before anything is allocated
(native/src/core/footprint.h), through ctypes, on either backend; prints each check and exits 1 when
any fails.

    .venv/bin/python native/reference/check_memory.py [--backend cpu|cuda] [--lib native/build/libhspmn.so]

Each of these must fail with HSPMN_ERR_OUT_OF_MEMORY, a message giving the bytes needed and available
("of device memory" with cudaMemGetInfo's free bytes on CUDA, "of host memory" on the CPU), and the
library's live bytes unchanged:
  model     hspmn_model_create of 8 layers at dim 32768 (15.6e9 parameters per layer)
  decoder   hspmn_decoder_create of 65536 sequences x 2^20 tokens on a small model (64 TB of caches)
  training  hspmn_model_forward (training) over [2048, 8192] tokens of a small model (~0.6 TB of
            activations; the token tensors themselves, 64 MB each, fit)
  tensor    hspmn_tensor_create of 2^38 f32 values (1 TiB) in the backend's memory
Then the same context still works: a small training forward gives a finite loss (the process and the
context survive every refusal).
"""
import argparse
import ctypes as C
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hspmn_ctypes import AllocStats, Context, F32, I32, Lib  # noqa: E402

OUT_OF_MEMORY = 5


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--lib", default="native/build/libhspmn.so")
    a = ap.parse_args()
    lib = Lib(a.lib)
    ctx = Context(lib, a.backend, 0)
    kind = "device memory" if a.backend == "cuda" else "host memory"
    failures = []

    def live():
        s = AllocStats()
        lib.ok(lib.alloc_stats_get(C.byref(s)), "alloc_stats_get")
        return s.live_bytes

    def refused(name, call):
        before = live()
        status = call()
        msg = lib.last_error().decode()
        after = live()
        ok = (status == OUT_OF_MEMORY and kind in msg and "bytes (" in msg and "nothing was allocated" in msg
              and after == before and (a.backend != "cuda" or "cudaMemGetInfo" in msg))
        print(f"{'ok  ' if ok else 'FAIL'} {name}: status {status}, live bytes {before} -> {after}: {msg}")
        if not ok:
            failures.append(name)

    big = lib.model_default_params()
    big.vocab_size, big.num_layers = 256, 8
    big.block.dim, big.block.num_heads, big.block.num_kv_heads = 32768, 256, 64
    h = C.c_void_p()
    refused("model", lambda: lib.model_create(ctx.h, C.byref(big), 1, C.byref(h)))

    small = lib.model_default_params()
    small.vocab_size, small.num_layers = 256, 2
    small.block.dim, small.block.num_heads, small.block.num_kv_heads = 256, 4, 2
    m = C.c_void_p()
    lib.ok(lib.model_create(ctx.h, C.byref(small), 1, C.byref(m)), "model_create (small)")
    d = C.c_void_p()
    refused("decoder", lambda: lib.decoder_create(m, 65536, 1 << 20, C.byref(d)))

    B, S = 2048, 8192
    tok = ctx.tensor(I32, [B, S])
    tgt = ctx.tensor(I32, [B, S])
    fp = lib.model_forward_default_params()
    fp.training = 1
    refused("training", lambda: lib.model_forward(m, C.byref(fp), tok, tgt, None, None))

    t = C.c_void_p()
    shape = (C.c_int64 * 1)(1 << 38)
    refused("tensor", lambda: lib.tensor_create(ctx.h, F32, ctx.memory, 1, shape, C.byref(t)))

    # the context still works
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256, size=(2, 64), dtype=np.int32)
    tok2 = ctx.tensor(I32, [2, 64], ids)
    tgt2 = ctx.tensor(I32, [2, 64], np.roll(ids, -1, axis=1))
    loss = ctx.tensor(F32, [2])
    status = lib.model_forward(m, C.byref(fp), tok2, tgt2, loss, None)
    value = ctx.read(loss, F32, [2])[0] if status == 0 else float("nan")
    ok = status == 0 and math.isfinite(value)
    print(f"{'ok  ' if ok else 'FAIL'} after the refusals: a small training forward gives loss {value} (status {status}"
          f"{'' if status == 0 else ': ' + lib.last_error().decode()})")
    if not ok:
        failures.append("afterwards")
    lib.ok(lib.model_destroy(m), "model_destroy")
    ctx.close()
    print(f"check_memory ({a.backend}): {'all ok' if not failures else 'FAILED: ' + ', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
