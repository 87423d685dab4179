"""HSPMN_STREAMS=2 (the reflexive stream's GEMMs on a second CUDA stream beside the contextual stream's
kernels, native/src/cuda/README.md "Two streams") against one stream, through the CUDA backend: every
result must be the same bits, since each stream runs the same kernels on the same values in the same
order and only their interleaving differs. Prints each check, a summary line, and exits 1 on a failure.

    python3 native/reference/check_streams.py --lib build-gpu/libhspmn.so

Per shape (odd D and C included): the inference forward (out, aux), the same in chunks of 100 rows
(HSPMN_FORWARD_CHUNK_ROWS), HOST tensors, the training forward and backward (out, aux, d_x, every
parameter's gradient), without and with residual dropout (whose reflexive mask runs on the side
stream), and a forward captured as a CUDA graph with two streams (after a direct call made the side
stream) replayed against the one-stream run (compare_settings, which check_swiglu_gemm.py shares); and
the first two-stream call of a context must allocate the side stream's 32 MiB workspace and nothing
else (so two streams did run). Then a malformed
HSPMN_STREAMS must fail the call with HSPMN_ERR_INVALID_ARGUMENT naming it.
"""

import ctypes as C
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_harness  # noqa: E402
from check_cuda_block import BF16, F32, HOST, PARAMS, bf16_bits, param_shape  # noqa: E402
from hspmn_ctypes import AllocStats, Context, Lib  # noqa: E402

ENV = "HSPMN_STREAMS"
CHUNK_ENV = "HSPMN_FORWARD_CHUNK_ROWS"
SIDE_WORKSPACE = 32 << 20  # Device::kWorkspaceBytes: the side stream's own cuBLASLt workspace
# (name, B, S, D, H, Hkv, conv): D % 8 != 0 takes the scalar kernels and staged x; S = 2000 a longer C
SHAPES = [("d64_b2_s300", 2, 300, 64, 4, 2, 4), ("d36_b3_s97", 3, 97, 36, 2, 1, 3),
          ("d256_b1_s2000", 1, 2000, 256, 2, 1, 4)]


def set_env(name, value):
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def run(ctx, lib, blk, bp, x, d_out, training, memory=None, dropout=0.0):
    """out, aux (and d_x, the gradients when training) of one call."""
    B, S, D = x.shape
    fp = lib.forward_default_params()
    fp.training, fp.noise, fp.seed, fp.step, fp.layer = training, 1 if training else 0, 7, 3, 1
    fp.dropout = dropout
    out, aux = ctx.tensor(BF16, (B, S, D), memory=memory), ctx.tensor(F32, (1,), memory=memory)
    lib.ok(lib.block_forward(blk, C.byref(fp), ctx.tensor(BF16, (B, S, D), x, memory=memory), out, aux), "forward")
    r = dict(out=ctx.read(out, BF16, (B, S, D)), aux=ctx.read(aux, F32, (1,)))
    if training:
        d_x = ctx.tensor(BF16, (B, S, D))
        bw = lib.backward_default_params()
        lib.ok(lib.block_backward(blk, C.byref(bw), ctx.tensor(BF16, (B, S, D), d_out),
                                  ctx.tensor(F32, (1,), np.array([0.5], np.float32)), d_x), "backward")
        r["d_x"] = ctx.read(d_x, BF16, (B, S, D))
        r["grads"] = {}
        for p in PARAMS:
            shape = param_shape(p, bp.dim, bp.num_heads, bp.num_kv_heads, bp.conv_kernel, bp.mlp_ratio)
            gt = ctx.tensor(F32, shape)
            lib.ok(lib.block_get_grad(blk, p.encode(), gt), f"get_grad {p}")
            r["grads"][p] = ctx.read(gt, F32, shape)
    return r


def live_bytes(lib):
    st = AllocStats()
    lib.ok(lib.alloc_stats_get(C.byref(st)), "alloc_stats_get")
    return st.live_bytes


def differing(a, b):
    """Elements whose bits differ (NaN equal to NaN of the same bits)."""
    a, b = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
    return float(np.sum(a.view(np.uint32) != b.view(np.uint32)))


def graph_out(ctx, lib, blk, x):
    B, S, D = x.shape
    xt, out = ctx.tensor(BF16, (B, S, D), x), ctx.tensor(BF16, (B, S, D))
    fp = lib.forward_default_params()
    fp.training = 0
    g = C.c_void_p()
    lib.ok(lib.graph_capture_forward(blk, C.byref(fp), xt, out, None, C.byref(g)), "graph_capture_forward")
    try:
        zeros = np.zeros((B, S, D), np.uint16)
        lib.ok(lib.tensor_copy_in(out, zeros.ctypes.data, zeros.nbytes), "copy_in")
        lib.ok(lib.graph_launch(g), "graph_launch")
        lib.ok(lib.context_synchronize(ctx.h), "context_synchronize")
        return ctx.read(out, BF16, (B, S, D))
    finally:
        lib.ok(lib.graph_destroy(g), "graph_destroy")


def compare_settings(ctx, lib, rep, blk, bp, x, d_out, env, values):
    """Every result of one block under env = values[1] against env = values[0], bit for bit: the inference
    forward, the same in chunks of 100 rows, HOST tensors, training without and with residual dropout
    (out, aux, d_x, every gradient), and a forward captured as a graph under values[1] replayed against a
    direct call under values[0]. Leaves env and the chunk size unset."""
    try:
        for label, chunk, memory, training, p in (("inference", None, None, 0, 0.0),
                                                  ("chunks of 100 rows", "100", None, 0, 0.0),
                                                  ("HOST tensors", None, HOST, 0, 0.0),
                                                  ("training", None, None, 1, 0.0),
                                                  ("training, dropout 0.1", None, None, 1, 0.1)):
            set_env(CHUNK_ENV, chunk)
            set_env(env, values[0])
            one = run(ctx, lib, blk, bp, x, d_out, training, memory, p)
            set_env(env, values[1])
            two = run(ctx, lib, blk, bp, x, d_out, training, memory, p)
            for k in ("out", "aux", "d_x"):
                if k in one:
                    rep.check(f"{label}: {k} values differing", differing(two[k], one[k]), 0.0)
            for param in one.get("grads", {}):
                rep.check(f"{label}: grad {param} values differing",
                          differing(two["grads"][param], one["grads"][param]), 0.0)
            set_env(CHUNK_ENV, None)
        set_env(env, values[0])
        want = run(ctx, lib, blk, bp, x, d_out, 0)["out"]
        set_env(env, values[1])
        rep.check(f"graph under {env}={values[1]}, replay vs {env}={values[0]} direct: values differing",
                  differing(graph_out(ctx, lib, blk, x), want), 0.0)
    finally:
        set_env(env, None)
        set_env(CHUNK_ENV, None)


def run_shape(lib, rep, name, B, S, D, H, Hkv, conv):
    ctx = Context(lib, "cuda", 1)
    try:
        bp = lib.block_default_params()
        bp.dim, bp.num_heads, bp.num_kv_heads, bp.conv_kernel, bp.sparsity_k = D, H, Hkv, conv, 0.2
        blk = ctx.block(bp, 99)
        rng = np.random.default_rng(S * 7 + D)
        x = bf16_bits(rng.standard_normal((B, S, D)))
        d_out = bf16_bits(0.1 * rng.standard_normal((B, S, D)))
        # Proof that two streams ran at all (else every comparison below would hold trivially): the first
        # two-stream call of a context makes the side stream and its workspace, and nothing else differs
        # between the two calls (the one-stream call before them grew the block's buffers).
        set_env(ENV, "1")
        run(ctx, lib, blk, bp, x, d_out, 0)
        grew = {}
        for streams in ("1", "2"):
            set_env(ENV, streams)
            before = live_bytes(lib)
            run(ctx, lib, blk, bp, x, d_out, 0)
            grew[streams] = live_bytes(lib) - before
        rep.check("the first two-stream call allocates the side workspace: |extra bytes - 32 MiB|",
                  float(abs(grew["2"] - grew["1"] - SIDE_WORKSPACE)), 0.0)
        compare_settings(ctx, lib, rep, blk, bp, x, d_out, ENV, ("1", "2"))
    finally:
        set_env(ENV, None)
        set_env(CHUNK_ENV, None)
        ctx.close()


def small_forward(ctx, lib):
    """A 64-wide block and an 8-token input in ctx: the returned function runs its default inference forward
    under the settings of the moment and returns the status."""
    bp = lib.block_default_params()
    bp.dim, bp.num_heads, bp.num_kv_heads = 64, 4, 2
    blk = ctx.block(bp, 5)
    x = ctx.tensor(BF16, (1, 8, 64), bf16_bits(np.ones((1, 8, 64))))
    out = ctx.tensor(BF16, (1, 8, 64))
    fp = lib.forward_default_params()
    return lambda: lib.block_forward(blk, C.byref(fp), x, out, None)


def run_errors(lib, rep, env=ENV, bad_values=("0", "3", "two")):
    """A malformed env must fail a forward with HSPMN_ERR_INVALID_ARGUMENT whose message names it."""
    ctx = Context(lib, "cuda", 1)
    try:
        forward = small_forward(ctx, lib)
        for bad in bad_values:
            set_env(env, bad)
            status = forward()
            msg = lib.last_error().decode()
            rep.check(f"{env}={bad!r} -> HSPMN_ERR_INVALID_ARGUMENT naming it (status {status})",
                      0.0 if status == 1 and env in msg else math.inf, 0.0)
    finally:
        set_env(env, None)
        ctx.close()


def main():
    args = check_harness.parse(check_harness.parser(__doc__, backend=False))
    lib = Lib(args.lib)
    rows, failures = [], []

    def case(name):
        return check_harness.Case(name, rows, failures)

    items = [(s[0], lambda s=s: run_shape(lib, case(s[0]), *s)) for s in SHAPES]
    items.append(("errors", lambda: run_errors(lib, case("errors"))))
    failures += check_harness.run_cases(items, lambda item: item[1]())
    return check_harness.verdict(lib, rows, failures, "check_streams: {checks} checks, {failures} failures")


if __name__ == "__main__":
    sys.exit(main())
