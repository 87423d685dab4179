"""swiglu_gemm on a CUDA GPU: bf16 parity of every candidate config, then the fused kernel against
today's path (cuBLAS gate and up GEMMs, then one SwiGLU pass), timed per shape.

    python3 native/kernels/triton/swiglu_gemm_gpu.py [--no-bench] [--quick] [--configs NAME ...]

Parity (bf16, odd N and F tails), per config in swiglu_gemm.CONFIGS, inference (act) and training
(act, gate, up) launches, against the float64 math with the kernel's rounding points
(swiglu_gemm_reference.py):
  - gate and up: every element within one bf16 ulp of the reference's (a float32 sum in another
    order than float64's may round to the neighbour, never further), plus 2^-16 of the largest
    value for sums that cancel to near 0;
  - act (where one ulp of gate moves act by more than an ulp): max error at most 2x that of the
    cuBLAS path plus one bf16 ulp of the largest value;
  - ||fused - cuBLAS path|| / ||cuBLAS path|| < 1e-2 for all three (MODEL.md's bf16 rule);
  - the epilogue's arithmetic: act within one ulp of bf16((g * sigmoid(g)) * u) computed by PyTorch
    in float32 from the kernel's own gate and up, and the count of elements not bit for bit equal
    printed ("epilogue K bits off": 0 expected, as the kernel uses swiglu.cu's expf and IEEE
    division; PyTorch's sigmoid is only a stand-in for swiglu.cu, so the bitwise claim is asserted
    by native/tests/swiglu_gemm_cuda against swiglu_forward itself);
  - the inference launch's act equals the training launch's, bit for bit.
A config that does not fit the GPU (shared memory) is reported and skipped; one whose training
launch alone does not fit (the "ws" ones) has its inference act checked; a wrong result fails.

Benchmark (no correctness role): N in 262144, 65536, 16384, 4096 rows, (D, F) = (2048, 8192) and
(2048, 5632); per shape every config in both modes, against
  - "cuBLAS": torch.matmul twice into preallocated gate and up (cuBLAS, bf16 out, float32
    accumulation), then one Triton SwiGLU pass with swiglu.cu's traffic (read g, u; write act);
    this is today's block, which writes gate and up in inference too, so it is the baseline of both
    modes;
  - "cuBLAS cat": one GEMM against the stacked [2F, D] weights, then the same pass (what stacking
    the weights alone would buy).
TFLOP/s count the GEMM work, 4 N D F, for every column. Prints one table, the best config per
shape, and two verdict lines ("swiglu_gemm: fused wins at ..." / "swiglu_gemm: cuBLAS wins at ...").
Exit status: 0 parity passed, 1 a parity check failed (timings never fail the run).
"""

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import swiglu_gemm as sg  # noqa: E402
from swiglu_gemm import _sigmoid  # noqa: E402
from swiglu_gemm_reference import reference  # noqa: E402

DEV = "cuda"
# the project's cuBLASLt GEMMs accumulate in float32 throughout; so must the baseline
torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
BF16_ULP1 = 2.0 ** -7  # bf16 ulp at 1 (8 significant bits): ulp(x) <= BF16_ULP1 * |x|
BENCH_N = (262144, 65536, 16384, 4096)
BENCH_DF = ((2048, 8192), (2048, 5632))


@triton.jit
def _swiglu_pass(G, U, A, n, F, ld, BLOCK: tl.constexpr):
    """act[r, f] = bf16((g * sigmoid(g)) * u), g = G[r * ld + f], u = U[r * ld + f]: swiglu.cu's one pass."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    src = offs // F * ld + offs % F
    g = tl.load(G + src, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + src, mask=mask, other=0.0).to(tl.float32)
    tl.store(A + offs, (g * _sigmoid(g) * u).to(A.dtype.element_ty), mask=mask)


def swiglu_pass(g, u, act, F, ld):
    n = act.numel()
    _swiglu_pass[(triton.cdiv(n, 2048), )](g, u, act, n, F, ld, BLOCK=2048, num_warps=8)


def cublas_path(c, w_gate, w_up, gate, up, act):
    torch.matmul(c, w_gate.T, out=gate)
    torch.matmul(c, w_up.T, out=up)
    swiglu_pass(gate, up, act, act.shape[1], act.shape[1])


def cublas_cat_path(c, w_cat, gu, act):
    F = act.shape[1]
    torch.matmul(c, w_cat.T, out=gu)
    swiglu_pass(gu, gu[:, F:], act, F, 2 * F)


def make_case(seed, N, D, F):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(N, D, generator=g).to(torch.bfloat16).to(DEV)
    w_gate = (torch.randn(F, D, generator=g) * D ** -0.5).to(torch.bfloat16).to(DEV)
    w_up = (torch.randn(F, D, generator=g) * D ** -0.5).to(torch.bfloat16).to(DEV)
    return c, w_gate, w_up


def epilogue_of(gate, up):
    """act as swiglu.cu computes it from bf16 gate and up (float32, (g * sigmoid(g)) * u, one rounding)."""
    g = gate.float()
    return (g * torch.sigmoid(g) * up.float()).to(torch.bfloat16)


def try_launch(fn):
    """fn() or the reason it cannot run here (shared memory or registers beyond this GPU's)."""
    try:
        return fn(), None
    except triton.runtime.errors.OutOfResources as e:
        return None, f"does not fit: {e}"


def parity_case(name, N, D, F, configs, seed):
    c, w_gate, w_up = make_case(seed, N, D, F)
    ref = reference(c, w_gate, w_up, dtype=torch.bfloat16)
    gate_t, up_t, act_t = (torch.empty(N, F, dtype=torch.bfloat16, device=DEV) for _ in range(3))
    cublas_path(c, w_gate, w_up, gate_t, up_t, act_t)
    torch_outs = (act_t, gate_t, up_t)
    ok = True
    for cname in configs:
        cfg = sg.ALL_CONFIGS[cname]
        got, why = try_launch(lambda: sg.swiglu_gemm(c, w_gate, w_up, train=True, config=cfg))
        act_i, why_i = try_launch(lambda: sg.swiglu_gemm(c, w_gate, w_up, train=False, config=cfg))
        torch.cuda.synchronize()
        if got is None and act_i is None:
            print(f"skip {name:30} {cname:18} does not fit: {why}")
            continue
        if got is None:  # an inference-only config (the "ws" ones): act alone is checked
            print(f"note {name:30} {cname:18} training launch does not fit ({why}); inference checked alone")
        failures, parts = [], []
        outs = got if got is not None else (act_i, )
        for label, x, r, t in zip(("act", "gate", "up"), outs, ref, torch_outs):
            scale = r.abs().max().item()
            diff = (x.double() - r).abs()
            err = diff.max().item()
            torch_err = (t.double() - r).abs().max().item()
            rel = ((x.double() - t.double()).norm() / t.double().norm()).item()
            same = (x == t).float().mean().item()
            parts.append(f"{label} err {err:.1e} (cuBLAS {torch_err:.1e}) rel {rel:.1e} same {same:.1%}")
            if label == "act":
                bound = 2 * torch_err + BF16_ULP1 * scale
                if not (err <= bound):
                    failures.append(f"act: max|err| {err:.3e} > bound {bound:.3e}")
            else:
                over = (diff > BF16_ULP1 * r.abs() + 2.0 ** -16 * scale).sum().item()
                if over:
                    failures.append(f"{label}: {over} elements more than one ulp from the reference")
            if not (rel < 1e-2):
                failures.append(f"{label}: relative difference from the cuBLAS path {rel:.2e} >= 1e-2")
        if got is not None:
            want = epilogue_of(got[1], got[2])
            parts.append(f"epilogue {(got[0] != want).sum().item()} bits off")
            far = (got[0].double() - want.double()).abs() > BF16_ULP1 * want.double().abs()
            if far.any():
                i = far.nonzero()[0].tolist()
                failures.append(f"act more than an ulp from bf16(silu(gate) * up) of the kernel's own gate/up at "
                                f"{far.sum().item()} elements, e.g. {i}: g {got[1][i[0], i[1]].item()!r} "
                                f"u {got[2][i[0], i[1]].item()!r} kernel {got[0][i[0], i[1]].item()!r} "
                                f"torch {want[i[0], i[1]].item()!r}")
            if act_i is None:
                failures.append(f"inference launch failed where training ran: {why_i}")
            elif not torch.equal(act_i, got[0]):
                failures.append("inference act differs from the training launch's")
        status = "FAIL" if failures else "ok"
        print(f"{status:4} {name:30} {cname:18} {' | '.join(parts)}", flush=True)
        for f in failures:
            print(f"       {f}")
        ok &= not failures
    return ok


def parity(every):
    ok = True
    ok &= parity_case("N=4099 D=2048 F=5632", 4099, 2048, 5632, every, 1)
    ok &= parity_case("N=333 D=136 F=200 (tails)", 333, 136, 200, every, 2)
    ok &= parity_case("N=1 D=8 F=8", 1, 8, 8, [sg.DEFAULT], 3)
    for shape in ((64, 12, 64), (64, 64, 60)):
        c, wg, wu = (torch.zeros(*s, dtype=torch.bfloat16, device=DEV)
                     for s in ((shape[0], shape[1]), (shape[2], shape[1]), (shape[2], shape[1])))
        try:
            sg.swiglu_gemm(c, wg, wu)
            print(f"FAIL launcher accepted N, D, F = {shape} (D and F must be multiples of {sg.ALIGN})")
            ok = False
        except ValueError:
            print(f"ok   launcher refuses N, D, F = {shape}")
    return ok


def timed(fn):
    """Mean ms of fn over ~100 ms of calls (L2 flushed between calls; at least one call)."""
    return triton.testing.do_bench(fn, warmup=25, rep=100)


def bench(configs, ns, dfs):
    rows = []  # (D, F, N, mode, best fused ms, best config, baseline ms, cat ms)
    print(f"\n{'D':>5} {'F':>5} {'N':>7} {'mode':5} | " + " ".join(f"{c:>18}" for c in configs)
          + f" | {'cuBLAS':>8} {'cuBLAS cat':>10} | best fused", flush=True)
    for D, F in dfs:
        for N in ns:
            c, w_gate, w_up = make_case(5, N, D, F)
            w_cat = torch.cat([w_gate, w_up])
            outs = [torch.empty(N, F, dtype=torch.bfloat16, device=DEV) for _ in range(3)]
            gu = torch.empty(N, 2 * F, dtype=torch.bfloat16, device=DEV)
            flop = 4.0 * N * D * F
            base = timed(lambda: cublas_path(c, w_gate, w_up, outs[1], outs[2], outs[0]))
            cat = timed(lambda: cublas_cat_path(c, w_cat, gu, outs[0]))
            del gu
            for mode, train in (("infer", False), ("train", True)):
                out = tuple(outs) if train else (outs[0], )
                cells, best = [], (float("inf"), None)
                for cname in configs:
                    cfg = sg.ALL_CONFIGS[cname]
                    run = lambda: sg.swiglu_gemm(c, w_gate, w_up, train=train, config=cfg, out=out)  # noqa: E731
                    _, why = try_launch(run)
                    if why:
                        cells.append(f"{'n/a':>18}")
                        continue
                    ms = timed(run)
                    cells.append(f"{ms:8.3f} ({flop / ms / 1e9:4.0f})")
                    best = min(best, (ms, cname))
                print(f"{D:5} {F:5} {N:7} {mode:5} | " + " ".join(cells)
                      + f" | {base:8.3f} {cat:10.3f} | {best[1]} {base / best[0]:.2f}x", flush=True)
                rows.append((D, F, N, mode, best[0], best[1], base, cat))
            del c, w_gate, w_up, w_cat, outs
            torch.cuda.empty_cache()
    print("(ms per call; in parentheses TFLOP/s of the 4 N D F GEMM work; cuBLAS: two matmuls + one "
          "SwiGLU pass, writes gate, up, act; cuBLAS cat: one matmul on the stacked weights + the pass)")
    for D, F, N, mode, ms, cname, base, cat in rows:
        flop = 4.0 * N * D * F
        print(f"  D={D} F={F} N={N} {mode}: fused {cname} {ms:.3f} ms ({flop / ms / 1e9:.0f} TFLOP/s) "
              f"vs cuBLAS {base:.3f} ms ({flop / base / 1e9:.0f}), cat {cat:.3f} ms: {base / ms:.2f}x")
    wins = [f"D={D} F={F} N={N} {m} ({b / ms:.2f}x, {cn})" for D, F, N, m, ms, cn, b, _ in rows if ms < b]
    loses = [f"D={D} F={F} N={N} {m} ({b / ms:.2f}x)" for D, F, N, m, ms, cn, b, _ in rows if not ms < b]
    print(f"swiglu_gemm: fused wins at {', '.join(wins) if wins else 'no shape'}")
    print(f"swiglu_gemm: cuBLAS wins at {', '.join(loses) if loses else 'no shape'}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-bench", action="store_true", help="parity only")
    ap.add_argument("--quick", action="store_true", help="benchmark N=65536 and the default config only")
    ap.add_argument("--configs", nargs="+", default=list(sg.CONFIGS), choices=list(sg.ALL_CONFIGS),
                    help="the configs to check and time (default: all)")
    a = ap.parse_args()
    props = torch.cuda.get_device_properties(0)
    print(f"torch {torch.__version__}, triton {triton.__version__}, {props.name}, {props.multi_processor_count} SMs",
          flush=True)
    print("configs:", {k: tuple(v) for k, v in sg.CONFIGS.items()}, "default", sg.DEFAULT, "train", sg.DEFAULT_TRAIN,
          flush=True)
    t0 = time.perf_counter()
    ok = parity(a.configs)
    print(f"parity {'passed' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s", flush=True)
    if not a.no_bench:
        t1 = time.perf_counter()
        if a.quick:
            bench([sg.DEFAULT], (65536, ), BENCH_DF[:1])
        else:
            bench(a.configs, BENCH_N, BENCH_DF)
        print(f"benchmark in {time.perf_counter() - t1:.0f} s")
    print(f"{'all passed' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
