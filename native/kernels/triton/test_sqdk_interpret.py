"""sqdk_attention Triton kernels against hspmn_ref.sqdk_attention, on the CPU in Triton's interpreter.

    TRITON_INTERPRET=1 .venv/bin/python native/kernels/triton/test_sqdk_interpret.py

Inputs are float32 (the interpreter gets bf16 wrong); the reference runs in float64 on the same
values, with autograd for dq, dk, dv. Exits 1 on any failure. Cases with dkv_extra run the backward
again writing dk and dv side by side into one [B, S, 2*Hkv*Dh + dkv_extra] tensor (the CUDA block's
layout, DKV_STRIDE in the kernel): they must equal the contiguous run bit for bit, and the columns past
2*Hkv*Dh must keep what they held.

Error bound, as flash-attention's tests judge a kernel: the kernel's error against float64 must be
no larger than a small multiple of PyTorch's own error when it evaluates the same reference in the
kernel's precision (float32). The multiple is 4: the kernel sums in a different order (online
softmax rescaling, tiled dot products, exp2 with a folded log2(e)), which moves float32 rounding
around but does not add error terms of a larger order. A floor of 64 float32 ulps of the largest
reference value stops the bound from collapsing to 0 for outputs PyTorch happens to round exactly
(e.g. a tensor that is all zeros). Padding rows must be exactly 0. Keys past S must never be read: the
forward on the first S rows of a NaN-filled longer cache equals the run on exactly S rows (the CUDA
chunked forward passes such a cache; a masked key's value still enters P V as 0 x value).
"""

import os
import re
import sys
import time
from pathlib import Path

if os.environ.get("TRITON_INTERPRET") != "1":
    sys.exit("run with TRITON_INTERPRET=1 (Triton's CPU interpreter); see native/kernels/triton/README.md")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
import interpreter_compat  # noqa: E402,F401  (Triton 3.6 interpreter on NumPy 2.4)
from sqdk_reference import reference  # noqa: E402
from sqdk_attention import (FWD_LONG_SEQ, FWD_MIN_PROGRAMS_PER_SM, FWD_MIN_PROGRAMS_PER_SM_LONG,  # noqa: E402
                            TEST_TILES, TILES, forward_tile, sqdk_attention_backward, sqdk_attention_forward,
                            tiles_for)

MULTIPLE = 4.0
FLOOR_ULPS = 64 * 2.0 ** -23
GARBAGE = 1.0e3  # padding rows of q and dO: large values that show up at once if a kernel reads them


def make_case(seed, B, S, C, H, Hkv, Dh, counts, contiguous_pos=False):
    g = torch.Generator().manual_seed(seed)
    pos = torch.full((B, C), -1, dtype=torch.int64)
    for b, n in enumerate(counts):
        if contiguous_pos:
            chosen = torch.arange(n)
        else:  # n distinct positions with gaps, sorted, as route_select lists them
            chosen = torch.sort(torch.randperm(S, generator=g)[:n]).values
        pos[b, :n] = chosen
    q = torch.randn(B, C, H, Dh, generator=g, dtype=torch.float64)
    k = torch.randn(B, S, Hkv, Dh, generator=g, dtype=torch.float64)
    v = torch.randn(B, S, Hkv, Dh, generator=g, dtype=torch.float64)
    do = torch.randn(B, C, H, Dh, generator=g, dtype=torch.float64)
    pad = pos < 0
    q[pad] = GARBAGE
    do[pad] = GARBAGE
    # values representable in float32, so float64 reference and float32 kernel see the same input
    return [t.to(torch.float32).to(torch.float64) for t in (q, k, v, do)] + [pos]


def run_case(name, *, B, S, C, H, Hkv, Dh, counts, tiles=TEST_TILES, seed=0, contiguous_pos=False, dkv_extra=None):
    q, k, v, do, pos = make_case(seed, B, S, C, H, Hkv, Dh, counts, contiguous_pos)
    ref64 = reference(q, k, v, do, pos)
    ref32 = reference(*(t.to(torch.float32) for t in (q, k, v, do)), pos)

    f32 = [t.to(torch.float32).contiguous() for t in (q, k, v, do)]
    pos32 = pos.to(torch.int32).contiguous()
    counts32 = torch.tensor(counts, dtype=torch.int32)
    t0 = time.perf_counter()
    o, lse = sqdk_attention_forward(f32[0], f32[1], f32[2], pos32, counts32, tiles=tiles)
    dq, dk, dv, _ = sqdk_attention_backward(f32[3], f32[0], f32[1], f32[2], o, lse, pos32, counts32,
                                            tiles=tiles)
    seconds = time.perf_counter() - t0

    failures = []
    parts = []
    for label, got, r64, r32 in zip(("o", "lse", "dq", "dk", "dv"), (o, lse, dq, dk, dv), ref64, ref32):
        scale = r64.abs().max().item()
        err = (got.to(torch.float64) - r64).abs().max().item()
        torch_err = (r32.to(torch.float64) - r64).abs().max().item()
        bound = MULTIPLE * torch_err + FLOOR_ULPS * scale
        rel = err / scale if scale > 0 else err
        parts.append(f"{label} {rel:.1e}")
        if not (err <= bound):  # also catches NaN
            failures.append(f"{label}: max|err| {err:.3e} > bound {bound:.3e} "
                            f"(torch float32 {torch_err:.3e}, max|ref| {scale:.3e})")
    if dkv_extra is not None:
        KV = Hkv * Dh
        dkv = torch.full((B, S, 2 * KV + dkv_extra), GARBAGE, dtype=torch.float32)
        _, dk_s, dv_s, _ = sqdk_attention_backward(f32[3], f32[0], f32[1], f32[2], o, lse, pos32, counts32,
                                                   tiles=tiles, dkv=dkv)
        parts.append(f"dkv stride {2 * KV + dkv_extra}")
        if not (torch.equal(dk_s, dk) and torch.equal(dv_s, dv)):
            failures.append("dk, dv written with a row stride differ from the contiguous run")
        if not (torch.equal(dkv[:, :, :KV], dk.flatten(2)) and torch.equal(dkv[:, :, KV:2 * KV], dv.flatten(2))):
            failures.append("dkv: dk, dv are not side by side in each token's row")
        if not bool((dkv[:, :, 2 * KV:] == GARBAGE).all()):
            failures.append("dkv: columns past 2*Hkv*Dh were written")
    pad = (pos < 0)
    for label, got in (("o", o), ("dq", dq)):
        if got[pad].abs().max().item() if pad.any() else 0.0:
            failures.append(f"{label}: padding rows are not 0")
    if pad.any() and lse.permute(0, 2, 1)[pad].abs().max().item():
        failures.append("lse: padding rows are not 0")
    status = "FAIL" if failures else "ok"
    print(f"{status:4} {name:44} rel err  {'  '.join(parts)}  ({seconds:.1f} s)")
    for f in failures:
        print(f"       {f}")
    return not failures


def check_keys_past_s():
    """The CUDA chunked forward hands the forward the first S rows of a longer key cache whose later rows
    hold old bytes (cuda_block_chunked.cu): rows past S must never be read. Here they are NaN: the output
    must be finite and equal, bit for bit, to the run on a cache of exactly S rows, for every tile."""
    ok = True
    B, S, C, H, Hkv, Dh, extra = 1, 45, 12, 4, 2, 16, 83
    q, k, v, _, pos = make_case(18, B, S, C, H, Hkv, Dh, [C])
    pos32, counts32 = pos.to(torch.int32).contiguous(), torch.tensor([C], dtype=torch.int32)
    q, k, v = (t.to(torch.float32).contiguous() for t in (q, k, v))
    k_big = torch.full((B, S + extra, Hkv, Dh), float("nan"))
    v_big = torch.full((B, S + extra, Hkv, Dh), float("nan"))
    k_big[:, :S], v_big[:, :S] = k, v
    for label, tiles in (("test tiles", TEST_TILES), ("production tiles", TILES[16])):
        o, lse = sqdk_attention_forward(q, k, v, pos32, counts32, tiles=tiles)
        # a view of the first S rows: contiguous (B = 1), the NaN rows right after it in memory
        o2, lse2 = sqdk_attention_forward(q, k_big[:, :S], v_big[:, :S], pos32, counts32, tiles=tiles)
        same = torch.equal(o, o2) and torch.equal(lse, lse2) and bool(torch.isfinite(o2).all())
        print(f"{'ok' if same else 'FAIL':4} {'keys past S (NaN) never read, ' + label:44}")
        ok &= same
    return ok


def check_forward_tile_rule():
    """forward_tile's choice between the Dh 128 forward tiles (no kernel runs), and its numbers
    against the CUDA launcher's (kFwdMinPerSm, kFwdMinPerSmLong, kFwdLongSeq), which must make the same
    choice."""
    cpp = (HERE.parents[1] / "src" / "cuda" / "attention.cpp").read_text()
    ok = True
    for cname, value in (("kFwdMinPerSm", FWD_MIN_PROGRAMS_PER_SM), ("kFwdMinPerSmLong", FWD_MIN_PROGRAMS_PER_SM_LONG),
                         ("kFwdLongSeq", FWD_LONG_SEQ)):
        m = re.search(rf"constexpr int64_t {cname} = (\d+);", cpp)
        good = m is not None and int(m.group(1)) == value
        ok &= good
        print(f"{'ok' if good else 'FAIL':4} forward tile rule: {cname} in attention.cpp "
              f"{m.group(1) if m else 'not found'}, sqdk_attention.py {value}")
    cases = [  # (B, C, S, H, Hkv, sm_count) -> expected tile key; 256-row tiles of 4 (slot, head) rows per slot
        ((1, 1, 4096, 16, 4, 132), "fwd_few"),        # a decode step: 4 programs
        ((1, 1, 131072, 16, 4, 132), "fwd_few"),      # a decode step of a long sequence: still 4
        ((1, 3276, 16384, 16, 4, 132), "fwd_few"),    # B=1 S=16384: 52 x 4 = 208 programs < 528
        ((1, 8448, 16384, 16, 4, 132), "fwd"),        # 132 x 4 = 528 programs: exactly 4 an SM
        ((1, 8447, 16384, 16, 4, 132), "fwd"),        # still 132 tiles of a kv group (the last one partial)
        ((1, 8384, 16384, 16, 4, 132), "fwd_few"),    # 131 x 4 = 524 programs, short keys
        ((1, 8384, 41920, 16, 4, 132), "fwd"),        # the same grid, long keys: >= 2 an SM
        ((8, 819, 4096, 16, 4, 132), "fwd_few"),      # B=8 S=4096: 3.2 an SM, short keys
        ((1, 4915, 24576, 16, 4, 132), "fwd"),        # B=1 S=24576: 77 x 4 = 308 >= 264
        ((1, 4915, 24575, 16, 4, 132), "fwd_few"),    # one key short of FWD_LONG_SEQ
        ((1, 4160, 24576, 16, 4, 132), "fwd_few"),    # 65 x 4 = 260 programs, under 2 an SM (264)
        ((1, 4161, 24576, 16, 4, 132), "fwd"),        # 66 x 4 = 264: exactly 2 an SM
        ((64, 819, 4096, 16, 4, 132), "fwd"),         # the block's B=64 S=4096
        ((1, 26214, 131072, 16, 4, 132), "fwd"),      # S=131072
        ((1, 26214, 131072, 16, 4, None), "fwd"),     # no GPU to size for
    ]
    for (B, C, S, H, Hkv, sms), want in cases:
        got = forward_tile(128, B, C, S, H, Hkv, sms)
        good = got == TILES[128][want]
        ok &= good
        print(f"{'ok' if good else 'FAIL':4} forward tile B={B} C={C} S={S} H={H} Hkv={Hkv} SMs={sms}: {got} "
              f"(want {want})")
    # widths with one forward tile, and explicit tiles, take "fwd" whatever the grid
    for got, want in ((forward_tile(64, 1, 1, 4096, 16, 4, 132), TILES[64]["fwd"]),
                      (forward_tile(96, 1, 1, 4096, 16, 4, 132), tiles_for(96)["fwd"]),
                      (forward_tile(128, 1, 1, 4096, 16, 4, 132, TEST_TILES), TEST_TILES["fwd"])):
        good = got == want
        ok &= good
        print(f"{'ok' if good else 'FAIL':4} forward tile with one candidate: {got}")
    return ok


def main():
    t0 = time.perf_counter()
    cases = [
        # name, shape; S = 37 and 50 are multiples of neither 16 nor 32 (tails of every tile)
        ("GQA H=4 Hkv=2 Dh=16 B=2", dict(B=2, S=37, C=20, H=4, Hkv=2, Dh=16, counts=[20, 13])),
        ("MQA H=4 Hkv=1 Dh=16", dict(B=1, S=50, C=24, H=4, Hkv=1, Dh=16, counts=[24], seed=1)),
        ("MHA H=Hkv=2 Dh=16", dict(B=1, S=37, C=18, H=2, Hkv=2, Dh=16, counts=[17], seed=2)),
        ("ragged counts [0, 5, C] Dh=16", dict(B=3, S=50, C=40, H=2, Hkv=1, Dh=16, counts=[0, 5, 40],
                                               seed=3)),
        ("all routed C=S, pos = 0..S-1", dict(B=2, S=45, C=45, H=2, Hkv=1, Dh=16, counts=[45, 45],
                                              seed=4, contiguous_pos=True)),
        ("all routed C=S, counts [S, 30]", dict(B=2, S=45, C=45, H=4, Hkv=2, Dh=16, counts=[45, 30],
                                                seed=5)),
        ("GQA Dh=64 B=2 ragged", dict(B=2, S=70, C=33, H=4, Hkv=2, Dh=64, counts=[33, 9], seed=6)),
        ("Dh=64 production tiles (TILES[64])",
         dict(B=2, S=150, C=70, H=2, Hkv=1, Dh=64, counts=[70, 41], seed=7, tiles=TILES[64])),
        ("Dh=128 production tiles (TILES[128])",
         dict(B=1, S=200, C=140, H=4, Hkv=1, Dh=128, counts=[133], seed=8, tiles=TILES[128])),
        # padded head dims (HEAD_DIM a runtime value, columns masked to BLOCK_D): the goldens' 8 and
        # 12, and one per wider BLOCK_D; S = 37, 50, 70 cross tile tails, positions have gaps
        ("padded Dh=8 GQA H=4 Hkv=2 ragged [20, 0]",
         dict(B=2, S=37, C=20, H=4, Hkv=2, Dh=8, counts=[20, 0], seed=9)),
        ("padded Dh=12 GQA H=6 Hkv=2 ragged [24, 7, 1]",
         dict(B=3, S=50, C=24, H=6, Hkv=2, Dh=12, counts=[24, 7, 1], seed=10)),
        ("padded Dh=12 MQA C=S, counts [S, 30]",
         dict(B=2, S=45, C=45, H=2, Hkv=1, Dh=12, counts=[45, 30], seed=11)),
        ("padded Dh=24 GQA (BLOCK_D 32)", dict(B=1, S=50, C=30, H=4, Hkv=2, Dh=24, counts=[29], seed=12)),
        ("padded Dh=40 GQA (BLOCK_D 64)", dict(B=2, S=37, C=16, H=2, Hkv=1, Dh=40, counts=[16, 11], seed=13)),
        ("padded Dh=12 production tiles (TILES[16])",
         dict(B=2, S=150, C=70, H=4, Hkv=2, Dh=12, counts=[70, 33], seed=14, tiles=TILES[16])),
        ("padded Dh=96 production tiles (tiles_for(96))",
         dict(B=1, S=150, C=70, H=2, Hkv=1, Dh=96, counts=[61], seed=15, tiles=tiles_for(96))),
        # dk | dv side by side per token (DKV_STRIDE = 2*Hkv*Dh, the block's; then one with a gap)
        ("dkv strided GQA Dh=16", dict(B=2, S=37, C=20, H=4, Hkv=2, Dh=16, counts=[20, 13], seed=16, dkv_extra=0)),
        ("dkv strided + gap, padded Dh=12",
         dict(B=2, S=50, C=24, H=6, Hkv=2, Dh=12, counts=[24, 7], seed=17, dkv_extra=12)),
    ]
    ok = True
    for name, kw in cases:
        ok &= run_case(name, **kw)
    ok &= check_keys_past_s()
    ok &= check_forward_tile_rule()
    print(f"{'all passed' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
