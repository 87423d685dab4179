"""Residual dropout of one block (native/README.md "Residual dropout") through libhspmn (ctypes)
against the float64 reference hspmn_ref.py, on either backend; prints one line per check and exits 1
when any fails.

    .venv/bin/python native/reference/check_dropout.py [--backend cpu|cuda] [--lib native/build/libhspmn.so]

Per case (odd sizes: S not a multiple of anything, D % 4 != 0 in one case so the last Philox word
group of a row is partial, GQA, both routings), with the routing pinned to the reference's (random
data has no margin guarantee) and the library's own Gumbel noise and dropout masks:
  forward (training, p > 0)   out and aux against hspmn_ref with dropout_masks(seed, step, layer)
  backward                    d_x and every parameter gradient (routing held fixed)
  p = 0                       out, d_x and gradients against the reference without dropout; and the
                              p = 0 forward with a seed/step that would draw other masks is bitwise
                              the same (the option really is off)
  power                       the branches out - x with p > 0 differ from those with p = 0 (the mask
                              is applied), and from those with the same p at another step (the mask
                              is keyed by step)
  repeat                      the same training forward + backward again: bitwise equal
  evaluation                  training = 0 ignores dropout: bitwise the p = 0 inference output
  row offset                  a batch of 2B rows against the two halves run with row_offset 0 and B
                              (what data-parallel ranks do): the second half, pinned to the
                              reference's routing of the 2B rows, matches the reference's rows B..2B-1
                              (its masks drawn as those rows); with the block's own (noisy) routing
                              and d_aux = 0, the halves' out and d_x are bitwise the 2B-row call's on the
                              CPU (at the CUDA bound on CUDA: other GEMM shapes), so forward noise,
                              forward masks and backward's redrawn masks all follow the offset; and
                              the second half at row_offset 0 differs (the offset is used)
With --backend cuda each case also runs on a CPU context and CUDA is compared with CPU directly
(out, d_x and gradients at the CUDA bound): both must draw the same masks, so a CUDA kernel that
keyed or scaled them differently fails here even where the reference bound is loose.

Bounds are check_native.py's: on the CPU out and d_x at BF16_BOUND (the CPU rounds only its bf16
outputs), float32 gradients at F32_BOUND; on CUDA every bf16 path at 1e-2. router.b and
router.log_temp are cancelling sums over every token (check_native.py's docstring): they are left to
the golden cases, which judge them with their term scales.
"""

import ctypes as C
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_harness  # noqa: E402
import hspmn_ref  # noqa: E402
from hspmn_ctypes import BACKENDS, BF16, F32, I32, Context, rel  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))

BF16_BOUND = 4e-3
F32_BOUND = 1e-4
CUDA_BOUND = 1e-2
POWER = 0.1  # p > 0 must move the branches out - x by at least this relative amount

PARAMS = ["router.w", "router.b", "router.log_temp", "reflex.norm", "reflex.conv", "reflex.gate", "reflex.up",
          "reflex.down", "attn.norm", "attn.q", "attn.k", "attn.v", "attn.o"]
CANCELLING = ("router.b", "router.log_temp")

# name, block config, B, S, p, (seed, step, layer)
CASES = [
    ("topk_gqa_d48", dict(dim=48, num_heads=4, num_kv_heads=2, mlp_ratio=3, routing="topk", sparsity_k=0.3),
     3, 37, 0.3, (0x5EED_0000_1234, 11, 2)),
    ("threshold_d42", dict(dim=42, num_heads=3, num_kv_heads=1, mlp_ratio=2, routing="threshold", sparsity_k=0.4),
     2, 29, 0.15, (7, 3, 0)),
]


def bits(t):
    return t.detach().to(torch.float32).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def reference(cfg, B, S, p, key, gen_seed):
    """The float64 block with its parameters, inputs and gradients, at dropout p."""
    gen = torch.Generator().manual_seed(gen_seed)
    blk = hspmn_ref.HSPMNBlock(cfg).double().init_parameters(gen)
    with torch.no_grad():
        blk.router.log_temp.fill_(0.25)
        for name, prm in blk.named_parameters():
            if name.endswith(".norm"):  # a gain of 1 would hide a kernel that ignores it
                prm.copy_(hspmn_ref.bf16_round(0.6 + 0.8 * torch.rand(prm.shape, generator=gen, dtype=torch.float64)))
    x = hspmn_ref.bf16_round(torch.randn(B, S, cfg.dim, generator=gen, dtype=torch.float64))
    d_out = hspmn_ref.bf16_round(0.1 * torch.randn(B, S, cfg.dim, generator=gen, dtype=torch.float64))
    seed, step, layer = key
    noise = hspmn_ref.gumbel_noise(seed, step, layer, B, S)
    masks = hspmn_ref.dropout_masks(seed, step, layer, B, S, cfg.dim, p)
    xr = x.clone().requires_grad_(True)
    o = blk(xr, training=True, noise=noise, dropout=masks)
    ((o.out * d_out).sum() + 0.5 * o.aux.sum()).backward()
    grads = {n: prm.grad.numpy().copy() for n, prm in blk.named_parameters()}
    return blk, x, d_out, o, xr.grad.numpy().copy(), grads


class NativeBlock:
    """One block on one context with the reference's parameters; runs the pinned forward + backward."""

    def __init__(self, lib, backend, threads, cfg, blk):
        self.lib, self.ctx = lib, Context(lib, backend, threads)
        self.block = C.c_void_p()
        bp = lib.block_default_params()
        for k in ("dim", "num_heads", "num_kv_heads", "mlp_ratio", "conv_kernel", "sparsity_k"):
            setattr(bp, k, getattr(cfg, k))
        bp.routing = {"topk": 0, "threshold": 1}[cfg.routing]
        lib.ok(lib.block_create(self.ctx.h, C.byref(bp), 1, C.byref(self.block)), "block_create")
        params = dict(blk.named_parameters())
        for name in PARAMS:
            a = bits(params[name])
            lib.ok(lib.block_set_param(self.block, name.encode(), self.ctx.tensor(BF16, a.shape, a)), f"set {name}")
        self.shapes = {n: tuple(params[n].shape) for n in PARAMS}

    def run(self, x, d_out, o, p, key, training=1, backward=True, row_offset=0, d_aux=0.5):
        """-> (out, aux, d_x, grads) of a forward pinned to o's routing, or the block's own when o is None
        (d_x, grads None without backward)."""
        lib, ctx = self.lib, self.ctx
        B, S, D = x.shape
        fp = lib.forward_default_params()
        fp.training, fp.noise = training, 1
        fp.seed, fp.step, fp.layer = key
        fp.dropout = p
        fp.row_offset = row_offset
        out, aux = ctx.tensor(BF16, (B, S, D)), ctx.tensor(F32, (1,))
        if training and o is not None:
            ind = o.indices.numpy().astype(np.int32)
            cnt = o.counts.numpy().astype(np.int32)
            lib.ok(lib.block_forward_routed(self.block, C.byref(fp), ctx.tensor(BF16, (B, S, D), bits(x)), None,
                                            ctx.tensor(I32, ind.shape, ind), ctx.tensor(I32, cnt.shape, cnt), out, aux),
                   "forward_routed")
        else:  # its own routing (noiseless in inference, as evaluation runs)
            lib.ok(lib.block_forward(self.block, C.byref(fp), ctx.tensor(BF16, (B, S, D), bits(x)), out, aux),
                   "forward")
        res_out, res_aux = ctx.read(out, BF16, (B, S, D)), ctx.read(aux, F32, (1,))
        if not backward:
            return res_out, res_aux, None, None
        d_x = ctx.tensor(BF16, (B, S, D))
        bw = lib.backward_default_params()
        lib.ok(lib.block_backward(self.block, C.byref(bw), ctx.tensor(BF16, (B, S, D), bits(d_out)),
                                  ctx.tensor(F32, (1,), np.array([d_aux], np.float32)), d_x), "backward")
        grads = {}
        for name in PARAMS:
            g = ctx.tensor(F32, self.shapes[name])
            lib.ok(lib.block_get_grad(self.block, name.encode(), g), f"get_grad {name}")
            grads[name] = ctx.read(g, F32, self.shapes[name])
        return res_out, res_aux, ctx.read(d_x, BF16, (B, S, D)), grads

    def close(self):
        if self.block:
            self.lib.ok(self.lib.block_destroy(self.block), "block_destroy")
            self.block = None
        self.ctx.close()


def row_offset_checks(lib, args, cfg, B, S, p, key, c):
    """The 2B-row batch against its halves at row_offset 0 and B (module docstring, "row offset")."""
    cuda = args.backend == "cuda"
    bound = CUDA_BOUND if cuda else BF16_BOUND
    report, exact = c.check, c.exact
    blk2, x2, d_out2, o2, _, _ = reference(cfg, 2 * B, S, p, key, 4321)
    native = NativeBlock(lib, args.backend, args.threads, cfg, blk2)
    try:
        half = type("Pins", (), {"indices": o2.indices[B:], "counts": o2.counts[B:]})
        out_h, _, _, _ = native.run(x2[B:], d_out2[B:], half, p, key, backward=False, row_offset=B)
        report(f"row offset {B}: forward.out vs reference rows {B}..{2 * B - 1}",
               rel(out_h, o2.out.detach().numpy()[B:]), bound)

        full_out, _, full_dx, _ = native.run(x2, d_out2, None, p, key, d_aux=0.0)
        a_out, _, a_dx, _ = native.run(x2[:B], d_out2[:B], None, p, key, d_aux=0.0)
        b_out, _, b_dx, _ = native.run(x2[B:], d_out2[B:], None, p, key, d_aux=0.0, row_offset=B)
        split_out, split_dx = np.concatenate([a_out, b_out]), np.concatenate([a_dx, b_dx])
        if cuda:
            report("row offset: halves at 0 and B vs 2B rows: out", rel(split_out, full_out), CUDA_BOUND)
            report("row offset: halves at 0 and B vs 2B rows: d_x", rel(split_dx, full_dx), CUDA_BOUND)
        else:
            exact("row offset: halves at 0 and B are bitwise the 2B-row call: out, d_x",
                  np.array_equal(split_out, full_out) and np.array_equal(split_dx, full_dx))
        z_out, _, _, _ = native.run(x2[B:], d_out2[B:], None, p, key, backward=False)
        xs = x2.numpy()[B:]
        report("power: the second half at row_offset 0 draws other noise and masks (1 = at the bound)",
               POWER / max(rel(b_out - xs, z_out - xs), 1e-30), 1.0)
    finally:
        native.close()


def run_case(lib, args, case, rows):
    backend, threads = args.backend, args.threads
    name, fields, B, S, p, key = case
    cuda = backend == "cuda"
    bf16_bound, grad_bound = (CUDA_BOUND, CUDA_BOUND) if cuda else (BF16_BOUND, F32_BOUND)
    c = check_harness.Case(name, rows)
    report, exact, failures = c.check, c.exact, c.failures

    cfg = hspmn_ref.BlockConfig(**fields).validate()
    blk, x, d_out, o, ref_dx, ref_grads = reference(cfg, B, S, p, key, 4321)
    blk0, _, _, o0, ref_dx0, ref_grads0 = reference(cfg, B, S, 0.0, key, 4321)
    native = NativeBlock(lib, backend, threads, cfg, blk)
    cpu = NativeBlock(lib, "cpu", threads, cfg, blk) if cuda else None
    try:
        out, aux, d_x, grads = native.run(x, d_out, o, p, key)
        report(f"p={p}: forward.out", rel(out, o.out.detach().numpy()), bf16_bound)
        report(f"p={p}: forward.aux", rel(aux, o.aux.detach().numpy()), F32_BOUND)
        report(f"p={p}: backward.d_x", rel(d_x, ref_dx), bf16_bound)
        for n in PARAMS:
            if n not in CANCELLING:
                report(f"p={p}: grad.{n}", rel(grads[n], ref_grads[n]), grad_bound)

        out_r, aux_r, d_x_r, grads_r = native.run(x, d_out, o, p, key)
        exact("repeat: out, aux, d_x, grads", np.array_equal(out_r, out) and np.array_equal(aux_r, aux)
              and np.array_equal(d_x_r, d_x) and all(np.array_equal(grads_r[n], grads[n]) for n in PARAMS))

        out0, _, d_x0, grads0 = native.run(x, d_out, o0, 0.0, key)
        report("p=0: forward.out", rel(out0, o0.out.detach().numpy()), bf16_bound)
        report("p=0: backward.d_x", rel(d_x0, ref_dx0), bf16_bound)
        for n in PARAMS:
            if n not in CANCELLING:
                report(f"p=0: grad.{n}", rel(grads0[n], ref_grads0[n]), grad_bound)
        # p = 0 is off whatever the key: with the routing pinned, another seed and step (which would
        # draw other masks) give the same bits.
        seed, step, layer = key
        out0_k, _, _, _ = native.run(x, d_out, o0, 0.0, (seed + 1, step + 1, layer + 1), backward=False)
        exact("p=0 is off for any key: out", np.array_equal(out0_k, out0))
        xs = x.numpy()
        branches = out - xs
        report("power: p > 0 moves out - x vs p = 0 (1 = at the bound)",
               POWER / max(rel(branches, out0 - xs), 1e-30), 1.0)
        out_s, _, _, _ = native.run(x, d_out, o, p, (seed, step + 1, layer), backward=False)
        # (the noise changes with the step too, but routing is pinned, so only the masks move out)
        report("power: another step draws other masks (1 = at the bound)",
               POWER / max(rel(branches, out_s - xs), 1e-30), 1.0)

        ev_p, ev_aux_p, _, _ = native.run(x, d_out, o, p, key, training=0, backward=False)
        ev_0, ev_aux_0, _, _ = native.run(x, d_out, o, 0.0, key, training=0, backward=False)
        exact("evaluation ignores dropout: out, aux", np.array_equal(ev_p, ev_0) and np.array_equal(ev_aux_p, ev_aux_0))

        row_offset_checks(lib, args, cfg, B, S, p, key, c)

        if cpu is not None:
            c_out, _, c_dx, c_grads = cpu.run(x, d_out, o, p, key)
            report(f"p={p}: CUDA vs CPU out", rel(out, c_out), CUDA_BOUND)
            report(f"p={p}: CUDA vs CPU d_x", rel(d_x, c_dx), CUDA_BOUND)
            for n in PARAMS:
                if n not in CANCELLING:
                    report(f"p={p}: CUDA vs CPU grad.{n}", rel(grads[n], c_grads[n]), CUDA_BOUND)
    finally:
        native.close()
        if cpu is not None:
            cpu.close()
    return failures


if __name__ == "__main__":
    sys.exit(check_harness.main(__doc__, "check_dropout", CASES, run_case))
