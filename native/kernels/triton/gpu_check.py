"""sqdk_attention on a CUDA GPU: bf16 parity of the Triton kernels, of the AOT cubins launched the
way libhspmn's loader will launch them, CUDA-graph replay with new device-side counts, and timings.

    python3 native/kernels/triton/gpu_check.py [--cubins DIR] [--no-bench]
    python3 native/kernels/triton/gpu_check.py --bench-only --seq 65536 131072 [--base DIR]

--seq: time the block's shape (B=1, H=16, Hkv=4, Dh=128, rho=0.2) at these sequence lengths instead
of the default benchmark shapes; --base DIR: also time DIR/sqdk_attention.py (another tree's kernels,
e.g. before a change) on the same inputs, one after the other; --bench-only skips the checks.

--cubins DIR: the output of aot_compile.py (compiled anywhere, e.g. on a machine without a GPU);
each cubin is loaded with cuModuleLoadData and launched with cuLaunchKernel through ctypes, using
only what its JSON says (symbol, block, grid rule, shared memory, argument order, scratch); dK and dV
go side by side into one [B, S, 2 Hkv Dh] tensor (DKV_STRIDE), the layout the CUDA block passes.

Bound, as flash-attention's tests judge a kernel: the kernel's max error against float64 must be
at most 2x PyTorch's own max error when it evaluates the same reference in bf16 (the kernel's
storage precision), plus half a bf16 ulp of the largest value (the unavoidable rounding of a bf16
output). lse is float32 in the kernel and is held to 4x PyTorch's float32 error plus 64 float32
ulps, as in test_sqdk_interpret.py. Exits 1 on a failure.
"""

import argparse
import ctypes
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
import triton  # noqa: E402

from sqdk_reference import reference  # noqa: E402
from sqdk_attention import TILES, block_d_for, sqdk_attention_backward, sqdk_attention_forward  # noqa: E402

DEV = "cuda"


def make_case(seed, B, S, C, H, Hkv, Dh, counts):
    g = torch.Generator().manual_seed(seed)
    pos = torch.full((B, C), -1, dtype=torch.int64)
    for b, n in enumerate(counts):
        pos[b, :n] = torch.sort(torch.randperm(S, generator=g)[:n]).values
    q = torch.randn(B, C, H, Dh, generator=g)
    k = torch.randn(B, S, Hkv, Dh, generator=g)
    v = torch.randn(B, S, Hkv, Dh, generator=g)
    do = torch.randn(B, C, H, Dh, generator=g)
    q[pos < 0] = 1.0e3   # padding rows: must never be read
    do[pos < 0] = 1.0e3
    bf = [t.to(torch.bfloat16).to(DEV) for t in (q, k, v, do)]
    return bf, pos.to(DEV), torch.tensor(counts, dtype=torch.int32, device=DEV)


def judge(label, outs, ref64, ref_lo, ref32_lse, pos):
    ok = True
    parts = []
    names = ("o", "lse", "dq", "dk", "dv")
    for name, got, r64, rlo in zip(names, outs, ref64, ref_lo):
        scale = r64.abs().max().item()
        err = (got.double() - r64).abs().max().item()
        if name == "lse":
            torch_err = (ref32_lse.double() - r64).abs().max().item()
            bound = 4 * torch_err + 64 * 2.0 ** -23 * scale
        else:
            torch_err = (rlo.double() - r64).abs().max().item()
            bound = 2 * torch_err + 2.0 ** -9 * scale
        good = err <= bound
        ok &= good
        parts.append(f"{name} {err / max(scale, 1e-30):.1e}({err / bound:.2f})")
    pad = pos < 0
    if pad.any():
        for name, got in (("o", outs[0]), ("dq", outs[2])):
            if got[pad].abs().max().item() != 0:
                ok = False
                parts.append(f"{name}: padding not 0")
    print(f"{'ok' if ok else 'FAIL':4} {label:58} rel err (err/bound): {'  '.join(parts)}", flush=True)
    return ok


# ---- the AOT cubins, launched as a C loader would -------------------------------------------------


class CubinSet:
    """Loads DIR/<kernel>_<variant>_sm90.{cubin,json} with the CUDA driver API through ctypes; the
    variant is d<Dh> when Dh is a compiled tile width, else pad<BLOCK_D> (aot_compile.py)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.cu = ctypes.CDLL("libcuda.so.1")
        torch.zeros(1, device=DEV)  # makes torch's primary context current on this thread
        ctx = ctypes.c_void_p()
        self._ok(self.cu.cuCtxGetCurrent(ctypes.byref(ctx)), "cuCtxGetCurrent")
        if not ctx.value:
            raise RuntimeError("no current CUDA context")
        self.kernels = {}

    def _ok(self, rc, what):
        if rc != 0:
            name = ctypes.c_char_p()
            self.cu.cuGetErrorName(rc, ctypes.byref(name))
            raise RuntimeError(f"{what}: CUDA error {rc} {name.value}")

    def stem(self, kernel, head_dim):
        block_d = block_d_for(head_dim)
        return f"{kernel}_{'d' if head_dim == block_d else 'pad'}{block_d}_sm90"

    def has(self, kernel, head_dim):
        return (self.folder / f"{self.stem(kernel, head_dim)}.json").exists()

    def get(self, kernel, head_dim):
        key = (kernel, head_dim)
        if key not in self.kernels:
            stem = self.stem(kernel, head_dim)
            meta = json.loads((self.folder / f"{stem}.json").read_text())
            image = (self.folder / meta["cubin"]).read_bytes()
            buf = ctypes.create_string_buffer(image, len(image))
            mod, fn = ctypes.c_void_p(), ctypes.c_void_p()
            self._ok(self.cu.cuModuleLoadData(ctypes.byref(mod), buf), f"cuModuleLoadData {stem}")
            self._ok(self.cu.cuModuleGetFunction(ctypes.byref(fn), mod, meta["symbol"].encode()),
                     f"cuModuleGetFunction {meta['symbol']}")
            if meta["shared_bytes"] > 49152:
                self._ok(self.cu.cuFuncSetAttribute(fn, 8, ctypes.c_int(meta["shared_bytes"])),
                         "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)")  # 8: that attribute
            if meta["global_scratch_size"] or meta["profile_scratch_size"]:
                raise RuntimeError(f"{stem}: needs scratch memory; this checker passes NULL only")
            self.kernels[key] = (fn, meta, buf)
        return self.kernels[key]

    def launch(self, kernel, head_dim, values, dims):
        """values: name -> tensor or int; dims: names usable in the grid rule (B, C, S, H, HKV)."""
        fn, meta, _ = self.get(kernel, head_dim)
        holders = []
        for a in meta["args"]:
            if a["name"] in ("global_scratch", "profile_scratch"):
                holders.append(ctypes.c_void_p(0))
            elif a["type"].startswith("*"):
                holders.append(ctypes.c_void_p(values[a["name"]].data_ptr()))
            else:
                holders.append(ctypes.c_int32(values[a["name"]]))
        params = (ctypes.c_void_p * len(holders))(*[ctypes.addressof(h) for h in holders])
        env = dict(dims, **meta["constexprs"], cdiv=lambda x, y: (x + y - 1) // y)
        grid = [int(eval(rule, {"__builtins__": {}}, env)) for rule in meta["grid"]]
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        self._ok(self.cu.cuLaunchKernel(fn, *[ctypes.c_uint(x) for x in grid],
                                        *[ctypes.c_uint(x) for x in meta["block"]],
                                        ctypes.c_uint(meta["shared_bytes"]), stream, params, None),
                 f"cuLaunchKernel {kernel}")

    def run_all(self, q, k, v, do, pos32, counts, forward="sqdk_attention_fwd"):
        B, C, H, Dh = q.shape
        S, Hkv = k.shape[1], k.shape[2]
        dims = dict(B=B, C=C, S=S, H=H, HKV=Hkv)
        o, dq = torch.empty_like(q), torch.empty_like(q)
        # dK | dV side by side in each token's row, as the CUDA block has them (DKV_STRIDE = 2 Hkv Dh)
        KV = Hkv * Dh
        dkv = torch.empty(B, S, 2 * KV, dtype=k.dtype, device=DEV)
        dk, dv = dkv[:, :, :KV].unflatten(2, (Hkv, Dh)), dkv[:, :, KV:].unflatten(2, (Hkv, Dh))
        lse = torch.empty(B, H, C, dtype=torch.float32, device=DEV)
        delta = torch.empty_like(lse)
        vals = dict(Q=q, K=k, V=v, DO=do, O=o, Lse=lse, Delta=delta, Pos=pos32, Counts=counts,
                    DQ=dq, DK=dk, DV=dv, C=C, S=S, H=H, HKV=Hkv, HEAD_DIM=Dh, DKV_STRIDE=2 * KV)
        for kern in (forward, "sqdk_attention_bwd_preprocess",
                     "sqdk_attention_bwd_dkdv", "sqdk_attention_bwd_dq"):
            self.launch(kern, Dh, vals, dims)
        torch.cuda.synchronize()
        return o, lse, dq, dk, dv


# ---- checks ---------------------------------------------------------------------------------------


CASES = [
    ("GQA H=8 Hkv=2 Dh=128 B=2 S=1000 ragged", dict(B=2, S=1000, C=300, H=8, Hkv=2, Dh=128, counts=[300, 123])),
    ("MQA H=8 Hkv=1 Dh=64 S=1500", dict(B=1, S=1500, C=300, H=8, Hkv=1, Dh=64, counts=[300])),
    ("MHA H=Hkv=4 Dh=64 C=S=777, counts [S, 0]", dict(B=2, S=777, C=777, H=4, Hkv=4, Dh=64, counts=[777, 0])),
    ("GQA H=16 Hkv=4 Dh=128 C=S=513 counts [513, 200]",
     dict(B=2, S=513, C=513, H=16, Hkv=4, Dh=128, counts=[513, 200])),
    # padded head dims (runtime HEAD_DIM, masked columns): the goldens' 8 and 12, one per BLOCK_D
    ("padded Dh=8 GQA H=4 Hkv=2 S=300 ragged", dict(B=2, S=300, C=90, H=4, Hkv=2, Dh=8, counts=[90, 0])),
    ("padded Dh=12 GQA H=6 Hkv=2 S=500 ragged", dict(B=2, S=500, C=150, H=6, Hkv=2, Dh=12, counts=[150, 41])),
    ("exact Dh=16 MHA H=Hkv=2 S=400", dict(B=1, S=400, C=120, H=2, Hkv=2, Dh=16, counts=[120])),
    ("padded Dh=24 GQA H=4 Hkv=1 S=333", dict(B=1, S=333, C=100, H=4, Hkv=1, Dh=24, counts=[97])),
    ("padded Dh=48 GQA H=4 Hkv=2 S=600", dict(B=2, S=600, C=200, H=4, Hkv=2, Dh=48, counts=[200, 77])),
    ("padded Dh=96 GQA H=8 Hkv=2 S=700", dict(B=1, S=700, C=210, H=8, Hkv=2, Dh=96, counts=[210])),
]


def parity(cubins):
    ok = True
    for i, (name, kw) in enumerate(CASES):
        (q, k, v, do), pos, counts = make_case(100 + i, **kw)
        pos32 = pos.to(torch.int32)
        ref64 = reference(*(t.double() for t in (q, k, v, do)), pos)
        ref_lo = reference(q, k, v, do, pos)
        ref32_lse = reference(*(t.float() for t in (q, k, v, do)), pos)[1]
        o, lse = sqdk_attention_forward(q, k, v, pos32, counts)
        dq, dk, dv, _ = sqdk_attention_backward(do, q, k, v, o, lse, pos32, counts)
        torch.cuda.synchronize()
        ok &= judge("jit   " + name, (o, lse, dq, dk, dv), ref64, ref_lo, ref32_lse, pos)
        if cubins is not None:
            outs = cubins.run_all(q, k, v, do, pos32, counts)
            ok &= judge("cubin " + name, outs, ref64, ref_lo, ref32_lse, pos)
            same = max((a.float() - b.float()).abs().max().item() for a, b in zip(outs, (o, lse, dq, dk, dv)))
            print(f"     cubin vs jit max |diff| {same:.2e}")
            # the forward's tile for small grids (sqdk_attention_fwd_few), where this head dim has one
            if cubins.has("sqdk_attention_fwd_few", kw["Dh"]):
                outs = cubins.run_all(q, k, v, do, pos32, counts, forward="sqdk_attention_fwd_few")
                ok &= judge("cubin fwd_few " + name, outs, ref64, ref_lo, ref32_lse, pos)
    return ok


def graph_replay():
    """Capture the forward once, change counts on the device, replay: the new counts must be used."""
    (q, k, v, _), pos, counts = make_case(7, B=2, S=600, C=200, H=8, Hkv=2, Dh=128, counts=[200, 200])
    pos32 = pos.to(torch.int32)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        sqdk_attention_forward(q, k, v, pos32, counts)  # compile and warm up outside the capture
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        o_g, lse_g = sqdk_attention_forward(q, k, v, pos32, counts)
    counts.copy_(torch.tensor([57, 0], dtype=torch.int32))
    graph.replay()
    o_d, lse_d = sqdk_attention_forward(q, k, v, pos32, counts)
    torch.cuda.synchronize()
    ok = torch.equal(o_g, o_d) and torch.equal(lse_g, lse_d) and o_g[0, 57:].abs().max().item() == 0 \
        and o_g[1].abs().max().item() == 0 and o_g[0, :57].abs().max().item() > 0
    print(f"{'ok' if ok else 'FAIL':4} CUDA graph replay after counts [200, 200] -> [57, 0] on the device")
    return ok


def attended_pairs(pos, H):
    """(query, key) pairs attended over all heads: a query at position p sees keys 0..p; padding none."""
    return (pos.clamp(min=-1) + 1).sum().item() * H


def load_kernels(directory):
    """sqdk_attention.py of another tree, as its own module (its launchers take the same arguments)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sqdk_attention_base", Path(directory) / "sqdk_attention.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench(seqs=(), base=None):
    shapes = [(1, S, 16, 4, 128, 0.2) for S in seqs] or [
        (1, 16384, 16, 4, 128, 0.2), (2, 8192, 32, 8, 64, 0.2), (1, 16384, 16, 4, 128, 1.0)]
    trees = [("this", sqdk_attention_forward, sqdk_attention_backward)]
    if base is not None:
        mod = load_kernels(base)
        trees.append(("base", mod.sqdk_attention_forward, mod.sqdk_attention_backward))
    for (B, S, H, Hkv, Dh, rho) in shapes:
        C = max(1, int(S * rho))
        counts = [C] * B
        (q, k, v, do), pos, counts_t = make_case(9, B, S, C, H, Hkv, Dh, counts)
        pos32 = pos.to(torch.int32)
        flop_f = 4 * Dh * attended_pairs(pos, H)
        flop_b = 2.5 * flop_f  # 5 matmuls in the backward (dV, dP, dQ, dK, and recomputed S) vs 2
        for name, fwd, bwd in trees:
            o, lse = fwd(q, k, v, pos32, counts_t)
            t_f = triton.testing.do_bench(lambda: fwd(q, k, v, pos32, counts_t))
            t_b = triton.testing.do_bench(lambda: bwd(do, q, k, v, o, lse, pos32, counts_t))
            print(f"bench {name} B={B} S={S} H={H} Hkv={Hkv} Dh={Dh} C={C}: fwd {t_f:.3f} ms "
                  f"({flop_f / t_f / 1e9:.0f} TFLOP/s), bwd {t_b:.3f} ms ({flop_b / t_b / 1e9:.0f} TFLOP/s)",
                  flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cubins", type=Path, default=None)
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--bench-only", action="store_true")
    ap.add_argument("--seq", type=int, nargs="*", default=[])
    ap.add_argument("--base", type=Path, default=None)
    a = ap.parse_args()
    print(f"torch {torch.__version__}, triton {triton.__version__}, {torch.cuda.get_device_name()}", flush=True)
    print("tiles:", {d: {k: tuple(t) for k, t in v.items()} for d, v in TILES.items()}, flush=True)
    t0 = time.perf_counter()
    ok = True
    if not a.bench_only:
        cubins = CubinSet(a.cubins) if a.cubins else None
        ok = parity(cubins)
        ok &= graph_replay()
    if not a.no_bench:
        bench(a.seq, a.base)
    print(f"{'all passed' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
