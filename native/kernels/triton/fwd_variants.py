"""Candidate forms of the SQDK attention forward's key loop, to time against sqdk_attention_fwd.

    python3 native/kernels/triton/fwd_variants.py --local            # compile for sm_90 here: registers,
                                                                     # spills, shared memory, wgmma waits
    python3 native/kernels/triton/fwd_variants.py --seq 65536 131072 # on a GPU: parity and timings

Issue 12.3: the forward runs at ~490 TFLOP/s at S=131072 on an H100. Per attended pair it spends
two m64 wgmma steps, one exp2 on the MUFU and a handful of FP32 operations, issued one after the
other. The variants here only reorder or shorten that sequence; the math is sqdk_attention_fwd's:
  - "base": sqdk_attention_fwd itself;
  - "fma":  the softmax scale applied after the row max (max(s) * c = max(s * c) for c > 0), so
            exp2's argument is one fma per score instead of a multiply and a subtract;
  - "pipe": "fma" plus the next key tile's Q K^T issued before this tile's softmax (the loop carries
            the scores of the tile it is about to use), so the tensor cores have work while the
            softmax runs, FlashAttention-3's intra-warpgroup overlap written as source order
            (compiled for sm_90, Triton 3.6 issues those wgmma steps one at a time, each waited for);
  - "lazy": "fma" with the running max moved only when some row's max grows by more than 2^8
            (FlashAttention-4's conditional rescaling): the [BLOCK_M, Dh] accumulator is rescaled in
            the few steps where that happens instead of every step; p stays below 2^8, which bf16
            holds with its usual relative precision, and l and acc share the stale max exactly.
  - "tma":  "fma" with the K and V tiles of the unmasked loop loaded by TMA (descriptors built on the
            device over [B*S, Hkv*Dh]; rows past a sequence's end are never visible to a query);
  - "ws":   "tma" with Triton's Hopper warp specialisation of that loop (a TMA producer warpgroup,
            consumers splitting the tile's rows).
Only proposes: what wins moves into sqdk_attention.py (and its tiles into TILES).
"""

import argparse
import math
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import sqdk_attention as sk  # noqa: E402


@triton.jit
def _fwd_inner_fma(acc, l_i, m_i, q, K_base, V_base, row_limit, kv_stride, S, start, end, qk_scale, HEAD_DIM,
                   BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
    offs_d = tl.arange(0, BLOCK_D)
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_ptrs = offs_n[:, None] * kv_stride + offs_d[None, :]
        k = sk._load_kv(K_base + kv_ptrs, offs_n, offs_d, S, HEAD_DIM, BLOCK_D, MASKED)
        s = tl.dot(q, tl.trans(k))
        if MASKED:
            s = tl.where(offs_n[None, :] <= row_limit[:, None], s, float("-inf"))
        m_ij = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        p = tl.math.exp2(s * qk_scale - m_ij[:, None])
        alpha = tl.math.exp2(m_i - m_ij)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = sk._load_kv(V_base + kv_ptrs, offs_n, offs_d, S, HEAD_DIM, BLOCK_D, MASKED)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_ij
    return acc, l_i, m_i


@triton.jit
def _fwd_inner_pipe(acc, l_i, m_i, q, K_base, V_base, kv_stride, start, end, qk_scale,
                    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """The unmasked tiles [start, end) of an exact-Dh tile (no row or column masks), with the scores
    of tile n+1 computed before the softmax of tile n. The last step recomputes its own tile's
    scores instead of reading past end (one tile of Q K^T thrown away per program)."""
    offs_d = tl.arange(0, BLOCK_D)
    offs_b = tl.arange(0, BLOCK_N)
    if start < end:
        k = tl.load(K_base + (start + offs_b)[:, None] * kv_stride + offs_d[None, :])
        s = tl.dot(q, tl.trans(k))
        for start_n in range(start, end, BLOCK_N):
            nxt = tl.where(start_n + BLOCK_N < end, start_n + BLOCK_N, start_n)
            k = tl.load(K_base + (nxt + offs_b)[:, None] * kv_stride + offs_d[None, :])
            s_next = tl.dot(q, tl.trans(k))
            m_ij = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
            p = tl.math.exp2(s * qk_scale - m_ij[:, None])
            alpha = tl.math.exp2(m_i - m_ij)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(V_base + (start_n + offs_b)[:, None] * kv_stride + offs_d[None, :])
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
            m_i = m_ij
            s = s_next
    return acc, l_i, m_i


@triton.jit
def _fwd_inner_lazy(acc, l_i, m_i, q, K_base, V_base, row_limit, kv_stride, S, start, end, qk_scale, HEAD_DIM,
                    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
    offs_d = tl.arange(0, BLOCK_D)
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_ptrs = offs_n[:, None] * kv_stride + offs_d[None, :]
        k = sk._load_kv(K_base + kv_ptrs, offs_n, offs_d, S, HEAD_DIM, BLOCK_D, MASKED)
        s = tl.dot(q, tl.trans(k))
        if MASKED:
            s = tl.where(offs_n[None, :] <= row_limit[:, None], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        # m_i = -inf before a row's first tile: the difference is +inf and the branch is taken
        if tl.max(m_new - m_i, 0) > 8.0:
            alpha = tl.math.exp2(m_i - m_new)
            acc = acc * alpha[:, None]
            l_i = l_i * alpha
            m_i = m_new
        p = tl.math.exp2(s * qk_scale - m_i[:, None])
        l_i = l_i + tl.sum(p, 1)
        v = sk._load_kv(V_base + kv_ptrs, offs_n, offs_d, S, HEAD_DIM, BLOCK_D, MASKED)
        acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, l_i, m_i


@triton.jit
def _fwd_inner_tma(acc, l_i, m_i, q, k_desc, v_desc, row0, col, start, end, qk_scale,
                   BLOCK_N: tl.constexpr, WS: tl.constexpr):
    for start_n in tl.range(start, end, BLOCK_N, warp_specialize=WS):
        k = k_desc.load([row0 + start_n, col])
        s = tl.dot(q, tl.trans(k))
        m_ij = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        p = tl.math.exp2(s * qk_scale - m_ij[:, None])
        alpha = tl.math.exp2(m_i - m_ij)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = v_desc.load([row0 + start_n, col])
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_ij
    return acc, l_i, m_i


@triton.jit
def sqdk_attention_fwd_var(Q, K, V, Pos, Counts, O, Lse, C, S, H, HKV, HEAD_DIM,
                           BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                           PIPE: tl.constexpr, LAZY: tl.constexpr, TMA: tl.constexpr = False,
                           WS: tl.constexpr = False):
    q_off, lse_off, kv_base, kv_stride, offs_d, row_valid, in_c, row_limit = sk._query_tile(
        Pos, Counts, C, S, H, HKV, HEAD_DIM, BLOCK_D, BLOCK_M)
    ptrs = q_off[:, None] + offs_d[None, :]
    q = tl.load(Q + ptrs, mask=sk._row_mask(row_valid, offs_d, HEAD_DIM, BLOCK_D), other=0.0)

    full_end, end = sk._key_range(row_limit, row_valid, S, BLOCK_N)
    qk_scale = sk._softmax_scale(HEAD_DIM) * 1.4426950408889634
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.full([BLOCK_M], 1.0, dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if TMA:
        B = tl.num_programs(1) // HKV
        k_desc = tl.make_tensor_descriptor(K, shape=[B * S, HKV * BLOCK_D], strides=[HKV * BLOCK_D, 1],
                                           block_shape=[BLOCK_N, BLOCK_D])
        v_desc = tl.make_tensor_descriptor(V, shape=[B * S, HKV * BLOCK_D], strides=[HKV * BLOCK_D, 1],
                                           block_shape=[BLOCK_N, BLOCK_D])
        bhk = (tl.program_id(1) * tl.num_programs(0) + tl.program_id(0)) % tl.num_programs(1)
        acc, l_i, m_i = _fwd_inner_tma(acc, l_i, m_i, q, k_desc, v_desc, (bhk // HKV) * S, (bhk % HKV) * BLOCK_D,
                                       0, full_end, qk_scale, BLOCK_N, WS)
    elif PIPE:
        acc, l_i, m_i = _fwd_inner_pipe(acc, l_i, m_i, q, K + kv_base, V + kv_base, kv_stride,
                                        0, full_end, qk_scale, BLOCK_D, BLOCK_N)
    elif LAZY:
        acc, l_i, m_i = _fwd_inner_lazy(acc, l_i, m_i, q, K + kv_base, V + kv_base, row_limit, kv_stride, S,
                                        0, full_end, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, False)
    else:
        acc, l_i, m_i = _fwd_inner_fma(acc, l_i, m_i, q, K + kv_base, V + kv_base, row_limit, kv_stride, S,
                                       0, full_end, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, False)
    if LAZY:
        acc, l_i, m_i = _fwd_inner_lazy(acc, l_i, m_i, q, K + kv_base, V + kv_base, row_limit, kv_stride, S,
                                        full_end, end, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, True)
    else:
        acc, l_i, m_i = _fwd_inner_fma(acc, l_i, m_i, q, K + kv_base, V + kv_base, row_limit, kv_stride, S,
                                       full_end, end, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, True)

    o = tl.where(row_valid[:, None], acc / l_i[:, None], 0.0)
    lse = tl.where(row_valid, (m_i + tl.math.log2(l_i)) * 0.6931471805599453, 0.0)
    tl.store(O + ptrs, o.to(O.dtype.element_ty), mask=sk._row_mask(in_c, offs_d, HEAD_DIM, BLOCK_D))
    tl.store(Lse + lse_off, lse, mask=in_c)


TILES = [(128, 64, 8, 3), (128, 64, 8, 2), (128, 128, 8, 3), (256, 64, 8, 3), (256, 64, 16, 3),
         (256, 32, 8, 3), (64, 64, 4, 3)]
# variant -> tiles timed; "pipe" serialises its wgmma steps (above): one tile to confirm; "ws" on
# Triton 3.6 specialises only with 4 warps a partition (swiglu_gemm.py's notes)
CANDIDATES = {
    "base": TILES, "fma": TILES, "lazy": TILES, "pipe": [(128, 64, 8, 3)],
    "tma": [(128, 64, 8, 3), (256, 64, 8, 3), (128, 128, 8, 3)],
    "ws": [(128, 64, 4, 2)],
}
VARIANTS = tuple(CANDIDATES)
SELECTED = list(VARIANTS)
ONLY_TILES = []  # --tiles: time only these (empty: every candidate)


def kernel_and_consts(variant):
    if variant == "base":
        return sk.sqdk_attention_fwd, {}
    return sqdk_attention_fwd_var, {"PIPE": variant == "pipe", "LAZY": variant == "lazy",
                                    "TMA": variant in ("tma", "ws"), "WS": variant == "ws"}


def candidates():
    for variant in SELECTED:
        for t in CANDIDATES[variant]:
            if not ONLY_TILES or t in ONLY_TILES:
                yield variant, t


def local(arch=90):
    """Compile every (variant, tile) for sm_<arch> without a GPU; print resources and the waits."""
    import aot_compile as ac

    cuobjdump = ac.find_cuda_tool("cuobjdump")
    for variant, t in candidates():
        fn, extra = kernel_and_consts(variant)
        constexprs = {"BLOCK_D": 128, "BLOCK_M": t[0], "BLOCK_N": t[1], "HEAD_DIM": 128, **extra}
        types = {n: ac.ARG_TYPES[n] for n in fn.arg_names if n not in constexprs}
        try:
            cubin, meta = ac.compile_kernel(fn, types, constexprs, ac.pointer_hints(fn, types), t[2], t[3], arch)
        except Exception as e:  # noqa: BLE001 (out of shared memory and the like)
            print(f"{variant:5} {str(t):18} failed: {type(e).__name__}: {str(e)[:120]}", flush=True)
            continue
        path = Path("/tmp") / f"fwd_{variant}_{'_'.join(map(str, t))}.cubin"
        path.write_bytes(cubin)
        res = subprocess.run([cuobjdump, "--dump-resource-usage", str(path)], capture_output=True,
                             text=True).stdout if cuobjdump else ""
        regs = re.search(r"REG:(\d+)", res)
        stack = re.search(r"STACK:(\d+)", res)
        sass = subprocess.run([cuobjdump, "-sass", str(path)], capture_output=True, text=True).stdout \
            if cuobjdump else ""
        waits = sorted(set(re.findall(r"WARPGROUP\.DEPBAR\.LE gsb0, (0x[0-9a-f]+)", sass)))
        print(f"{variant:5} {str(t):18} regs {regs.group(1) if regs else '?':>3} stack "
              f"{stack.group(1) if stack else '?':>4} shared {meta['shared_bytes']:6} "
              f"wgmma waits {waits}", flush=True)


def gpu(seqs, batch_seqs):
    import torch
    from gpu_check import attended_pairs, make_case

    # the "tma" variants build their descriptors in Triton's global scratch
    triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    shapes = [(1, S) for S in seqs] + [(B, S) for B, S in batch_seqs]
    for B, S in shapes:
        H, Hkv, Dh = 16, 4, 128
        C = int(S * 0.2)
        (q, k, v, _), pos, counts = make_case(11, B, S, C, H, Hkv, Dh, [C] * B)
        pos32 = pos.to(torch.int32)
        flop = 4 * Dh * attended_pairs(pos, H)
        ref_o, ref_lse = sk.sqdk_attention_forward(q, k, v, pos32, counts)
        print(f"B={B} S={S} C={C} H={H} Hkv={Hkv} Dh={Dh}", flush=True)
        for variant, t in candidates():
            fn, extra = kernel_and_consts(variant)
            o, lse = torch.empty_like(q), torch.empty_like(ref_lse)
            grid = (triton.cdiv(C * (H // Hkv), t[0]), B * Hkv)
            kw = dict(HEAD_DIM=tl.constexpr(128), BLOCK_D=128, BLOCK_M=t[0], BLOCK_N=t[1], num_warps=t[2],
                      num_stages=t[3], **extra)
            args = (q, k, v, pos32, counts, o, lse, C, S, H, Hkv)
            try:
                compiled = fn[grid](*args, **kw)
                torch.cuda.synchronize()
                d_o = (o.float() - ref_o.float()).abs().max().item()
                d_l = (lse - ref_lse).abs().max().item()
                ms = triton.testing.do_bench(lambda: fn[grid](*args, **kw), warmup=50, rep=300)
                print(f"  {variant:5} {str(t):18} {ms:8.3f} ms {flop / ms / 1e9:5.0f} TFLOP/s  regs "
                      f"{compiled.n_regs} spills {compiled.n_spills} shared {compiled.metadata.shared}  "
                      f"max|o-base| {d_o:.2e} max|lse-base| {d_l:.2e}", flush=True)
            except Exception as e:  # noqa: BLE001
                print(f"  {variant:5} {str(t):18} failed: {type(e).__name__}: {str(e)[:120]}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--local", action="store_true")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--tiles", nargs="*", default=[], help="MxNxWARPSxSTAGES, e.g. 256x64x8x3")
    ap.add_argument("--seq", type=int, nargs="*", default=[65536, 131072])
    ap.add_argument("--batch-seq", nargs="*", default=["64x4096"], help="BxS shapes, e.g. 64x4096")
    a = ap.parse_args()
    SELECTED[:] = a.variants
    ONLY_TILES[:] = [tuple(int(x) for x in t.split("x")) for t in a.tiles]
    if a.local:
        local()
    else:
        gpu(a.seq, [tuple(int(x) for x in s.split("x")) for s in a.batch_seq])


if __name__ == "__main__":
    main()
