"""Times one CUDA block with device tensors: inference forward, training forward and backward, wall
time per call after warm-up, synchronised with hspmn_context_synchronize.

    python3 native/bench/bench_cuda_block.py [--lib ...] [B S D H Hkv rho reps]
"""

import argparse
import ctypes as C
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
from check_cuda_block import BF16, CUDA, F32, ROOT, Ctx, Lib, bf16_bits  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=os.path.join(ROOT, "native", "build", "libhspmn.so"))
    ap.add_argument("shape", nargs="*", type=float, default=[4, 4096, 2048, 16, 4, 0.25, 20])
    a = ap.parse_args()
    B, S, D, H, Hkv = (int(v) for v in a.shape[:5])
    rho, reps = a.shape[5], int(a.shape[6])
    lib = Lib(a.lib)
    ctx = Ctx(lib, CUDA)
    try:
        bp = lib.block_default_params()
        bp.dim, bp.num_heads, bp.num_kv_heads, bp.sparsity_k = D, H, Hkv, rho
        blk = ctx.block(bp, 1)
        rng = np.random.default_rng(0)
        x = ctx.tensor(BF16, (B, S, D), bf16_bits(rng.standard_normal((B, S, D))))
        d_out = ctx.tensor(BF16, (B, S, D), bf16_bits(0.01 * rng.standard_normal((B, S, D))))
        out, d_x, aux = ctx.tensor(BF16, (B, S, D)), ctx.tensor(BF16, (B, S, D)), ctx.tensor(F32, (1,))
        fi, ft = lib.forward_default_params(), lib.forward_default_params()
        fi.training, ft.training = 0, 1
        bw = lib.backward_default_params()

        def timed(what, fn):
            for _ in range(3):
                fn()
            lib.ok(lib.context_synchronize(ctx.h), "sync")
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            lib.ok(lib.context_synchronize(ctx.h), "sync")
            ms = (time.perf_counter() - t0) * 1e3 / reps
            print(f"{what:<28} {ms:8.3f} ms")
            return ms

        print(f"B={B} S={S} D={D} H={H} Hkv={Hkv} rho={rho} F={bp.mlp_ratio * D}")
        timed("forward (inference)", lambda: lib.ok(lib.block_forward(blk, C.byref(fi), x, out, None), "fwd"))
        timed("forward (training)", lambda: lib.ok(lib.block_forward(blk, C.byref(ft), x, out, aux), "fwd"))
        lib.ok(lib.block_forward(blk, C.byref(ft), x, out, aux), "fwd")
        timed("backward", lambda: lib.ok(lib.block_backward(blk, C.byref(bw), d_out, None, d_x), "bwd"))
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())
