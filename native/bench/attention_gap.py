"""The SQDK attention forward alone, one factor of the block's call changed at a time: why it is slower
inside the block than alone (H200, 2026-12-07: 7.8 against 6.8 ms at S=65536, 30.4 against 27.1 ms at
S=131072; BENCHMARKS.md). Factors: positions (uniform random, as tune_gpu.py draws them, against the block
benchmark's top-k over its tiled input, which repeats every 8,192 tokens), data (randn against q, k, v
made from that tiled x), the launcher (Triton JIT against the library's AOT cubin, launched as
libhspmn's loader does) and a GEMM of the block's size queued right before (the clocks under load).

    python3 native/bench/attention_gap.py [--cubins build-gpu/triton/sm90] [--seq 65536 131072]

The block's shape: B=1, H=16, Hkv=4, Dh=128, rho=0.2. jit_bench / aot_bench: triton.testing.do_bench
medians (L2 flushed before each launch); *_after_gemm: CUDA events around one launch queued right after
the GEMM, median of 5.
"""
import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "native/kernels/triton"))
sys.path.insert(0, str(ROOT / "native/bench"))
import torch  # noqa: E402
import triton  # noqa: E402

import sqdk_attention as sk  # noqa: E402
from bench_common import event_median_ms  # noqa: E402
from gpu_check import CubinSet, attended_pairs, make_case  # noqa: E402

DEV = "cuda"
H, HKV, DH, D = 16, 4, 128, 2048   # the block benchmark's attention shape
PERIOD = 8192                      # rows of hspmn_block.py's tiled x: 16M values / D


def tiled_x(S):
    """x as the block benchmark builds it: one random [PERIOD, D] pattern repeated along the sequence."""
    g = torch.Generator(device=DEV).manual_seed(0)
    pat = torch.randn(PERIOD, D, generator=g, device=DEV).to(torch.bfloat16)
    return pat.repeat(S // PERIOD, 1)


def periodic_positions(S, C):
    """The top-C positions of a router's scores over tiled_x: the same scores in every period, ties to the
    lower position (route_select's rule)."""
    g = torch.Generator(device=DEV).manual_seed(1)
    w = (torch.rand(D, generator=g, device=DEV) * 2 - 1) / math.sqrt(D)
    scores = (tiled_x(PERIOD).float() @ w).repeat(S // PERIOD)
    order = torch.sort(-scores, stable=True).indices[:C]
    return torch.sort(order).values.view(1, C)


def rope(t, pos):
    """Rotary embedding of t [n, heads, DH] at positions pos [n] (half-split pairs, base 10000)."""
    half = DH // 2
    inv = 10000.0 ** (-torch.arange(half, device=DEV, dtype=torch.float32) / half)
    ang = pos.float()[:, None] * inv[None]
    c, s = ang.cos()[:, None, :], ang.sin()[:, None, :]
    a, b = t[..., :half].float(), t[..., half:].float()
    return torch.cat([a * c - b * s, a * s + b * c], -1)


def block_like_qkv(S, pos):
    """q, k, v as the block makes them from tiled_x: the attention norm (weight 1), projections at the
    library's initial scale (uniform, bound 1/sqrt(D)), RoPE on q and k."""
    g = torch.Generator(device=DEV).manual_seed(2)
    x = tiled_x(S).float()
    a = (x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16)

    def weight(rows):
        return ((torch.rand(rows, D, generator=g, device=DEV) * 2 - 1) / math.sqrt(D)).to(torch.bfloat16)

    wq, wk, wv = weight(D), weight(HKV * DH), weight(HKV * DH)
    k = rope((a @ wk.T).view(S, HKV, DH), torch.arange(S, device=DEV)).to(torch.bfloat16).view(1, S, HKV, DH)
    v = (a @ wv.T).view(1, S, HKV, DH)
    p = pos[0].long()
    q = rope((a[p] @ wq.T).view(-1, H, DH), p).to(torch.bfloat16).view(1, -1, H, DH)
    return q.contiguous(), k.contiguous(), v.contiguous()


def aot_forward(cubins, q, k, v, pos32, counts):
    """The library's cubin of the forward, launched as its loader does."""
    B, C = q.shape[:2]
    S = k.shape[1]
    o = torch.empty_like(q)
    lse = torch.empty(B, H, C, dtype=torch.float32, device=DEV)
    vals = dict(Q=q, K=k, V=v, O=o, Lse=lse, Pos=pos32, Counts=counts, C=C, S=S, H=H, HKV=HKV, HEAD_DIM=DH)
    cubins.launch("sqdk_attention_fwd", DH, vals, dict(B=B, C=C, S=S, H=H, HKV=HKV))
    return o


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cubins", type=Path, default=ROOT / "build-gpu/triton/sm90",
                    help="aot_compile.py's output (the build's, or one compiled anywhere)")
    ap.add_argument("--seq", type=int, nargs="*", default=[65536, 131072], help="multiples of 8192")
    a = ap.parse_args()
    cubins = CubinSet(a.cubins)
    for S in a.seq:
        C = S // 5
        counts = torch.tensor([C], dtype=torch.int32, device=DEV)
        (q0, k0, v0, _), uniform, _ = make_case(11, 1, S, C, H, HKV, DH, [C])
        periodic = periodic_positions(S, C)
        print(f"S={S} C={C}: attended pairs, uniform {attended_pairs(uniform, H) / 1e9:.3f} G, periodic "
              f"{attended_pairs(periodic, H) / 1e9:.3f} G ({len(set((periodic[0] % PERIOD).tolist()))} positions "
              f"a period)", flush=True)
        qb, kb, vb = block_like_qkv(S, periodic)
        xg = torch.randn(S, D, device=DEV, dtype=torch.bfloat16)
        wg = torch.randn(8 * D, D, device=DEV, dtype=torch.bfloat16)  # the gate|up GEMM's shape

        def gemm():
            return xg @ wg.T

        for label, (q, k, v), pos in [("randn, uniform positions", (q0, k0, v0), uniform),
                                      ("randn, periodic positions", (q0, k0, v0), periodic),
                                      ("block-like, periodic", (qb, kb, vb), periodic)]:
            pos32 = pos.to(torch.int32).contiguous()
            flop = 4 * DH * attended_pairs(pos, H)

            def jit():
                return sk.sqdk_attention_forward(q, k, v, pos32, counts)

            def aot():
                return aot_forward(cubins, q, k, v, pos32, counts)

            r = dict(jit_bench=triton.testing.do_bench(jit), jit_after_gemm=event_median_ms(jit, 5, before=gemm))
            diff = float("nan")
            try:
                diff = (jit()[0].float() - aot().float()).abs().max().item()
                r.update(aot_bench=triton.testing.do_bench(aot), aot_after_gemm=event_median_ms(aot, 5, before=gemm))
            except (RuntimeError, OSError, KeyError) as e:  # the JIT's figures stand without the cubin
                print(f"  cubin: {e}", flush=True)
            print(f"  {label:26s} " + "  ".join(f"{k} {v:.3f} ms" for k, v in r.items()) +
                  f"  ({flop / r['jit_bench'] / 1e9:.0f} TFLOP/s jit)  max |jit - aot| {diff:.1e}", flush=True)
        del xg, wg, qb, kb, vb
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
