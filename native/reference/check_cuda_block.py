"""The CUDA block against the CPU block of the same libhspmn, on a GPU machine (ctypes).

    python3 native/reference/check_cuda_block.py [--lib native/build/libhspmn.so]

The CPU backend is the float32 twin of the float64 reference (native/reference/check_native.py
judges it there), so it is the yardstick here, at shapes the goldens do not reach with the head dims
the CUDA attention is compiled for (64, 128): B > 1, S not a multiple of any tile, GQA/MQA/MHA, top-k
and threshold routing, pinned ragged routing (counts from 0 to C, junk past counts) with a noise
tensor, training noise from the generator (off in the ties cases, whose runs of 3 equal tokens have
equal scores), HOST / PINNED / DEVICE tensors, accumulate, the NaN policy's device scan; S = 20000
for the radix select; conv_kernel 9 for the scalar causal_conv kernels (the vector ones take K <= 8).

What each check means:
- gumbel_noise: the same Philox draw; the CUDA device computes -ln(-ln u) in f64 as the CPU does,
  so at most 1 ulp apart (the libm's last bit).
- route: logits, probs at 1e-5 (f32 from the same f64 dot, summed in another order); indices and
  counts exactly (random data: a near-tie can flip; then the line says how many tokens differ).
- forward / backward: out, d_x, weight gradients at 1e-2 relative (MODEL.md's bf16 bound: the CUDA
  backend rounds activations to bf16 between ops); aux at 1e-5. router.b / router.log_temp are
  cancelling sums (see check_native.py) and are printed, not judged. topk_s5_k1 has 2 selected rows
  in all, so its attn.q/attn.k gradients are rank-2 sums of dq, which carries the bf16 path's noise
  through the softmax gradient P (dP - delta) un-averaged, above the larger shapes' error (measured
  over seeds: BENCHMARKS.md "From code comments"); judged at 2e-2 there.
- memory kinds: HOST and PINNED tensors give bit-identical results to DEVICE ones.
Exit status 1 on any failure.
"""

import ctypes as C
import math
import os
import sys
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import check_harness  # noqa: E402
from hspmn_ctypes import AllocStats, BackwardParams, BlockParams, Context, ContextParams, ForwardParams, Lib  # noqa: E402,F401

BF16, F32, I32 = 0, 1, 2
HOST, DEVICE, PINNED = 0, 1, 2
CPU, CUDA = 0, 1
TOPK, THRESHOLD = 0, 1
PARAMS = ["router.w", "router.b", "router.log_temp", "reflex.norm", "reflex.conv", "reflex.gate", "reflex.up",
          "reflex.down", "attn.norm", "attn.q", "attn.k", "attn.v", "attn.o"]
CANCELLING = ("router.b", "router.log_temp")
ERR_NON_FINITE = 11


def Ctx(lib, backend):
    """A context of backend CPU or CUDA (4 threads) whose tensors default to that backend's memory."""
    ctx = Context(lib, "cuda" if backend == CUDA else "cpu", 4)
    ctx.backend = backend  # results are keyed by it
    return ctx


def bf16_bits(a):
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def rel(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    n = np.linalg.norm(ref)
    return float(np.linalg.norm(got - ref) / (n if n > 0 else 1.0))


def run_case(lib, rep, B, S, D, H, Hkv, routing, rho, conv=4, pinned=False, memory_kinds=False, ties=False,
             seed=None, qk_bound=1e-2):
    """One case: rep is its check_harness.Case (rep.name names it)."""
    name = rep.name
    bp = lib.block_default_params()
    bp.dim, bp.num_heads, bp.num_kv_heads, bp.conv_kernel, bp.routing, bp.sparsity_k = D, H, Hkv, conv, routing, rho
    bp.router_entropy_coef = 0.01
    rng = np.random.default_rng(zlib.crc32(name.encode()) if seed is None else seed)
    x = bf16_bits(rng.standard_normal((B, S, D)))
    if ties:  # runs of 3 equal tokens: equal scores, so top-k must take the lower positions
        x = np.repeat(x[:, ::3], 3, axis=1)[:, :S].copy()
    d_out = bf16_bits(0.1 * rng.standard_normal((B, S, D)))
    d_aux = np.array([0.5], np.float32)
    seed, step, layer = 7, 11, 2
    cpu = Ctx(lib, CPU)
    try:
        gpu = Ctx(lib, CUDA)
    except RuntimeError:
        cpu.close()
        raise
    try:
        bc, bg = cpu.block(bp, 1234), gpu.block(bp, 1234)
        for p in PARAMS:  # the same host-side init on both backends, bit for bit
            shape = param_shape(p, D, H, Hkv, conv, bp.mlp_ratio)
            tc, tg = cpu.tensor(BF16, shape), gpu.tensor(BF16, shape)
            lib.ok(lib.block_get_param(bc, p.encode(), tc), f"get_param {p}")
            lib.ok(lib.block_get_param(bg, p.encode(), tg), f"get_param {p}")
            diff = np.sum(cpu.read(tc, BF16, shape).view(np.uint32) != gpu.read(tg, BF16, shape).view(np.uint32))
            rep.check(f"init {p}: values differing", float(diff), 0.0)
        fp = lib.forward_default_params()
        fp.training, fp.noise, fp.seed, fp.step, fp.layer = 1, 0 if ties else 1, seed, step, layer

        # gumbel_noise
        gc, gg = cpu.tensor(F32, (B, S)), gpu.tensor(F32, (B, S))
        lib.ok(lib.gumbel_noise(cpu.h, seed, step, layer, gc), "gumbel cpu")
        lib.ok(lib.gumbel_noise(gpu.h, seed, step, layer, gg), "gumbel cuda")
        a, b = cpu.read(gc, F32, (B, S)), gpu.read(gg, F32, (B, S))
        ulp = np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64)).max()
        rep.check("gumbel_noise max ulp", float(ulp), 1.0)

        # route
        k = max(1, int(math.floor(S * rho))) if routing == TOPK else S
        outs = {}
        for ctx, blk in ((cpu, bc), (gpu, bg)):
            t = dict(logits=ctx.tensor(F32, (B, S)), probs=ctx.tensor(F32, (B, S)), idx=ctx.tensor(I32, (B, k)),
                     cnt=ctx.tensor(I32, (B,)), aux=ctx.tensor(F32, (1,)))
            lib.ok(lib.block_route(blk, C.byref(fp), ctx.tensor(BF16, (B, S, D), x), None, t["logits"], t["probs"],
                                   t["idx"], t["cnt"], t["aux"]), "route")
            outs[ctx.backend] = dict(logits=ctx.read(t["logits"], F32, (B, S)), probs=ctx.read(t["probs"], F32, (B, S)),
                                     idx=ctx.read(t["idx"], I32, (B, k)), cnt=ctx.read(t["cnt"], I32, (B,)),
                                     aux=ctx.read(t["aux"], F32, (1,)))
        rc, rg = outs[CPU], outs[CUDA]
        rep.check("route.logits", rel(rg["logits"], rc["logits"]), 1e-5)
        rep.check("route.probs", rel(rg["probs"], rc["probs"]), 1e-5)
        rep.check("route.aux", rel(rg["aux"], rc["aux"]), 1e-5)
        rep.check("route.counts differing", float(np.sum(rg["cnt"] != rc["cnt"])), 0.0)
        rep.check("route.indices differing", float(np.sum(rg["idx"] != rc["idx"])), 0.0)
        if k == 1:
            rep.info("route: position selected in sequence 0", float(rc["idx"][0, 0]))

        # forward (own routing, or pinned ragged routing with junk past counts), then backward
        if pinned:
            C_ = k + 3
            cnt = np.array([(b * 37) % (C_ + 1) for b in range(B)], np.int32)
            cnt[0] = C_
            if B > 1:
                cnt[1] = 0
            ind = np.full((B, C_), 12345, np.int32)
            for b in range(B):
                ind[b, :cnt[b]] = np.sort(rng.choice(S, size=cnt[b], replace=False))
            noise = (2.0 * rng.standard_normal((B, S))).astype(np.float32)
        results = {}
        for ctx, blk in ((cpu, bc), (gpu, bg)):
            out, aux, d_x = ctx.tensor(BF16, (B, S, D)), ctx.tensor(F32, (1,)), ctx.tensor(BF16, (B, S, D))
            xt = ctx.tensor(BF16, (B, S, D), x)
            if pinned:  # with a noise tensor too (it moves n, so the gate and temperature gradients)
                lib.ok(lib.block_forward_routed(blk, C.byref(fp), xt, ctx.tensor(F32, (B, S), noise),
                                                ctx.tensor(I32, ind.shape, ind),
                                                ctx.tensor(I32, cnt.shape, cnt), out, aux), "forward_routed")
            else:
                lib.ok(lib.block_forward(blk, C.byref(fp), xt, out, aux), "forward")
            bw = lib.backward_default_params()
            lib.ok(lib.block_backward(blk, C.byref(bw), ctx.tensor(BF16, (B, S, D), d_out), ctx.tensor(F32, (1,), d_aux),
                                      d_x), "backward")
            r = dict(out=ctx.read(out, BF16, (B, S, D)), aux=ctx.read(aux, F32, (1,)), d_x=ctx.read(d_x, BF16, (B, S, D)))
            grads = {}
            for p in PARAMS:
                shape = param_shape(p, D, H, Hkv, conv, bp.mlp_ratio)
                gt = ctx.tensor(F32, shape)
                lib.ok(lib.block_get_grad(blk, p.encode(), gt), f"get_grad {p}")
                grads[p] = ctx.read(gt, F32, shape)
            # accumulate: a second backward adds the same gradients
            bw.accumulate = 1
            lib.ok(lib.block_backward(blk, C.byref(bw), ctx.tensor(BF16, (B, S, D), d_out), ctx.tensor(F32, (1,), d_aux),
                                      None), "backward accumulate")
            gt = ctx.tensor(F32, param_shape("attn.q", D, H, Hkv, conv, bp.mlp_ratio))
            lib.ok(lib.block_get_grad(blk, b"attn.q", gt), "get_grad attn.q")
            r["acc_q"] = ctx.read(gt, F32, param_shape("attn.q", D, H, Hkv, conv, bp.mlp_ratio))
            r["grads"] = grads
            results[ctx.backend] = r
        fc, fg = results[CPU], results[CUDA]
        rep.check("forward.out", rel(fg["out"], fc["out"]), 1e-2)
        rep.check("forward.aux", rel(fg["aux"], fc["aux"]), 1e-5)
        rep.check("backward.d_x", rel(fg["d_x"], fc["d_x"]), 1e-2)
        for p in PARAMS:
            e = rel(fg["grads"][p], fc["grads"][p])
            if p in CANCELLING:
                rep.info(f"grad.{p} (cancelling sum)", e)
            else:
                rep.check(f"grad.{p}", e, qk_bound if p in ("attn.q", "attn.k") else 1e-2)
        rep.check("accumulate: attn.q == 2x", rel(fg["acc_q"], 2 * fg["grads"]["attn.q"]), 1e-6)

        if memory_kinds:
            ref = None
            for mem in (DEVICE, HOST, PINNED):
                out = gpu.tensor(BF16, (B, S, D), memory=mem)
                lib.ok(lib.block_forward(bg, C.byref(fp), gpu.tensor(BF16, (B, S, D), x, memory=mem), out,
                                         gpu.tensor(F32, (1,), memory=mem)), f"forward memory {mem}")
                got = gpu.read(out, BF16, (B, S, D))
                if ref is None:
                    ref = got
                else:
                    rep.check(f"memory {mem}: out bits differ", float(np.sum(got.view(np.uint32) != ref.view(np.uint32))), 0.0)

        # NaN policy REJECT scans device inputs with find_non_finite
        bad = x.copy()
        bad.reshape(-1)[B * S * D // 2 + 3] = 0x7FC0
        st = lib.block_forward(bg, C.byref(fp), gpu.tensor(BF16, (B, S, D), bad), gpu.tensor(BF16, (B, S, D)), None)
        rep.check("NaN input rejected", 0.0 if st == ERR_NON_FINITE else 1.0, 0.0)
    finally:
        cpu.close()
        gpu.close()


def param_shape(p, D, H, Hkv, conv, mlp_ratio):
    F, KV = mlp_ratio * D, Hkv * (D // H)
    return {"router.w": (D,), "router.b": (1,), "router.log_temp": (1,), "reflex.norm": (D,),
            "reflex.conv": (D, conv), "reflex.gate": (F, D), "reflex.up": (F, D), "reflex.down": (D, F),
            "attn.norm": (D,), "attn.q": (D, D), "attn.k": (KV, D), "attn.v": (KV, D), "attn.o": (D, D)}[p]


def main():
    args = check_harness.parse(check_harness.parser(__doc__, cases=True, backend=False))
    lib = Lib(args.lib)
    cases = [
        ("topk_gqa_b2_s300", dict(B=2, S=300, D=256, H=4, Hkv=2, routing=TOPK, rho=0.2, memory_kinds=True)),
        ("topk_mqa_dh128_s1025", dict(B=1, S=1025, D=512, H=4, Hkv=1, routing=TOPK, rho=0.5, conv=3)),
        ("threshold_mha_b3_s77", dict(B=3, S=77, D=256, H=4, Hkv=4, routing=THRESHOLD, rho=0.5)),
        ("pinned_ragged_b4_s130", dict(B=4, S=130, D=256, H=4, Hkv=2, routing=TOPK, rho=0.25, pinned=True)),
        ("topk_s5_k1", dict(B=2, S=5, D=128, H=2, Hkv=1, routing=TOPK, rho=0.2, conv=4, qk_bound=2e-2)),
        ("topk_rho1_b2_s64", dict(B=2, S=64, D=128, H=2, Hkv=2, routing=TOPK, rho=1.0)),
        ("topk_ties_b2_s200", dict(B=2, S=200, D=128, H=2, Hkv=1, routing=TOPK, rho=0.3, ties=True)),
        ("threshold_ties_b2_s90", dict(B=2, S=90, D=128, H=2, Hkv=2, routing=THRESHOLD, rho=0.5, ties=True)),
        ("conv9_scalar_paths_b2_s50", dict(B=2, S=50, D=128, H=2, Hkv=1, routing=TOPK, rho=0.3, conv=9)),
        ("topk_long_b2_s20000", dict(B=2, S=20000, D=128, H=2, Hkv=1, routing=TOPK, rho=0.05, conv=2)),
        # the longest context, B=1 S=131072; rho small so the CPU side stays within seconds
        ("topk_long_b1_s131072", dict(B=1, S=131072, D=128, H=2, Hkv=1, routing=TOPK, rho=0.01, conv=3)),
    ]
    picked = check_harness.selected(cases, args)
    rows, failures = [], []
    failures += check_harness.run_cases(
        picked, lambda c: run_case(lib, check_harness.Case(c[0], rows, failures), **c[1]))
    return check_harness.verdict(lib, rows, failures, f"check_cuda_block: {len(picked)} cases, "
                                 "{checks} checks, {failures} failures")


if __name__ == "__main__":
    sys.exit(main())
