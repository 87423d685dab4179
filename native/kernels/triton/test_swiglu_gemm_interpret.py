"""swiglu_gemm's Triton kernel against the float64 math, on the CPU in Triton's interpreter.

    TRITON_INTERPRET=1 .venv/bin/python native/kernels/triton/test_swiglu_gemm_interpret.py

Inputs are float32 (the interpreter gets bf16 wrong), so the kernel's rounding points are float32
roundings; the reference (swiglu_gemm_reference.py) runs in float64 on the same values. Exits 1 on
any failure.

Error bound, as test_sqdk_interpret.py judges its kernels: the kernel's error against float64 must
be at most 4x PyTorch's own error when it evaluates the same math in float32 (the kernel sums D in
BLOCK_K pieces, a different order), plus a floor of 64 float32 ulps of the largest reference value.
Every case also checks that nothing outside the [N, F] outputs is written (they are views into a
larger buffer filled with a sentinel), that the inference launch writes the same act as the
training one, and shapes the launcher must refuse are refused.
"""

import sys
import time

import interpreter_compat  # noqa: F401  (exits unless TRITON_INTERPRET=1; NumPy 2.4 fix)
import torch
from swiglu_gemm import ALL_CONFIGS, CONFIGS, DEFAULT, TEST_CONFIG, Config, swiglu_gemm
from swiglu_gemm_reference import reference

MULTIPLE = 4.0
FLOOR_ULPS = 64 * 2.0 ** -23
SENTINEL = 12345.0  # what the output buffers hold past [N, F]: must survive the launch


def outputs(N, F, count):
    """count [N, F] float32 views with 16-byte aligned starts inside one buffer with SENTINEL after each."""
    pad = 64
    per = (N * F + pad + 3) // 4 * 4  # keeps every view's start a multiple of 16 bytes
    buf = torch.full((count * per,), SENTINEL, dtype=torch.float32)
    return buf, per, tuple(buf[i * per:i * per + N * F].view(N, F) for i in range(count))


def run_case(name, N, D, F, config, programs, seed, scale_w=None):
    g = torch.Generator().manual_seed(seed)
    scale_w = scale_w or D ** -0.5
    c = torch.randn(N, D, generator=g)
    w_gate = torch.randn(F, D, generator=g) * scale_w
    w_up = torch.randn(F, D, generator=g) * scale_w
    ref64 = reference(c, w_gate, w_up)
    g32 = c @ w_gate.T
    u32 = c @ w_up.T
    ref32 = (g32 * torch.sigmoid(g32) * u32, g32, u32)

    t0 = time.perf_counter()
    buf, per, out = outputs(N, F, 3)
    got = swiglu_gemm(c, w_gate, w_up, train=True, config=config, programs=programs, out=out)
    ibuf, iper, iout = outputs(N, F, 1)
    act_only = swiglu_gemm(c, w_gate, w_up, train=False, config=config, programs=programs, out=iout)
    seconds = time.perf_counter() - t0

    failures, parts = [], []
    for label, x, r64, r32 in zip(("act", "gate", "up"), got, ref64, ref32):
        scale = r64.abs().max().item() if r64.numel() else 0.0
        err = (x.to(torch.float64) - r64).abs().max().item() if r64.numel() else 0.0
        torch_err = (r32.to(torch.float64) - r64).abs().max().item() if r64.numel() else 0.0
        bound = MULTIPLE * torch_err + FLOOR_ULPS * scale
        parts.append(f"{label} {err / scale if scale else err:.1e}")
        if not (err <= bound):  # also catches NaN
            failures.append(f"{label}: max|err| {err:.3e} > bound {bound:.3e} "
                            f"(torch float32 {torch_err:.3e}, max|ref| {scale:.3e})")
    if not torch.equal(act_only, got[0]):
        failures.append("act of the inference launch differs from the training launch's")
    for label, b, p, k in (("train outputs", buf, per, 3), ("inference output", ibuf, iper, 1)):
        tails = torch.cat([b[i * p + N * F:(i + 1) * p] for i in range(k)])
        if not bool((tails == SENTINEL).all()):
            failures.append(f"{label}: written past [N, F]")
    status = "FAIL" if failures else "ok"
    print(f"{status:4} {name:52} rel err  {'  '.join(parts)}  ({seconds:.1f} s)")
    for f in failures:
        print(f"       {f}")
    return not failures


def refuses(N, D, F):
    try:
        swiglu_gemm(torch.zeros(N, D), torch.zeros(F, D), torch.zeros(F, D), config=TEST_CONFIG)
    except ValueError:
        return True
    return False


def main():
    t0 = time.perf_counter()
    small = TEST_CONFIG
    cases = [
        # name, N, D, F, config, programs, seed: tails in every dimension of the 16x16x16 tiles
        ("tails N=37 D=40 F=24, 3 programs", 37, 40, 24, small, 3, 0),
        ("smallest N=1 D=8 F=8", 1, 8, 8, small, 4, 1),
        ("exact tiles N=32 D=32 F=32, 1 program", 32, 32, 32, small, 1, 2),
        ("partial last group (7 row tiles, GROUP_M 2)", 100, 72, 56, small, 5, 3),
        ("GROUP_M 1, more programs than tiles", 19, 24, 40, small._replace(group_m=1), 64, 4),
        ("BLOCK_M != BLOCK_N != BLOCK_K", 45, 56, 40, Config(32, 16, 32, 3, 4, 1, False), 4, 5),
        ("large gate (saturating sigmoid)", 23, 16, 24, small, 2, 6),
        ("empty N=0", 0, 16, 24, small, 4, 7),
        (f"production tiles {DEFAULT}, tails", 130, 136, 136, CONFIGS[DEFAULT], 3, 8),
        ("warp-specialised config m128n64k64ws4 (flag off the GPU)", 150, 72, 80, ALL_CONFIGS["m128n64k64ws4"], 2, 9),
    ]
    ok = True
    for name, N, D, F, cfg, programs, seed in cases:
        ok &= run_case(name, N, D, F, cfg, programs, seed, scale_w=4.0 if "large gate" in name else None)
    for shape in ((10, 12, 16), (10, 16, 20), (10, 4, 8), (10, 16, 0)):
        refused = refuses(*shape)
        print(f"{'ok' if refused else 'FAIL':4} refuses N, D, F = {shape}")
        ok &= refused
    print(f"{'all passed' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
