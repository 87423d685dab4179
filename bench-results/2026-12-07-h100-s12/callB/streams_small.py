"""HSPMN_STREAMS 1 vs 2 at smaller blocks than the issue's (where kernels may not fill the GPU): the
block forward (inference) and forward+backward (training), median of 20 calls, alternating settings."""
import ctypes as C, os, sys
import numpy as np
sys.path.insert(0, "native/bench"); sys.path.insert(0, "native/reference")
from hspmn_block import median_ms, random_bf16
from check_cuda_block import BF16, CUDA, F32, Ctx, Lib

lib = Lib(sys.argv[1])
SHAPES = [(384, 6, 2, 64, 256), (384, 6, 2, 8, 1024), (1024, 8, 2, 16, 2048), (2048, 16, 4, 4, 4096)]
for D, H, Hkv, B, S in SHAPES:
    for train in (0, 1):
        res = {"1": [], "2": []}
        for st in ("1", "2", "1", "2"):
            os.environ["HSPMN_STREAMS"] = st
            ctx = Ctx(lib, CUDA)
            try:
                bp = lib.block_default_params()
                bp.dim, bp.num_heads, bp.num_kv_heads, bp.sparsity_k = D, H, Hkv, 0.2
                blk = ctx.block(bp, 1)
                rng = np.random.default_rng(0)
                x = ctx.tensor(BF16, (B, S, D), random_bf16((B, S, D), rng))
                out, aux = ctx.tensor(BF16, (B, S, D)), ctx.tensor(F32, (1,))
                d_out = ctx.tensor(BF16, (B, S, D), random_bf16((B, S, D), rng))
                d_x = ctx.tensor(BF16, (B, S, D))
                fp = lib.forward_default_params(); fp.training = train
                bw = lib.backward_default_params()
                def step():
                    lib.ok(lib.block_forward(blk, C.byref(fp), x, out, aux), "forward")
                    if train:
                        lib.ok(lib.block_backward(blk, C.byref(bw), d_out, None, d_x), "backward")
                res[st].append(median_ms(lib, ctx, step, 20, warmup=3))
            finally:
                ctx.close()
        print(f"D={D} H={H} Hkv={Hkv} B={B} S={S} {'train' if train else 'infer'}: "
              f"1 stream {res['1'][0]:.3f} / {res['1'][1]:.3f} ms, 2 streams {res['2'][0]:.3f} / {res['2'][1]:.3f} ms, "
              f"ratio {min(res['1']) / min(res['2']):.3f}", flush=True)
