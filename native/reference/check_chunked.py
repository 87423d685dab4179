"""The chunked inference forward (native/README.md "Memory of a long forward") against the one-pass
forward of the same library, on either backend; prints each check with its bound, a summary line, and
exits 1 when any check fails.

    .venv/bin/python native/reference/check_chunked.py [--backend cpu|cuda] [--lib native/build/libhspmn.so]

An inference forward of more rows than one chunk runs in chunks (core/forward_chunk.h); at these sizes
every forward fits one chunk unless HSPMN_FORWARD_CHUNK_ROWS forces smaller ones, which this check
sets between calls (the library reads it at every forward). Chunk sizes 1, 37, 100 and 256 rows over
shapes (B, S) = (1, 301) and (3, 97) cover both ways of chunking: sequences split into chunks of
consecutive rows (1, 37; 100 and 256 for S = 301; uneven last chunks) and chunks of whole sequences
(100: one of S = 97 per chunk, 256: two, then one).

Per case (odd sizes: D % 8 != 0, head dims 16, 18 and 64, conv kernels 2, 3, 4) and routing
(top-k over the whole sequence, threshold, pinned indices with uneven counts and C > count):
  block forward      out and aux of every chunk size against the one-pass forward
  model              hspmn_model_forward (evaluation) loss and per-layer stats, hspmn_model_logits
                     (2 layers on the CPU, 1 on CUDA: run_model_case says why)
  cuda only          HOST x / out (staged chunk by chunk) against the DEVICE run; a chunked forward
                     captured as a CUDA graph and replayed against the same forward run directly
Then: the library memory a forward of a long sequence (D 64, S 4096) adds at its peak, chunked by 256
rows, must be under half the one-pass forward's (each in a fresh context), and a malformed HSPMN_FORWARD_CHUNK_ROWS must fail
the call with HSPMN_ERR_INVALID_ARGUMENT.

Bounds:
  cpu        0 (bitwise) for everything: the CPU GEMM sums each output over k in one order whatever M
             is, and every other op of a row is the same float32 arithmetic on the same values
             (cpu_block_rows.cpp), so a chunk's rows equal the one-pass rows bit for bit.
  cuda out   2e-3 relative: the router, the selection, the conv, RoPE and the attention compute the
             same values (cuda_block_chunked.cu); the GEMMs see M = the chunk's rows, for which
             cuBLASLt may pick another algorithm (float32 sums in another order: an occasional
             one-ulp flip of a bf16 rounding between ops, ~1e-4 per stage), as check_decode.py's bound.
  cuda aux, routed fraction, HOST vs DEVICE, graph vs direct: 0 (the same kernels on the same values;
             the graph replays the direct run's kernels and cuBLASLt plans).
  model loss / logits, cuda: 2e-3 relative, as out.
"""

import ctypes as C
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_harness  # noqa: E402
from check_model import NativeModel, bf16_bits  # noqa: E402
from hspmn_ctypes import (BACKENDS, BF16, F32, I32, AllocStats, Context, Lib,  # noqa: E402
                          bf16_bits_to_f32, rel)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
ENV = "HSPMN_FORWARD_CHUNK_ROWS"
HOST, DEVICE = 0, 1

BOUND = {"cpu": 0.0, "cuda": 2e-3}
CHUNKS = [1, 37, 100, 256]
SHAPES = [(1, 301), (3, 97)]
ROUTINGS = ["topk", "threshold", "pinned"]
CASES = [
    # GQA 2:1, head dim 16, conv kernel 3 (D % 8 == 0: the vector kernels, x read in place on CUDA)
    ("d64_gqa_k3", dict(dim=64, num_heads=4, num_kv_heads=2)),
    # D % 8 != 0 (scalar kernels; CUDA stages x and out), head dim 18 (padded attention), conv kernel 4
    ("d36_dh18_k4", dict(dim=36, num_heads=2, num_kv_heads=1, conv_kernel=4, mlp_ratio=2)),
    # head dim 64 (exact attention variant), conv kernel 2 (a one-row conv tail)
    ("d128_dh64_k2", dict(dim=128, num_heads=2, num_kv_heads=1, conv_kernel=2)),
]


def set_chunk(rows):
    if rows is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = str(rows)


class Block:
    """One block of a context, its router spread so both paths of the threshold rule are taken."""

    def __init__(self, ctx, fields, routing, seed):
        self.ctx, self.lib = ctx, ctx.lib
        bp = self.lib.block_default_params()
        for k, v in fields.items():
            setattr(bp, k, v)
        bp.routing = 1 if routing == "threshold" else 0
        bp.sparsity_k = 0.3
        self.D = bp.dim
        h = C.c_void_p()
        self.lib.ok(self.lib.block_create(ctx.h, C.byref(bp), seed, C.byref(h)), "block_create")
        self.h = h
        rng = np.random.default_rng(seed)
        # b = 0 and w ~ N(0, 2^2): scores of a spread ~1 around 0, about half the tokens routed.
        self.set("router.w", bf16_bits_to_f32(bf16_bits(rng.normal(0.0, 2.0, self.D))))
        self.set("router.b", np.zeros(1, np.float32))

    def set(self, name, values):
        t = self.ctx.tensor(F32, values.shape, values.astype(np.float32))
        self.lib.ok(self.lib.block_set_param(self.h, name.encode(), t), f"block_set_param {name}")

    def destroy(self):
        self.lib.ok(self.lib.block_destroy(self.h), "block_destroy")


def forward(block, x_bits, pins, memory):
    """out [B, S, D] (f32 of the bf16 bits) and aux of one inference forward."""
    ctx, lib = block.ctx, block.lib
    B, S, D = x_bits.shape
    x = ctx.tensor(BF16, (B, S, D), x_bits, memory=memory)
    out = ctx.tensor(BF16, (B, S, D), memory=memory)
    aux = ctx.tensor(F32, (1,), memory=memory)
    fp = lib.forward_default_params()
    fp.training = 0
    if pins is None:
        lib.ok(lib.block_forward(block.h, C.byref(fp), x, out, aux), "block_forward")
    else:
        idx, cnt = pins
        ti = ctx.tensor(I32, idx.shape, idx, memory=memory)
        tc = ctx.tensor(I32, cnt.shape, cnt, memory=memory)
        lib.ok(lib.block_forward_routed(block.h, C.byref(fp), x, None, ti, tc, out, aux), "block_forward_routed")
    return ctx.read(out, BF16, (B, S, D)), ctx.read(aux, F32, (1,))


def pinned(rng, B, S):
    C_ = S // 2 + 3
    idx = -np.ones((B, C_), np.int32)
    cnt = np.zeros(B, np.int32)
    for b in range(B):
        cnt[b] = rng.integers(1, S // 2)
        idx[b, :cnt[b]] = np.sort(rng.choice(S, cnt[b], replace=False))
    return idx, cnt


def run_block_case(lib, backend, threads, name, fields, report, seed):
    ctx = Context(lib, backend, threads)
    bound = BOUND[backend]
    try:
        for r_i, routing in enumerate(ROUTINGS):
            block = Block(ctx, fields, routing, seed + r_i)
            rng = np.random.default_rng(seed + 100 + r_i)
            for B, S in SHAPES:
                x = bf16_bits(rng.normal(0.0, 1.0, (B, S, block.D)))
                pins = pinned(rng, B, S) if routing == "pinned" else None
                set_chunk(None)
                ref_out, ref_aux = forward(block, x, pins, ctx.memory)
                for rows in CHUNKS:
                    set_chunk(rows)
                    out, aux = forward(block, x, pins, ctx.memory)
                    what = f"{routing} B={B} S={S} chunk {rows}"
                    report(name, f"{what}: out", rel(out, ref_out), bound)
                    report(name, f"{what}: aux", float(np.max(np.abs(aux - ref_aux))), 0.0)
                    if backend == "cuda" and rows == 37:
                        host_out, host_aux = forward(block, x, pins, HOST)
                        report(name, f"{what}: HOST tensors vs DEVICE (bitwise)",
                               float(np.max(np.abs(host_out - out))) + float(np.max(np.abs(host_aux - aux))), 0.0)
                    if backend == "cuda" and rows == 100 and pins is None:
                        report(name, f"{what}: graph replay vs direct (bitwise)", graph_error(block, x, out), 0.0)
                set_chunk(None)
            block.destroy()
    finally:
        set_chunk(None)
        ctx.close()


def graph_error(block, x_bits, want):
    """max |replay - want| of the chunked forward captured as a CUDA graph (the current chunk size)."""
    ctx, lib = block.ctx, block.lib
    B, S, D = x_bits.shape
    x = ctx.tensor(BF16, (B, S, D), x_bits, memory=DEVICE)
    out = ctx.tensor(BF16, (B, S, D), memory=DEVICE)
    fp = lib.forward_default_params()
    fp.training = 0
    g = C.c_void_p()
    lib.ok(lib.graph_capture_forward(block.h, C.byref(fp), x, out, None, C.byref(g)), "graph_capture_forward")
    try:
        zeros = np.zeros((B, S, D), np.uint16)
        lib.ok(lib.tensor_copy_in(out, zeros.ctypes.data, zeros.nbytes), "copy_in")
        lib.ok(lib.graph_launch(g), "graph_launch")
        lib.ok(lib.context_synchronize(ctx.h), "context_synchronize")
        return float(np.max(np.abs(ctx.read(out, BF16, (B, S, D)) - want)))
    finally:
        lib.ok(lib.graph_destroy(g), "graph_destroy")


def run_model_case(lib, backend, threads, report):
    ctx = Context(lib, backend, threads)
    bound = BOUND[backend]
    native = None
    try:
        # CUDA: one layer, whose input (the embedding) is exact, so its routing cannot flip between the
        # runs; a deeper layer's input differs in float32 sum order and a score near 0 could (a whole
        # attention term: check_decode.py searches for margins against that). The CPU is bitwise: two.
        V, L = 97, 2 if backend == "cpu" else 1
        block = dict(dim=64, num_heads=4, num_kv_heads=2, routing="threshold", sparsity_k=0.3)
        native = NativeModel(ctx, V, L, block, 41)
        rng = np.random.default_rng(41)
        for pname in native.names:
            shape = native.shapes[pname]
            if pname.endswith("router.w"):
                native.set("model_set_param", pname, bf16_bits_to_f32(bf16_bits(rng.normal(0.0, 2.0, shape))))
            elif pname.endswith("router.b"):
                native.set("model_set_param", pname, np.zeros(shape, np.float32))
        tokens = rng.integers(0, V, size=(2, 150))
        targets = rng.integers(0, V, size=(2, 150))

        def run():
            loss, stats = native.forward(tokens, targets, 0)
            tok = ctx.tensor(I32, tokens.shape, tokens.astype(np.int32))
            lg = ctx.tensor(F32, (2, V))
            lib.ok(lib.model_logits(native.h, tok, lg), "model_logits")
            return loss, stats, ctx.read(lg, F32, (2, V))

        set_chunk(None)
        ref = run()
        for rows in (37, 100):
            set_chunk(rows)
            loss, stats, logits = run()
            report("model", f"chunk {rows}: loss", rel(loss, ref[0]), bound)
            report("model", f"chunk {rows}: per-layer routed fraction", float(np.max(np.abs(stats[:, 1] - ref[1][:, 1]))),
                   0.0)
            report("model", f"chunk {rows}: per-layer aux", float(np.max(np.abs(stats[:, 0] - ref[1][:, 0]))), bound)
            report("model", f"chunk {rows}: logits", rel(logits, ref[2]), bound)
        set_chunk(None)
    finally:
        set_chunk(None)
        if native is not None:
            native.destroy()
        ctx.close()


def peak_of(lib, backend, threads, rows):
    """Bytes one inference forward of D 64, B 1, S 4096 adds at its peak to what a fresh context, the
    block and x / out held before it (the CUDA context's 32 MiB cuBLASLt workspace among those)."""
    set_chunk(rows)
    ctx = Context(lib, backend, threads)
    try:
        block = Block(ctx, dict(dim=64, num_heads=4, num_kv_heads=2), "threshold", 5)
        x = bf16_bits(np.random.default_rng(5).normal(0.0, 1.0, (1, 4096, 64)))
        xt = ctx.tensor(BF16, (1, 4096, 64), x)
        out = ctx.tensor(BF16, (1, 4096, 64))
        fp = lib.forward_default_params()
        fp.training = 0
        st = AllocStats()
        lib.ok(lib.context_synchronize(ctx.h), "context_synchronize")
        lib.ok(lib.alloc_stats_get(C.byref(st)), "alloc_stats_get")
        before = st.live_bytes
        lib.ok(lib.alloc_stats_reset_peak(), "alloc_stats_reset_peak")
        lib.ok(lib.block_forward(block.h, C.byref(fp), xt, out, None), "block_forward")
        lib.ok(lib.alloc_stats_get(C.byref(st)), "alloc_stats_get")
        block.destroy()
        return st.peak_bytes - before
    finally:
        set_chunk(None)
        ctx.close()


def run_memory_and_errors(lib, backend, threads, report):
    one = peak_of(lib, backend, threads, None)
    chunked = peak_of(lib, backend, threads, 256)
    report("memory", f"peak chunked by 256 / one pass ({chunked} / {one} bytes), S 4096", chunked / one, 0.5)

    ctx = Context(lib, backend, threads)
    try:
        block = Block(ctx, dict(dim=64, num_heads=4, num_kv_heads=2), "topk", 6)
        x = ctx.tensor(BF16, (1, 8, 64), bf16_bits(np.ones((1, 8, 64))))
        out = ctx.tensor(BF16, (1, 8, 64))
        fp = lib.forward_default_params()
        for bad in ("0", "-3", "12x", ""):
            os.environ[ENV] = bad
            status = lib.block_forward(block.h, C.byref(fp), x, out, None)
            msg = lib.last_error().decode()
            ok = status == 1 and ENV in msg
            report("errors", f"{ENV}={bad!r} -> HSPMN_ERR_INVALID_ARGUMENT naming it (status {status})",
                   0.0 if ok else math.inf, 0.0)
        set_chunk(None)
        block.destroy()
    finally:
        set_chunk(None)
        ctx.close()


def main():
    args = check_harness.parse(check_harness.parser(__doc__))
    set_chunk(None)
    lib = Lib(args.lib)
    rows, failures = [], []

    def report(case, what, err, b):
        check_harness.Case(case, rows, failures).check(what, err, b)

    def run(item):
        run_block_case(lib, args.backend, args.threads, item[0], item[1], report, item[2])

    failures += check_harness.run_cases([(name, fields, 17 + 10 * i) for i, (name, fields) in enumerate(CASES)], run)
    failures += check_harness.run_cases([run_model_case, run_memory_and_errors],
                                        lambda fn: fn(lib, args.backend, args.threads, report))
    return check_harness.verdict(lib, rows, failures,
                                 f"check_chunked --backend {args.backend}: {{checks}} checks, {{failures}} failures")



if __name__ == "__main__":
    sys.exit(main())
