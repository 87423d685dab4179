"""Runs every golden case through libhspmn (ctypes) and prints ||got - ref|| / ||ref|| per output and
gradient; exits 1 when any error passes its bound or a routing decision differs.

    .venv/bin/python native/reference/check_native.py [--lib native/build/libhspmn.so]
        [--goldens java/hspmn/src/test/resources/goldens] [--threads 2] [--backend cpu|cuda]

Bounds (MODEL.md "Numerics", native/README.md "Precision"): the CPU backend rounds only its bf16
outputs (out, d_x), so those are judged at BF16_BOUND, a few bf16 half-ulps (2^-9 = 2e-3 relative
per element, ~1e-3 as a norm); float32 outputs (logits, probs, aux, parameter gradients) at F32_BOUND.
Indices and counts must match exactly: make_goldens keeps a margin between selected and rejected scores.

router.b and router.log_temp are single sums over every token of terms that largely cancel (topk_k1:
sum |dL/dl_i| is 220x |dL/db|). A float32 backend carries a relative error of ~1e-6 in each term
(the float32 attention output o feeds dy = d_out . o), so its sum can only be as close as
1e-6 * sum |terms|. On the CPU backend these two scalars are therefore judged by
|got - ref| / sum_i |term_i|, with the terms taken from the float64 reference's autograd; the plain
relative error is printed beside it.

--backend cuda runs every tensor in DEVICE memory of a CUDA context. That backend feeds bf16 operands
to its GEMMs and attention (activations and their gradients are rounded to bf16 between ops), so
everything downstream of them, out and d_x, is a bf16 path judged at MODEL.md's 1e-2; routing
(logits, probs, aux, noise) stays float32 (float64 dots, as the CPU) and keeps F32_BOUND; indices and
counts stay exact. Parameter gradients of the golden cases get the rule of Java's GoldenParityTest
(Parity.Tolerances.bf16Backend), so both judge them alike: plain relative error against
max(1e-2, 2 x PyTorch's own error when it runs the reference in bfloat16), the latter from
java/hspmn/src/test/resources/f32-reference-errors.json ("bf16:grad.<name>", written by
java/hspmn/src/test/python/f32_reference_errors.py with the SHA-256 of the golden file it read; a missing or
stale entry fails the case, as in Java). The router scalars included: with bf16 activations their
terms carry bf16 errors, not float32 ones (native/reference/emulate_cuda_precision.py).
"""

import argparse
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
import hspmn_ref  # noqa: E402
from hspmn_ctypes import (BACKENDS, BF16, F32, I32, AllocStats, BackwardParams, BlockParams, Context,  # noqa: E402,F401
                          ContextParams, ForwardParams, Lib, bf16_bits_to_f32, rel)

BF16_BOUND = 4e-3
F32_BOUND = 1e-4
GRAD_BOUND = F32_BOUND  # parameter gradients; main() widens both for --backend cuda
BF16_PATH_BOUND_CUDA = 1e-2

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
REFERENCE_ERRORS = os.path.join(ROOT, "java", "hspmn", "src", "test", "resources", "f32-reference-errors.json")

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


def router_term_scales(meta, T):
    """sum_i |dL/db term_i| and sum_i |dL/dlog_temp term_i| from the float64 reference."""
    cfg = hspmn_ref.BlockConfig.from_json(meta["config"])
    fw = json.loads(meta["forward"])
    blk = hspmn_ref.HSPMNBlock(cfg).double()
    names = dict(blk.named_parameters())
    blk.load_state_dict({k: torch.from_numpy(bf16_bits_to_f32(T[k])).double() for k in names})
    noise = torch.from_numpy(T["noise"]).double() if "noise" in T else None
    o = blk(torch.from_numpy(bf16_bits_to_f32(T["x"])).double(), training=True, noise=noise,
            aux_target=fw["aux_target"])
    o.logits.retain_grad()
    o.scores.retain_grad()
    loss = (o.out * torch.from_numpy(bf16_bits_to_f32(T["d_out"])).double()).sum() + \
        (o.aux * torch.from_numpy(T["d_aux"]).double()).sum()
    loss.backward()
    b_scale = float(o.logits.grad.abs().sum())
    t_scale = float((o.scores.grad * o.scores.detach()).abs().sum())
    return b_scale, t_scale


def bf16_backend_bound(path, name, quantity):
    """Java's Parity.Tolerances.bf16Backend() bound of a float32 quantity: max(1e-2, 2 x PyTorch's own
    bf16 error). -> (bound, problem or None); a missing or stale entry is a problem, as in Java."""
    with open(REFERENCE_ERRORS) as f:
        entry = json.load(f).get(name)
    if entry is None or ("bf16:" + quantity) not in entry:
        return BF16_PATH_BOUND_CUDA, (f"{name}: no bf16 reference error for {quantity} in {REFERENCE_ERRORS} "
                                      "(rerun java/hspmn/src/test/python/f32_reference_errors.py)")
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    if entry.get("sha256") != sha:
        return BF16_PATH_BOUND_CUDA, (f"{name}: f32-reference-errors.json was computed from another version of "
                                      "the golden file (rerun java/hspmn/src/test/python/f32_reference_errors.py)")
    return max(BF16_PATH_BOUND_CUDA, 2 * float(entry["bf16:" + quantity])), None


def run_case(lib, path, threads, rows):
    meta, T = load_case(path)
    name = os.path.basename(path)[:-len(".safetensors")]
    cfg = json.loads(meta["config"])
    fw = json.loads(meta["forward"])
    ctx = Context(lib, BACKEND, threads)
    failures = []

    def report(what, err, bound):
        rows.append((name, what, err, bound))
        if not (err <= bound):
            failures.append(f"{name}: {what} rel err {err:.3g} > {bound:g}")

    def exact(what, got, ref):
        same = np.array_equal(got, ref)
        rows.append((name, what, 0.0 if same else math.inf, 0.0))
        if not same:
            failures.append(f"{name}: {what} differ:\n got {got.tolist()}\n ref {ref.tolist()}")

    block = C.c_void_p()
    try:
        bp = lib.block_default_params()
        for k, v in cfg.items():
            if k == "routing":
                v = {"topk": 0, "threshold": 1}[v]
            setattr(bp, k, v)
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
        report("route.logits", rel(ctx.read(logits, F32, (B, S)), T["logits"]), F32_BOUND)
        report("route.probs", rel(ctx.read(probs, F32, (B, S)), T["probs"]), F32_BOUND)
        report("route.aux", rel(ctx.read(aux, F32, (1,)), T["aux"]), F32_BOUND)
        exact("route.indices", ctx.read(idx, I32, (B, C_)), T["indices"])
        exact("route.counts", ctx.read(cnt, I32, (B,)), T["counts"])

        # Full forward with the block's own routing (and generator noise).
        out = ctx.tensor(BF16, (B, S, D))
        lib.ok(lib.block_forward(block, C.byref(fp), x, out, aux), "forward")
        report("forward.out", rel(ctx.read(out, BF16, (B, S, D)), T["out"]), BF16_BOUND)
        # What rounding the exact result to bf16 alone costs: the floor for any bf16 output.
        floor = rel(torch.from_numpy(T["out"]).to(torch.bfloat16).float().numpy(), T["out"])
        rows.append((name, "(info) bf16 rounding floor of out", floor, math.inf))
        report("forward.aux", rel(ctx.read(aux, F32, (1,)), T["aux"]), F32_BOUND)

        # Forward with routing pinned to the reference's, then backward.
        noise = ctx.tensor(F32, (B, S), T["noise"]) if "noise" in T else None
        pin_idx = ctx.tensor(I32, (B, C_), T["indices"])
        pin_cnt = ctx.tensor(I32, (B,), T["counts"])
        out2 = ctx.tensor(BF16, (B, S, D))
        lib.ok(lib.block_forward_routed(block, C.byref(fp), x, noise, pin_idx, pin_cnt, out2, aux), "forward_routed")
        report("forward_routed.out", rel(ctx.read(out2, BF16, (B, S, D)), T["out"]), BF16_BOUND)

        d_out = ctx.tensor(BF16, (B, S, D), T["d_out"])
        d_aux = ctx.tensor(F32, (1,), T["d_aux"])
        d_x = ctx.tensor(BF16, (B, S, D))
        bw = lib.backward_default_params()
        lib.ok(lib.block_backward(block, C.byref(bw), d_out, d_aux, d_x), "backward")
        report("backward.d_x", rel(ctx.read(d_x, BF16, (B, S, D)), T["d_x"]), BF16_BOUND)
        grads = {}
        b_scale, t_scale = router_term_scales(meta, T) if BACKEND == "cpu" else (math.nan, math.nan)
        for p in PARAMS:
            shape = T[p].shape
            gt = ctx.tensor(F32, shape)
            lib.ok(lib.block_get_grad(block, p.encode(), gt), f"get_grad {p}")
            grads[p] = ctx.read(gt, F32, shape)
            ref = T["grad." + p]
            if BACKEND == "cuda" and np.any(ref):
                bound, problem = bf16_backend_bound(path, name, "grad." + p)
                if problem and problem not in failures:
                    failures.append(problem)
                if p in ("router.b", "router.log_temp"):
                    rows.append((name, f"grad.{p} (info: got {float(grads[p][0]):.6g}, ref {float(ref[0]):.6g})",
                                 0.0, math.inf))
                report("grad." + p, rel(grads[p], ref), bound)
            elif p in ("router.b", "router.log_temp") and np.any(ref):
                scale = b_scale if p == "router.b" else t_scale
                rows.append((name, "grad." + p + " (plain rel err, info)", rel(grads[p], ref), math.inf))
                report("grad." + p + " / sum|terms|", float(np.abs(grads[p] - ref).sum()) / scale, GRAD_BOUND)
            elif not np.any(ref):
                # A gradient that must be exactly zero (log_temp outside the clamp) is judged absolutely.
                err = float(np.max(np.abs(grads[p]))) if grads[p].size else 0.0
                report("grad." + p + " (abs, ref = 0)", err, 0.0)
            else:
                report("grad." + p, rel(grads[p], ref), GRAD_BOUND)

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

    def report(what, err, bound):
        rows.append((name, what, err, bound))
        if not (err <= bound):
            failures.append(f"{name}: {what} rel err {err:.3g} > {bound:g}")

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
        report("forward_routed.out", rel(ctx.read(out, BF16, (B, S, D)), o.out.detach().numpy()), BF16_BOUND)
        report("forward_routed.aux", rel(ctx.read(aux, F32, (1,)), o.aux.detach().numpy()), F32_BOUND)
        d_x = ctx.tensor(BF16, (B, S, D))
        bw = lib.backward_default_params()
        lib.ok(lib.block_backward(block, C.byref(bw), ctx.tensor(BF16, (B, S, D), bits(d_out)),
                                  ctx.tensor(F32, (1,), np.array([d_aux], np.float32)), d_x), "backward")
        report("backward.d_x", rel(ctx.read(d_x, BF16, (B, S, D)), xr.grad.numpy()), BF16_BOUND)
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
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=os.path.join(ROOT, "native", "build", "libhspmn.so"))
    ap.add_argument("--goldens", default=os.path.join(ROOT, "java", "hspmn", "src", "test", "resources", "goldens"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", choices=sorted(BACKENDS), default="cpu")
    args = ap.parse_args()
    global BACKEND, BF16_BOUND, GRAD_BOUND
    BACKEND = args.backend
    if BACKEND == "cuda":
        BF16_BOUND = GRAD_BOUND = BF16_PATH_BOUND_CUDA
    grad_rule = "golden cases as Java (max(1e-2, 2 x PyTorch bf16 error)), synthetic " if BACKEND == "cuda" else ""
    print(f"backend {BACKEND}: bf16-path bound {BF16_BOUND:g}, gradient bound {grad_rule}{GRAD_BOUND:g}, "
          f"float32 {F32_BOUND:g}")
    lib = Lib(args.lib)
    files = sorted(glob.glob(os.path.join(args.goldens, "*.safetensors")))
    if not files:
        print(f"no golden cases under {args.goldens}", file=sys.stderr)
        return 1
    rows, failures = [], []
    try:
        failures += run_synthetic(lib, args.threads, rows)
    except RuntimeError as e:
        failures.append(f"synthetic: {e}")
    for f in files:
        try:
            failures += run_case(lib, f, args.threads, rows)
        except RuntimeError as e:
            failures.append(f"{os.path.basename(f)}: {e}")
    print(f"{'case':<24} {'output':<36} {'rel err':>10} {'bound':>9}")
    for case, what, err, bound in rows:
        flag = "" if err <= bound else "  FAIL"
        print(f"{case:<24} {what:<36} {err:>10.2e} {bound:>9.2e}{flag}")
    st = AllocStats()
    lib.ok(lib.alloc_stats_get(C.byref(st)), "alloc_stats_get")
    if st.live_tensors or st.live_blocks or st.live_contexts or st.live_bytes:
        failures.append(f"leak after all cases: tensors {st.live_tensors}, blocks {st.live_blocks}, "
                        f"contexts {st.live_contexts}, bytes {st.live_bytes}")
    print(f"{len(files)} cases, {len(rows)} checks, peak {st.peak_bytes} bytes held by the library")
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
