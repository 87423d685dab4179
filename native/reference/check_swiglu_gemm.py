"""HSPMN_SWIGLU_GEMM=1 (the block's gate, up and act from swiglu_gemm's sm_90a kernel, one launch, in
inference and training forwards; unset, the default, is the same) against
HSPMN_SWIGLU_GEMM=0 (a cuBLASLt GEMM on [W_gate; W_up], then swiglu_forward), through the CUDA
backend: every result must be the same bits. The fused kernel sums each product in cuBLASLt's order
(native/tests/swiglu_gemm_cuda: gate and up bit for bit cuBLASLt's on every tested shape) and its
activation is swiglu_forward's arithmetic, so nothing downstream may move. Prints each check, a
summary line, and exits 1 on a failure.

    python3 native/reference/check_swiglu_gemm.py --lib build-gpu/libhspmn.so

Per shape (D % 8 == 0, where the kernel runs; D = 36, where the block keeps the unfused path): the
inference forward (out, aux), the same in chunks of 100 rows, HOST tensors, the training forward and
backward (out, aux, d_x, every parameter's gradient: the backward reads the gate | up the kernel wrote),
with residual dropout, and a captured forward replayed. Then a malformed HSPMN_SWIGLU_GEMM must fail the
call with HSPMN_ERR_INVALID_ARGUMENT naming it. Proof that the kernel runs at all (else the comparisons
would hold trivially): HSPMN_SWIGLU_GEMM_CLUSTER is read only where the kernel launches, so a malformed
value must fail a default inference forward and leave one under HSPMN_SWIGLU_GEMM=0 unharmed. On a GPU
other than sm_90 that proof fails, as it must: both settings run the unfused path there.

The backward's kernel likewise: HSPMN_SWIGLU_BACKWARD_GEMM=1 (d_gate | d_up from the d_act GEMM's
epilogue, swiglu_backward_gemm) against 0 (the default: cuBLASLt into d_act, then swiglu_backward),
every result bit for bit on every shape, a malformed value refused, and proof that it runs: under
HSPMN_SWIGLU_GEMM=0 (so the forward never reads the cluster setting) a malformed
HSPMN_SWIGLU_GEMM_CLUSTER must fail the training backward under =1 and not under =0.
"""

import ctypes as C
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_harness  # noqa: E402
from check_cuda_block import BF16, F32, bf16_bits  # noqa: E402
from check_streams import compare_settings, run_errors, set_env, small_forward  # noqa: E402
from hspmn_ctypes import Context, Lib  # noqa: E402

ENV = "HSPMN_SWIGLU_GEMM"
BACKWARD_ENV = "HSPMN_SWIGLU_BACKWARD_GEMM"
CLUSTER_ENV = "HSPMN_SWIGLU_GEMM_CLUSTER"
# (name, B, S, D, H, Hkv, conv)
SHAPES = [("d64_b2_s300", 2, 300, 64, 4, 2, 4), ("d36_b3_s97", 3, 97, 36, 2, 1, 3),
          ("d256_b1_s2000", 1, 2000, 256, 2, 1, 4), ("d512_b2_s1000", 2, 1000, 512, 4, 2, 4)]


def run_shape(lib, rep, name, B, S, D, H, Hkv, conv, env=ENV):
    ctx = Context(lib, "cuda", 1)
    try:
        bp = lib.block_default_params()
        bp.dim, bp.num_heads, bp.num_kv_heads, bp.conv_kernel, bp.sparsity_k = D, H, Hkv, conv, 0.2
        blk = ctx.block(bp, 99)
        rng = np.random.default_rng(S * 7 + D)
        x = bf16_bits(rng.standard_normal((B, S, D)))
        d_out = bf16_bits(0.1 * rng.standard_normal((B, S, D)))
        compare_settings(ctx, lib, rep, blk, bp, x, d_out, env, ("0", "1"))
        if env == ENV:
            compare_settings(ctx, lib, rep, blk, bp, x, d_out, BACKWARD_ENV, ("0", "1"))
    finally:
        ctx.close()


def small_backward(ctx, lib):
    """A 64-wide block and an 80-token input in ctx: the returned function runs a training forward (which must
    succeed) under the settings of the moment, then a backward under `then` (env name -> value, None unsets)
    set just before it, and returns the backward's status."""
    bp = lib.block_default_params()
    bp.dim, bp.num_heads, bp.num_kv_heads = 64, 4, 2
    blk = ctx.block(bp, 5)
    rng = np.random.default_rng(3)
    x = ctx.tensor(BF16, (1, 80, 64), bf16_bits(rng.standard_normal((1, 80, 64))))
    d_out = ctx.tensor(BF16, (1, 80, 64), bf16_bits(0.1 * rng.standard_normal((1, 80, 64))))
    out, aux, d_x = ctx.tensor(BF16, (1, 80, 64)), ctx.tensor(F32, (1,)), ctx.tensor(BF16, (1, 80, 64))
    d_aux = ctx.tensor(F32, (1,), np.array([0.5], np.float32))

    def step(then):
        fp = lib.forward_default_params()
        fp.training, fp.noise, fp.seed = 1, 1, 7
        lib.ok(lib.block_forward(blk, C.byref(fp), x, out, aux), "forward")
        for name, value in then.items():
            set_env(name, value)
        bw = lib.backward_default_params()
        return lib.block_backward(blk, C.byref(bw), d_out, d_aux, d_x)

    return step


def run_backward_errors(lib, rep, env, bad_values):
    """A malformed env read only in the backward must fail it with HSPMN_ERR_INVALID_ARGUMENT naming it."""
    ctx = Context(lib, "cuda", 1)
    try:
        step = small_backward(ctx, lib)
        for bad in bad_values:
            set_env(env, None)
            status = step({env: bad})
            msg = lib.last_error().decode() if status else ""
            rep.check(f"{env}={bad!r} -> backward fails with HSPMN_ERR_INVALID_ARGUMENT naming it (status {status})",
                      0.0 if status == 1 and env in msg else math.inf, 0.0)
    finally:
        set_env(env, None)
        ctx.close()


def run_backward_proof(lib, rep):
    """The training backward reaches swiglu_backward_gemm under HSPMN_SWIGLU_BACKWARD_GEMM=1: with the forward
    unfused, a malformed HSPMN_SWIGLU_GEMM_CLUSTER fails the backward (naming it) under =1, not under =0."""
    ctx = Context(lib, "cuda", 1)
    try:
        step = small_backward(ctx, lib)
        set_env(ENV, "0")
        for on, want_fail in (("1", True), ("0", False)):
            set_env(BACKWARD_ENV, on)
            set_env(CLUSTER_ENV, None)
            status = step({CLUSTER_ENV: "3"})
            msg = lib.last_error().decode() if status else ""
            ok = (status == 1 and CLUSTER_ENV in msg) if want_fail else status == 0
            rep.check(f"{CLUSTER_ENV}='3', {BACKWARD_ENV}={on}: backward {'fails naming it' if want_fail else 'runs'}"
                      f" (status {status})", 0.0 if ok else math.inf, 0.0)
    finally:
        for e in (ENV, BACKWARD_ENV, CLUSTER_ENV):
            set_env(e, None)
        ctx.close()


def run_proof(lib, rep, env=ENV, cluster_env=CLUSTER_ENV, on=None):
    """The block's inference forward reaches the kernel (by default, or under env=on where the kernel is off by
    default): a malformed cluster_env fails it (run_errors), and does not fail the same forward under env=0."""
    set_env(env, on)
    try:
        run_errors(lib, rep, cluster_env, ("3",))
    finally:
        set_env(env, None)
    ctx = Context(lib, "cuda", 1)
    try:
        forward = small_forward(ctx, lib)
        set_env(cluster_env, "3")
        set_env(env, "0")
        status = forward()
        rep.check(f"{cluster_env}='3' under {env}=0 -> no error (status {status})",
                  0.0 if status == 0 else math.inf, 0.0)
    finally:
        set_env(cluster_env, None)
        set_env(env, None)
        ctx.close()


def main():
    args = check_harness.parse(check_harness.parser(__doc__, backend=False))
    lib = Lib(args.lib)
    rows, failures = [], []

    def case(name):
        return check_harness.Case(name, rows, failures)

    items = [(s[0], lambda s=s: run_shape(lib, case(s[0]), *s)) for s in SHAPES]
    items.append(("errors", lambda: run_errors(lib, case("errors"), ENV, ("2", "yes"))))
    items.append(("kernel runs", lambda: run_proof(lib, case("kernel runs"))))
    items.append(("backward errors", lambda: run_backward_errors(lib, case("backward errors"), BACKWARD_ENV,
                                                                 ("2", "yes"))))
    items.append(("backward kernel runs", lambda: run_backward_proof(lib, case("backward kernel runs"))))
    failures += check_harness.run_cases(items, lambda item: item[1]())
    return check_harness.verdict(lib, rows, failures, "check_swiglu_gemm: {checks} checks, {failures} failures")


if __name__ == "__main__":
    sys.exit(main())
