"""Runs every golden case through libhspmn (ctypes) and prints ||got - ref|| / ||ref|| per output and
gradient; exits 1 when any error passes its bound or a routing decision differs.

    .venv/bin/python native/reference/check_native.py [--lib native/build/libhspmn.so]
        [--goldens java/hspmn/src/test/resources/goldens] [--threads 2] [--backend cpu|cuda]

Bounds: the one rule of native/reference/tolerances.json, which Java's Parity (GoldenParityTest,
GpuGoldenParityTest) reads too, so both judge a golden case alike (Parity.Tolerances explains the
numbers). The CPU backend rounds only its bf16 outputs (out, d_x): each may be off by cpu_bf16_slack x
the error of the reference rounded once to bf16, + cpu_bf16_floor. Its float32 results (logits, probs,
aux, parameter gradients) by max(f32, 2 x PyTorch's own float32 error of that quantity) from
java/hspmn/src/test/resources/f32-reference-errors.json (written by java/hspmn/src/test/python/f32_reference_errors.py
with the SHA-256 of the golden file it read; a missing or stale entry fails the case, as in Java): the
router's scalar gradients are sums whose terms cancel (topk_k1: sum |dL/dl_i| is 220x |dL/db|), which
float32 itself cannot sum closer. Indices and counts must match exactly: make_goldens keeps a margin
between selected and rejected scores.

--backend cuda runs every tensor in DEVICE memory of a CUDA context. That backend feeds bf16 operands
to its GEMMs and attention (activations and their gradients are rounded to bf16 between ops), so
out and d_x are judged at ideal bf16 error + bf16 and parameter gradients at max(bf16, 2 x PyTorch's own
error when it runs the reference in bfloat16, keys "bf16:grad.<name>"): Parity.Tolerances.bf16Backend.
Routing (logits, probs, aux, noise) stays float32 (float64 dots, as the CPU) and keeps the CPU's float32
rule; indices and counts stay exact. The synthetic D=256 case has no reference-error entries: its
gradients are held to f32 (CPU) or bf16 (CUDA).
"""

import ctypes as C
import glob
import hashlib
import json
import math
import os
import sys

import numpy as np
import torch
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_harness  # noqa: E402
import hspmn_ref  # noqa: E402
from hspmn_ctypes import (BACKENDS, BF16, F32, I32, AllocStats, BackwardParams, BlockParams, Context,  # noqa: E402,F401
                          ContextParams, ForwardParams, Lib, bf16_bits_to_f32, rel)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
REFERENCE_ERRORS = os.path.join(ROOT, "java", "hspmn", "src", "test", "resources", "f32-reference-errors.json")

# The one tolerance rule (tolerances.json, read by Java's Parity too): rule() picks the backend's part.
with open(os.path.join(HERE, "tolerances.json")) as _f:
    TOL = json.load(_f)
F32_BOUND = TOL["f32"]               # float32 results (routing, aux) of either backend
BF16_PATH_BOUND_CUDA = TOL["bf16"]
GRAD_BOUND = F32_BOUND  # the synthetic case's gradients; main() widens it for --backend cuda

BACKEND = "cpu"  # --backend, one of hspmn_ctypes.BACKENDS
PARAMS = ["router.w", "router.b", "router.log_temp", "reflex.norm", "reflex.conv", "reflex.gate", "reflex.up",
          "reflex.down", "attn.norm", "attn.q", "attn.k", "attn.v", "attn.o"]


def load_case(path):
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        tensors = {}
        for k in f.keys():
            t = f.get_tensor(k)
            tensors[k] = t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()
    return meta, tensors


def rule():
    """Parity.Tolerances.cpu() / bf16Backend(): (float32 base bound, bf16 slack, bf16 floor, reference-error key
    prefix) of BACKEND, from tolerances.json."""
    if BACKEND == "cuda":
        return TOL["bf16"], 1.0, TOL["bf16"], "bf16:"
    return TOL["f32"], TOL["cpu_bf16_slack"], TOL["cpu_bf16_floor"], ""


def bf16_output_bound(ref):
    """Parity's bound of a bf16 output (out, d_x): slack x the error of the reference rounded once to bf16 + floor."""
    _, slack, floor, _ = rule()
    ideal = rel(torch.from_numpy(np.ascontiguousarray(ref)).to(torch.bfloat16).float().numpy(), ref)
    return slack * ideal + floor


def reference_bound(path, name, quantity, base=None, prefix=None):
    """Java's Parity.f32Bound: max(base, 2 x PyTorch's own error at the rule's precision) with the error from
    f32-reference-errors.json ("<prefix><quantity>"). -> (bound, problem or None); a missing or stale entry is
    a problem, as in Java."""
    rbase, _, _, rprefix = rule()
    base = rbase if base is None else base
    prefix = rprefix if prefix is None else prefix
    with open(REFERENCE_ERRORS) as f:
        entry = json.load(f).get(name)
    if entry is None or (prefix + quantity) not in entry:
        return base, (f"{name}: no {prefix.rstrip(':') or 'f32'} reference error for {quantity} in {REFERENCE_ERRORS} "
                      "(rerun java/hspmn/src/test/python/f32_reference_errors.py)")
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    if entry.get("sha256") != sha:
        return base, (f"{name}: f32-reference-errors.json was computed from another version of "
                      "the golden file (rerun java/hspmn/src/test/python/f32_reference_errors.py)")
    return max(base, 2 * float(entry[prefix + quantity])), None


def run_case(lib, path, threads, rows):
    meta, T = load_case(path)
    name = os.path.basename(path)[:-len(".safetensors")]
    cfg = json.loads(meta["config"])
    fw = json.loads(meta["forward"])
    ctx = Context(lib, BACKEND, threads)
    c = check_harness.Case(name, rows)
    report, failures = c.check, c.failures

    def bound_of(quantity, **kw):
        bound, problem = reference_bound(path, name, quantity, **kw)
        if problem and problem not in failures:
            failures.append(problem)
        return bound

    def exact(what, got, ref):
        same = np.array_equal(got, ref)
        rows.append((name, what, 0.0 if same else math.inf, 0.0))
        if not same:
            failures.append(f"{name}: {what} differ:\n got {got.tolist()}\n ref {ref.tolist()}")

    block = C.c_void_p()
    try:
        bp = lib.block_default_params()
        ref_cfg = hspmn_ref.BlockConfig(**cfg)
        for k in cfg:
            setattr(bp, k, ref_cfg.c_value(k))
        lib.ok(lib.block_create(ctx.h, C.byref(bp), 1234, C.byref(block)), "block_create")
        for p in PARAMS:
            a = T[p]
            lib.ok(lib.block_set_param(block, p.encode(), ctx.tensor(BF16, a.shape, a)), f"set_param {p}")

        B, S, D = T["x"].shape
        x = ctx.tensor(BF16, (B, S, D), T["x"])
        fp = lib.forward_default_params()
        fp.training, fp.noise, fp.seed, fp.step, fp.layer = (fw["training"], fw["noise"], fw["seed"], fw["step"],
                                                             fw["layer"])
        fp.aux_target = fw["aux_target"]

        # The generator against the noise the reference drew.
        if "noise" in T:
            g = ctx.tensor(F32, (B, S))
            lib.ok(lib.gumbel_noise(ctx.h, fw["seed"], fw["step"], fw["layer"], g), "gumbel_noise")
            report("gumbel_noise", rel(ctx.read(g, F32, (B, S)), T["noise"]), 1e-6)

        # Routing alone, with the library's own noise.
        C_ = T["indices"].shape[1]
        logits, probs = ctx.tensor(F32, (B, S)), ctx.tensor(F32, (B, S))
        idx, cnt, aux = ctx.tensor(I32, (B, C_)), ctx.tensor(I32, (B,)), ctx.tensor(F32, (1,))
        lib.ok(lib.block_route(block, C.byref(fp), x, None, logits, probs, idx, cnt, aux), "route")
        # routing is a float32 path on both backends (float64 dots): the CPU rule's bounds
        f32 = {q: bound_of(q, base=F32_BOUND, prefix="") for q in ("route.logits", "route.probs", "aux")}
        report("route.logits", rel(ctx.read(logits, F32, (B, S)), T["logits"]), f32["route.logits"])
        report("route.probs", rel(ctx.read(probs, F32, (B, S)), T["probs"]), f32["route.probs"])
        report("route.aux", rel(ctx.read(aux, F32, (1,)), T["aux"]), f32["aux"])
        exact("route.indices", ctx.read(idx, I32, (B, C_)), T["indices"])
        exact("route.counts", ctx.read(cnt, I32, (B,)), T["counts"])

        # Full forward with the block's own routing (and generator noise).
        out = ctx.tensor(BF16, (B, S, D))
        lib.ok(lib.block_forward(block, C.byref(fp), x, out, aux), "forward")
        report("forward.out", rel(ctx.read(out, BF16, (B, S, D)), T["out"]), bf16_output_bound(T["out"]))
        # What rounding the exact result to bf16 alone costs: the floor for any bf16 output.
        floor = rel(torch.from_numpy(T["out"]).to(torch.bfloat16).float().numpy(), T["out"])
        rows.append((name, "(info) bf16 rounding floor of out", floor, math.inf))
        report("forward.aux", rel(ctx.read(aux, F32, (1,)), T["aux"]), f32["aux"])

        # Forward with routing pinned to the reference's, then backward.
        noise = ctx.tensor(F32, (B, S), T["noise"]) if "noise" in T else None
        pin_idx = ctx.tensor(I32, (B, C_), T["indices"])
        pin_cnt = ctx.tensor(I32, (B,), T["counts"])
        out2 = ctx.tensor(BF16, (B, S, D))
        lib.ok(lib.block_forward_routed(block, C.byref(fp), x, noise, pin_idx, pin_cnt, out2, aux), "forward_routed")
        report("forward_routed.out", rel(ctx.read(out2, BF16, (B, S, D)), T["out"]), bf16_output_bound(T["out"]))

        d_out = ctx.tensor(BF16, (B, S, D), T["d_out"])
        d_aux = ctx.tensor(F32, (1,), T["d_aux"])
        d_x = ctx.tensor(BF16, (B, S, D))
        bw = lib.backward_default_params()
        lib.ok(lib.block_backward(block, C.byref(bw), d_out, d_aux, d_x), "backward")
        report("backward.d_x", rel(ctx.read(d_x, BF16, (B, S, D)), T["d_x"]), bf16_output_bound(T["d_x"]))
        grads = {}
        for p in PARAMS:
            shape = T[p].shape
            gt = ctx.tensor(F32, shape)
            lib.ok(lib.block_get_grad(block, p.encode(), gt), f"get_grad {p}")
            grads[p] = ctx.read(gt, F32, shape)
            ref = T["grad." + p]
            if not np.any(ref):
                # A gradient that must be exactly zero (log_temp outside the clamp) is judged absolutely.
                err = float(np.max(np.abs(grads[p]))) if grads[p].size else 0.0
                report("grad." + p + " (abs, ref = 0)", err, 0.0)
                continue
            if p in ("router.b", "router.log_temp"):
                rows.append((name, f"grad.{p} (info: got {float(grads[p][0]):.6g}, ref {float(ref[0]):.6g})",
                             0.0, math.inf))
            report("grad." + p, rel(grads[p], ref), bound_of("grad." + p))

        # accumulate = 1 adds a second, identical backward: every gradient doubles.
        bw.accumulate = 1
        lib.ok(lib.block_backward(block, C.byref(bw), d_out, d_aux, d_x), "backward accumulate")
        worst = 0.0
        for p in PARAMS:
            gt = ctx.tensor(F32, T[p].shape)
            lib.ok(lib.block_get_grad(block, p.encode(), gt), f"get_grad {p}")
            worst = max(worst, rel(ctx.read(gt, F32, T[p].shape), 2 * grads[p]))
        report("accumulate doubles grads", worst, 1e-6)
    finally:
        if block:
            lib.ok(lib.block_destroy(block), "block_destroy")
        ctx.close()
    return failures


def check_defaults(lib):
    """hspmn_block_default_params (block_config.cpp) against the reference's defaults, which are the
    "default V" ending each field's comment in hspmn.h: the two places a block option's default is written."""
    bp, ref = lib.block_default_params(), hspmn_ref.BlockConfig()
    failures = []
    for name in hspmn_ref.BlockConfig.__dataclass_fields__:
        want = ref.c_value(name)
        want = hspmn_ref.f32(want) if isinstance(want, float) else want
        if getattr(bp, name) != want:
            failures.append(f"default of {name}: the library has {getattr(bp, name)!r}, hspmn.h says {want!r}")
    return failures


def run_synthetic(lib, threads, rows):
    """One case at sizes the goldens do not reach (D=256, F=1024, 600 token rows), so the GEMM's K
    slabs, row/column tiles and ragged edges and the multi-threaded paths are judged too. The float64
    reference runs here; routing is pinned to the reference's (random data has no margin guarantee)."""
    name = "synthetic_d256"
    failures = []
    cfg = hspmn_ref.BlockConfig(dim=256, num_heads=4, num_kv_heads=2, mlp_ratio=4, conv_kernel=3, routing="topk",
                                sparsity_k=0.2).validate()
    B, S, D = 2, 300, 256
    gen = torch.Generator().manual_seed(2024)
    blk = hspmn_ref.HSPMNBlock(cfg).double().init_parameters(gen)
    with torch.no_grad():
        blk.router.log_temp.fill_(0.25)
    x = hspmn_ref.bf16_round(torch.randn(B, S, D, generator=gen, dtype=torch.float64))
    d_out = hspmn_ref.bf16_round(0.1 * torch.randn(B, S, D, generator=gen, dtype=torch.float64))
    d_aux = 0.5
    seed, step, layer = 99, 3, 1
    noise = hspmn_ref.gumbel_noise(seed, step, layer, B, S)
    xr = x.clone().requires_grad_(True)
    o = blk(xr, training=True, noise=noise)
    ((o.out * d_out).sum() + d_aux * o.aux.sum()).backward()

    def bits(t):
        return t.detach().to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)

    report = check_harness.Case(name, rows, failures).check
    ctx = Context(lib, BACKEND, threads)
    block = C.c_void_p()
    try:
        bp = lib.block_default_params()
        for k in ("dim", "num_heads", "num_kv_heads", "mlp_ratio", "conv_kernel", "sparsity_k"):
            setattr(bp, k, getattr(cfg, k))
        lib.ok(lib.block_create(ctx.h, C.byref(bp), 1, C.byref(block)), "block_create")
        params = dict(blk.named_parameters())
        for p in PARAMS:
            a = bits(params[p])
            lib.ok(lib.block_set_param(block, p.encode(), ctx.tensor(BF16, a.shape, a)), f"set_param {p}")
        fp = lib.forward_default_params()
        fp.training, fp.noise, fp.seed, fp.step, fp.layer = 1, 1, seed, step, layer
        ind = o.indices.numpy().astype(np.int32)
        cnt = o.counts.numpy().astype(np.int32)
        xt = ctx.tensor(BF16, (B, S, D), bits(x))
        idx_t, cnt_t = ctx.tensor(I32, ind.shape), ctx.tensor(I32, cnt.shape)
        lib.ok(lib.block_route(block, C.byref(fp), xt, None, None, None, idx_t, cnt_t, None), "route")
        same = np.array_equal(ctx.read(idx_t, I32, ind.shape), ind)
        rows.append((name, "route.indices (info: no margin)", 0.0 if same else math.inf, math.inf))
        out = ctx.tensor(BF16, (B, S, D))
        aux = ctx.tensor(F32, (1,))
        lib.ok(lib.block_forward_routed(block, C.byref(fp), xt, None, ctx.tensor(I32, ind.shape, ind),
                                        ctx.tensor(I32, cnt.shape, cnt), out, aux), "forward_routed")
        ref_out = o.out.detach().numpy()
        report("forward_routed.out", rel(ctx.read(out, BF16, (B, S, D)), ref_out), bf16_output_bound(ref_out))
        report("forward_routed.aux", rel(ctx.read(aux, F32, (1,)), o.aux.detach().numpy()), F32_BOUND)
        d_x = ctx.tensor(BF16, (B, S, D))
        bw = lib.backward_default_params()
        lib.ok(lib.block_backward(block, C.byref(bw), ctx.tensor(BF16, (B, S, D), bits(d_out)),
                                  ctx.tensor(F32, (1,), np.array([d_aux], np.float32)), d_x), "backward")
        report("backward.d_x", rel(ctx.read(d_x, BF16, (B, S, D)), xr.grad.numpy()), bf16_output_bound(xr.grad.numpy()))
        for p in PARAMS:
            if p in ("router.b", "router.log_temp"):
                continue  # cancelling scalar sums: judged on the goldens with their term scales
            shape = tuple(params[p].shape)
            gt = ctx.tensor(F32, shape)
            lib.ok(lib.block_get_grad(block, p.encode(), gt), f"get_grad {p}")
            report("grad." + p, rel(ctx.read(gt, F32, shape), params[p].grad.numpy()), GRAD_BOUND)
    finally:
        if block:
            lib.ok(lib.block_destroy(block), "block_destroy")
        ctx.close()
    return failures


def main():
    ap = check_harness.parser(__doc__)
    ap.add_argument("--goldens", default=os.path.join(ROOT, "java", "hspmn", "src", "test", "resources", "goldens"))
    args = check_harness.parse(ap)
    global BACKEND, GRAD_BOUND
    BACKEND = args.backend
    if BACKEND == "cuda":
        GRAD_BOUND = BF16_PATH_BOUND_CUDA
    base, slack, floor, prefix = rule()
    print(f"backend {BACKEND} (rule of native/reference/tolerances.json, as Java's Parity): bf16 outputs "
          f"{slack:g} x ideal bf16 error + {floor:g}; gradients of the goldens max({base:g}, 2 x PyTorch's own "
          f"{prefix.rstrip(':') or 'f32'} error), of the synthetic case {GRAD_BOUND:g}; "
          f"routing and aux max({F32_BOUND:g}, "
          "2 x PyTorch's own f32 error)")
    lib = Lib(args.lib)
    files = sorted(glob.glob(os.path.join(args.goldens, "*.safetensors")))
    if not files:
        print(f"no golden cases under {args.goldens}", file=sys.stderr)
        return 1
    rows = []
    failures = check_defaults(lib)
    failures += check_harness.run_cases([("synthetic",)], lambda _: run_synthetic(lib, args.threads, rows))
    failures += check_harness.run_cases([(os.path.basename(f), f) for f in files],
                                        lambda item: run_case(lib, item[1], args.threads, rows))
    return check_harness.verdict(lib, rows, failures, f"check_native --backend {BACKEND}: {len(files)} cases, "
                                 "{checks} checks, {failures} failures, peak {peak} bytes held by the library",
                                 header=("case", "output"))



if __name__ == "__main__":
    sys.exit(main())
