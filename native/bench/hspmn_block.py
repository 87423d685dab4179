"""HSPMN block benchmarks on the CUDA backend through libhspmn's C ABI (ctypes), in the modes of the
CUDA issue; the dense baseline is native/bench/dense_block.py, run in the same ci/gpu.sh call.

    python3 native/bench/hspmn_block.py --lib build-gpu/libhspmn.so [--mode throughput|longctx|train|all]
        [--iters 10] [--json OUT.json]

Config: D=2048, H=16, Hkv=4, F=8192, rho=0.2, top-k, bf16, device tensors. Each time is the median of
`iters` calls, each call bracketed by hspmn_context_synchronize (so it includes the host-side cost of
the call); peak GB is hspmn_alloc_stats' peak of library-held bytes (parameters, caches, scratch,
tensors) during the mode.
"""

import ctypes as C
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
from check_cuda_block import BF16, CUDA, F32, AllocStats, Ctx, Lib, bf16_bits  # noqa: E402

from bench_common import arg_parser, configs, failed, measured, run_configs, warm_for, write_json  # noqa: E402


def median_ms(lib, ctx, fn, iters, warmup=2, warmup_s=0.0):
    for _ in range(warmup):
        fn()
    lib.ok(lib.context_synchronize(ctx.h), "sync")
    warm_for(warmup_s, fn, lambda: lib.ok(lib.context_synchronize(ctx.h), "sync"))
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        lib.ok(lib.context_synchronize(ctx.h), "sync")
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]


def random_bf16(shape, rng):
    # a 16M-value random pattern tiled over the tensor: real (non-zero) data without minutes of RNG
    n = int(np.prod(shape))
    pat = bf16_bits(rng.standard_normal(min(n, 1 << 24), dtype=np.float32))
    return np.resize(pat, n).reshape(shape)


def run(lib, name, B, S, train, iters, rho=0.2, warmup_s=0.0):
    ctx = Ctx(lib, CUDA)
    try:
        lib.alloc_stats_reset_peak()
        bp = lib.block_default_params()
        bp.dim, bp.num_heads, bp.num_kv_heads, bp.sparsity_k = 2048, 16, 4, rho
        blk = ctx.block(bp, 1)
        rng = np.random.default_rng(0)
        x = ctx.tensor(BF16, (B, S, 2048), random_bf16((B, S, 2048), rng))
        out = ctx.tensor(BF16, (B, S, 2048))
        fp = lib.forward_default_params()
        if train:
            fp.training = 1
            d_out = ctx.tensor(BF16, (B, S, 2048), random_bf16((B, S, 2048), rng))
            d_x, aux = ctx.tensor(BF16, (B, S, 2048)), ctx.tensor(F32, (1,))
            bw = lib.backward_default_params()

            def step():
                lib.ok(lib.block_forward(blk, C.byref(fp), x, out, aux), "forward")
                lib.ok(lib.block_backward(blk, C.byref(bw), d_out, None, d_x), "backward")
        else:
            fp.training = 0

            def step():
                lib.ok(lib.block_forward(blk, C.byref(fp), x, out, None), "forward")
        ms = median_ms(lib, ctx, step, iters, warmup_s=warmup_s)
        st = AllocStats()
        lib.ok(lib.alloc_stats_get(C.byref(st)), "alloc_stats")
        return measured(name, B, S, train, ms, st.peak_bytes / 2**30, rho=rho)
    except RuntimeError as e:
        return failed(name, B, S, train, str(e))
    finally:
        ctx.close()


def main():
    ap = arg_parser(__doc__)
    ap.add_argument("--lib", default=os.path.join(HERE, "..", "..", "build-gpu", "libhspmn.so"))
    a = ap.parse_args()
    lib = Lib(a.lib)
    results = run_configs(configs("hspmn", a.mode),
                          lambda name, B, S, train: run(lib, name, B, S, train, a.iters, warmup_s=a.warmup_s))
    write_json(a.json, results)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
