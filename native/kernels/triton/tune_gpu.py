"""Time each sqdk_attention kernel alone for candidate tiles on a GPU; prints registers and spills.

    python3 native/kernels/triton/tune_gpu.py [--seq S ...] [--batch-seq BxS ...] [--dh 128 64]
                                              [--kernels fwd dq dkdv] [--tiles MxNxWARPSxSTAGES ...]
                                              [--rep MS]

Only proposes: the chosen tiles live in sqdk_attention.TILES. Shapes are those of gpu_check.py's
benchmark (rho = 0.2, GQA 4:1); --seq times the Dh=128 shape (B=1, H=16, Hkv=4) at other sequence
lengths instead (the block's long contexts: 65536, 131072), --batch-seq at B sequences of S each;
--kernels narrows what is timed and --tiles replaces the candidates (e.g. the forward's two Dh=128
tiles either side of FWD_MIN_PROGRAMS_PER_SM); --rep MS times each for longer (sustained load).
"""

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
import triton  # noqa: E402

import sqdk_attention as sk  # noqa: E402
from gpu_check import attended_pairs, make_case  # noqa: E402

CANDIDATES = {
    128: {
        "fwd": [(128, 64, 8, 3), (64, 64, 4, 3), (64, 64, 4, 4), (64, 64, 4, 2), (64, 128, 4, 2),
                (128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 4, 3), (256, 64, 8, 3), (128, 32, 4, 3),
                (256, 64, 16, 3)],
        "dkdv": [(32, 64, 4, 2), (32, 64, 4, 3), (16, 64, 4, 2), (16, 64, 4, 3), (64, 64, 4, 2),
                 (32, 128, 8, 2), (64, 128, 8, 1)],
        "dq": [(64, 64, 4, 3), (64, 64, 4, 2), (64, 128, 4, 2), (128, 64, 8, 3), (64, 32, 4, 4),
               (128, 32, 8, 3), (128, 128, 8, 2)],
    },
    64: {
        "fwd": [(128, 64, 4, 3), (128, 64, 4, 4), (128, 128, 4, 3), (64, 64, 4, 3), (128, 32, 4, 3),
                (64, 128, 4, 3)],
        "dkdv": [(32, 128, 4, 3), (32, 128, 4, 2), (32, 64, 4, 3), (16, 64, 4, 3), (64, 64, 4, 3),
                 (32, 128, 4, 4), (16, 128, 4, 3)],
        "dq": [(64, 64, 4, 3), (64, 64, 4, 4), (64, 128, 4, 3), (128, 64, 4, 3), (64, 32, 4, 3)],
    },
}
SHAPES = {128: (1, 16384, 16, 4, 0.2), 64: (2, 8192, 32, 8, 0.2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, nargs="*", default=[])
    ap.add_argument("--batch-seq", nargs="*", default=[], help="BxS: B sequences of S (Dh=128)")
    ap.add_argument("--dh", type=int, nargs="*", default=list(SHAPES))
    ap.add_argument("--kernels", nargs="*", default=["fwd", "dkdv", "dq"], choices=["fwd", "dkdv", "dq"])
    ap.add_argument("--tiles", nargs="*", default=[], help="MxNxWARPSxSTAGES: these tiles instead of the candidates")
    # do_bench's default (100 ms) lets a long kernel run a few times on a cool GPU; seconds of it show
    # the rate under sustained load (clocks the block's own steady state would also see)
    ap.add_argument("--rep", type=int, default=100, help="milliseconds of timed launches per kernel and tile")
    a = ap.parse_args()
    custom = [(1, S) for S in a.seq] + [tuple(int(x) for x in bs.split("x")) for bs in a.batch_seq]
    only = [tuple(int(x) for x in t.split("x")) for t in a.tiles]
    shapes = [(Dh, SHAPES[Dh]) for Dh in a.dh if not custom or Dh != 128]
    shapes += [(128, (B, S, 16, 4, 0.2)) for B, S in custom]
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for Dh, (B, S, H, Hkv, rho) in shapes:
        C = int(S * rho)
        (q, k, v, do), pos, counts = make_case(11, B, S, C, H, Hkv, Dh, [C] * B)
        # matmuls per attended (query, key) pair: fwd 2 (QK, PV), dq 3 (QK, dO V,
        # dS K), dkdv 4 (QK, P dO, V dO, dS Q), 2 Dh FLOP each
        pairs = attended_pairs(pos, H)
        flop = {"fwd": 4 * Dh * pairs, "dq": 6 * Dh * pairs, "dkdv": 8 * Dh * pairs}
        pos32 = pos.to(torch.int32)
        o, lse = sk.sqdk_attention_forward(q, k, v, pos32, counts)
        _, _, _, delta = sk.sqdk_attention_backward(do, q, k, v, o, lse, pos32, counts)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        print(f"Dh={Dh} B={B} S={S} H={H} Hkv={Hkv} C={C}", flush=True)
        for kern, cands in CANDIDATES[Dh].items():
            if kern not in a.kernels:
                continue
            for c in only or cands:
                t = sk.Tile(*c)
                kw = dict(**sk.head_dim_args(Dh), BLOCK_M=t.block_m, BLOCK_N=t.block_n, num_warps=t.num_warps,
                          num_stages=t.num_stages)
                note = ""
                if kern == "fwd":
                    grid = (triton.cdiv(C * (H // Hkv), t.block_m), B * Hkv)
                    note = f"  {grid[0] * grid[1] / sms:.1f} programs/SM"
                    fn = sk.sqdk_attention_fwd[grid]
                    args = (q, k, v, pos32, counts, o, lse, C, S, H, Hkv)
                elif kern == "dkdv":
                    fn = sk.sqdk_attention_bwd_dkdv[(triton.cdiv(S, t.block_n), B * Hkv)]
                    args = (q, k, v, do, lse, delta, pos32, counts, dk, dv, C, S, H, Hkv, Hkv * Dh)  # DKV_STRIDE
                else:
                    fn = sk.sqdk_attention_bwd_dq[(triton.cdiv(C * (H // Hkv), t.block_m), B * Hkv)]
                    args = (q, k, v, do, lse, delta, pos32, counts, dq, C, S, H, Hkv)
                try:
                    compiled = fn(*args, **kw)
                    ms = triton.testing.do_bench(lambda: fn(*args, **kw), rep=a.rep)
                    print(f"  {kern:5} {str(c):18} {ms:8.3f} ms {flop[kern] / ms / 1e9:5.0f} TFLOP/s  "
                          f"regs {compiled.n_regs} "
                          f"spills {compiled.n_spills} shared {compiled.metadata.shared}{note}", flush=True)
                except Exception as e:  # out of shared memory and the like: report and go on
                    print(f"  {kern:5} {str(c):18} failed: {type(e).__name__}: {str(e)[:100]}", flush=True)


if __name__ == "__main__":
    main()
