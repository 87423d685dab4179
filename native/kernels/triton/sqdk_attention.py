"""sqdk_attention in Triton: sparse (selected) queries over dense causal keys, forward and backward.

The math is hspmn_ref.sqdk_attention (native/reference/hspmn_ref.py). Layout (all contiguous,
pointers 16-byte aligned):

    q, o, do, dq : [B, C, H, Dh]    bf16 (float32 in interpreter tests)
    k, v, dk, dv : [B, S, Hkv, Dh]  bf16 (dk, dv: rows of a token DKV_STRIDE elements apart, below)
    pos          : [B, C] int32     absolute position of each query; rows < counts[b] hold
                                    strictly increasing positions in [0, S); later rows are ignored
    counts       : [B] int32        on the device, so a forward can be captured in a CUDA graph
    lse, delta   : [B, H, C] float32  lse: natural log-sum-exp of the scaled scores

dk and dv are written with a row stride of their own, DKV_STRIDE (a multiple of Dh, >= Hkv*Dh):
Hkv*Dh when contiguous; the CUDA block passes 2*Hkv*Dh with dv = dk + Hkv*Dh, so that its [N, 2*Hkv*Dh]
buffer holds [dk | dv] per token and both weight products become one GEMM each.

A row is valid iff its index is < counts[b]. Rows past counts[b] are never read (q, do, pos,
o there may hold anything) and are WRITTEN AS 0 in o, lse, delta and dq: o = 0 is what the
reference returns for padding, and a zero dq keeps the caller's q-projection backward from
picking up garbage. Query head h reads kv head h // (H // Hkv).

Sizes within one sequence (C*H*Dh and S*Hkv*Dh) must fit in int32; the batch offset is int64.

Dh is any even value in 8..128 (HEAD_DIMS below): tiles are BLOCK_D wide, a power of two, and the
columns past Dh are masked unless Dh == BLOCK_D is compiled in.

Each kernel takes, after the arguments listed here, two scratch pointers (global scratch and
profile scratch) that Triton >= 3.4 appends to every compiled kernel; the Python launcher passes
them itself, aot_compile.py records them for the C++ loader.
"""

import math
from typing import NamedTuple, Optional

import triton
import triton.language as tl

LN2 = math.log(2.0)
LOG2E = 1.0 / LN2


# ---- tile sizes: the one place they are chosen ---------------------------------------------------


class Tile(NamedTuple):
    block_m: int     # query rows per tile
    block_n: int     # key rows per tile (0: the kernel has no key axis)
    num_warps: int
    num_stages: int


# Keyed by BLOCK_D, the padded tile width (head dims, variants: see HEAD_DIMS below), because the
# tile shapes' register and shared-memory footprint follows the tile width, not the true head dim.
# Why these: timed one kernel at a time (tune_gpu.py; bf16, rho = 0.2, GQA 4:1), the fastest of
# 7-12 candidates each: Dh=64 on an H200 (B=2 S=8192 H=32) before the forward and dq packed a kv
# group's heads into one tile; Dh=128 on an H100 after it (B=1 H=16, S=16384 and S=131072).
# - Query tiles are (slot, head) rows of one kv group (_query_tile): a 128-row tile at 4:1 GQA spans
#   32 query positions, as 32-row tiles did before packing, so the masked part of its key range
#   stays narrow while each K/V tile loaded feeds 128 rows. dq's 128x64 with 8 warps was the
#   fastest at both lengths.
# - The Dh=128 forward: 256x64 with 8 warps (each warpgroup two m64 wgmma per step, so more tensor
#   work per softmax) spills (74 bytes by Triton's count; a 296-byte stack frame in the AOT cubin,
#   ptxas) and is still the fastest of 7 tiles at the block's three shapes on an H200
#   (BENCHMARKS.md, 2026-12-06): S=131072 26.90 ms against 29.01 for 128x64,
#   S=65536 7.05 against 7.23, B=64 S=4096 2.43 against 2.58; 256x64 with 16 warps is within 2 %.
#   On an H100 at B=1 S=16384 (208 programs of 256 rows, 1.6 per SM) it was 9 % slower than 128x64:
#   with few query slots a 256-row tile leaves SMs idle, or computes mostly empty rows (a decode
#   step's C = 1 fills 4 of them). So the 128x64 forward is compiled too ("fwd_few"; the AOT kernel
#   sqdk_attention_fwd_few), and the CUDA launcher (src/cuda/attention.cpp) takes it where the
#   256-row grid would give the GPU's SMs fewer than 4 programs each.
# - Dh=64 (timed before packing): 64-row query tiles and 4 warps (one warpgroup, one m64 wgmma per
#   step) won; with packing a 64-row tile spans 16 positions at 4:1 GQA. Not re-timed since.
# - dkdv holds K, V, dK, dV of its key tile in registers for the whole loop, so the query step is
#   small (32; tutorial 06's split). The fastest variants spill (ptxas stack frames of 528 bytes
#   at Dh=64 and 480 at Dh=128, 255 registers) and still beat every spill-free one: the spills stay in L1.
#   (The timings of these comparisons: BENCHMARKS.md "From sqdk_attention.py's tile notes".)
#   Its query loop runs once per query head of the group: walking the group's packed (slot, head)
#   rows in one loop instead, as the forward and dq do, lost the spills and the restarts and ran
#   slower (H100: 0.91x at B=64 S=4096, 0.73x at S=131072; BENCHMARKS.md 2026-12-07, eighteenth
#   session; not profiled: each step then divides its rows' indices by the group size, a runtime value).
# - 3 stages: 2 was slower in every pair timed, 4 no faster; the largest tile here uses 160 KiB
#   of the 227 KiB of shared memory an H100/H200 block may have (timings: BENCHMARKS.md).
# - BLOCK_D 16 and 32 (head dims 8..32) are NOT timed: they take BLOCK_D 64's tiles. Every tile's
#   registers and shared memory shrink with BLOCK_D, so they fit wherever 64's do (exact dkdv
#   spills 8 and 136 bytes instead of 528), and the m64 wgmma per warpgroup that made 64-row query
#   tiles win is unchanged. Small head dims are the test models'; time them with tune_gpu.py
#   before relying on their speed. The padded variants reuse their width's tiles, also untimed.
_TILES_64 = {
    "fwd": Tile(64, 64, 4, 3),
    "preprocess": Tile(128, 0, 4, 1),
    "dkdv": Tile(32, 128, 4, 3),
    "dq": Tile(64, 64, 4, 3),
}
TILES = {
    16: _TILES_64,
    32: _TILES_64,
    64: _TILES_64,
    128: {
        "fwd": Tile(256, 64, 8, 3),
        "fwd_few": Tile(128, 64, 8, 3),
        "preprocess": Tile(128, 0, 4, 1),
        "dkdv": Tile(32, 64, 4, 3),
        "dq": Tile(128, 64, 8, 3),
    },
}

# Head dims and compiled variants. Every even Dh in [8, 128] is supported (RoPE needs an even Dh;
# below 8 nothing uses it). A kernel works on [*, BLOCK_D] tiles with BLOCK_D the next power of two
# >= max(Dh, 16) (tl.arange needs a power of two, tl.dot K >= 16), and HEAD_DIM = Dh is either
#   - a constexpr equal to BLOCK_D ("exact": Dh 16, 32, 64, 128): no column mask at all, the code
#     the 64/128 kernels had before padding existed, so they are not slower; or
#   - a runtime i32 ("padded": every other even Dh): loads and stores are masked on d < HEAD_DIM,
#     one cubin per BLOCK_D covers all of (BLOCK_D/2, BLOCK_D) (8..14 for BLOCK_D 16).
# So aot_compile.py builds 8 variants (2 per BLOCK_D) x 4 kernels instead of 60 x 4. The padded
# variants pay for generality: up to 2x wasted dot work (Dh 66 in 128 columns), and row strides
# H*Dh unknown at compile time with a runtime column mask, so loads are at most 4-byte vectors
# (aot_compile.py hints HEAD_DIM even) and dkdv spills more.
HEAD_DIM_MIN, HEAD_DIM_MAX = 8, 128
HEAD_DIMS = tuple(range(HEAD_DIM_MIN, HEAD_DIM_MAX + 1, 2))
BLOCK_DS = (16, 32, 64, 128)


def block_d_for(head_dim: int) -> int:
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"head_dim {head_dim}: the kernels take even head dims {HEAD_DIM_MIN}..{HEAD_DIM_MAX}")
    return max(16, 1 << (head_dim - 1).bit_length())


def head_dim_args(head_dim: int) -> dict:
    """HEAD_DIM and BLOCK_D as a launch passes them: HEAD_DIM a constexpr when it fills the tile
    (the exact variant, no column mask), else a plain int (the padded variant, one per BLOCK_D)."""
    block_d = block_d_for(head_dim)
    return {"HEAD_DIM": tl.constexpr(head_dim) if head_dim == block_d else head_dim, "BLOCK_D": block_d}


# Small tiles for the interpreter tests: tiny shapes then still cover several blocks, ragged tails,
# blocks that start past counts[b] and both the masked and unmasked inner loops; BLOCK_M != BLOCK_N
# so that rounding of the loop bounds to either block size is exercised. 16 is tl.dot's minimum.
TEST_TILES = {
    "fwd": Tile(32, 16, 4, 1),
    "preprocess": Tile(16, 0, 4, 1),
    "dkdv": Tile(16, 32, 4, 1),
    "dq": Tile(32, 16, 4, 1),
}


# The padded variants' column masks and runtime strides cost registers: with the exact Dh=128
# forward's tile (256x64, a 296-byte stack frame a thread) the padded variant's frame would be 1,176
# bytes (ptxas, Triton 3.6, sm_90), so that variant keeps the 128x64 tile it had (176 bytes).
# Untimed, as the padded variants are.
PADDED_TILES = {128: {"fwd": Tile(128, 64, 8, 3), "fwd_few": None}}  # None: not compiled (same as "fwd")


def tiles_for(head_dim: int, tiles: Optional[dict] = None) -> dict:
    """The tiles of head_dim's variant (or tiles, when given): TILES of its width, with
    PADDED_TILES' entries for the padded variant (head_dim below its width)."""
    if tiles is not None:
        return tiles
    block_d = block_d_for(head_dim)
    chosen = TILES[block_d]
    if head_dim != block_d:
        chosen = {**chosen, **PADDED_TILES.get(block_d, {})}
    return chosen


# Which forward tile runs where a width has two ("fwd" and "fwd_few"): "fwd" when its grid gives
# every SM at least FWD_MIN_PROGRAMS_PER_SM programs, or FWD_MIN_PROGRAMS_PER_SM_LONG when the
# sequences have FWD_LONG_SEQ keys or more (their tiles' long key ranges amortise the 256-row tile's
# spills and its wider masked diagonal), else "fwd_few" (the TILES comment says why). The numbers sit
# between timed shapes (BENCHMARKS.md, "two Gluon forwards, and the forward tile's boundary"). The
# CUDA launcher (src/cuda/attention.cpp: kFwdMinPerSm, kFwdMinPerSmLong, kFwdLongSeq) is the same
# rule; test_sqdk_interpret.py checks that the numbers agree.
FWD_MIN_PROGRAMS_PER_SM = 4
FWD_MIN_PROGRAMS_PER_SM_LONG = 2
FWD_LONG_SEQ = 24576


def forward_tile(head_dim: int, B: int, C: int, S: int, H: int, Hkv: int, sm_count: Optional[int],
                 tiles: Optional[dict] = None) -> Tile:
    """The forward's tile for this launch of B sequences of S keys, C query slots each (sm_count
    None: no GPU to size for, "fwd")."""
    chosen = tiles_for(head_dim, tiles)
    tile, few = chosen["fwd"], chosen.get("fwd_few")
    if few is None or sm_count is None:
        return tile
    programs = triton.cdiv(C * (H // Hkv), tile.block_m) * B * Hkv
    per_sm = FWD_MIN_PROGRAMS_PER_SM_LONG if S >= FWD_LONG_SEQ else FWD_MIN_PROGRAMS_PER_SM
    return few if programs < per_sm * sm_count else tile


# ---- helpers -------------------------------------------------------------------------------------


@triton.constexpr_function
def _exact(head_dim, block_d):
    """True when HEAD_DIM is a compile-time constant filling the tile: column masks are left out
    (a constexpr condition, so the exact variants compile to the unmasked code)."""
    return isinstance(head_dim, int) and head_dim == block_d


@triton.constexpr_function
def _is_const(head_dim):
    return isinstance(head_dim, int)


@triton.jit
def _softmax_scale(HEAD_DIM):
    """1/sqrt(HEAD_DIM): folded at compile time for a constexpr head dim, else correctly rounded
    float32 (sqrt_rn, div_rn) on the runtime value."""
    if _is_const(HEAD_DIM):
        scale = 1.0 / math.sqrt(HEAD_DIM)
    else:
        scale = tl.math.div_rn(1.0, tl.math.sqrt_rn(HEAD_DIM.to(tl.float32)))
    return scale


@triton.jit
def _row_mask(rows_ok, offs_d, HEAD_DIM, BLOCK_D: tl.constexpr):
    """Mask of a [rows, BLOCK_D] tile: rows_ok, and d < HEAD_DIM unless HEAD_DIM fills the tile."""
    if _exact(HEAD_DIM, BLOCK_D):
        mask = rows_ok[:, None]
    else:
        mask = rows_ok[:, None] & (offs_d[None, :] < HEAD_DIM)
    return mask


@triton.jit
def _load_kv(ptrs, offs_n, offs_d, S, HEAD_DIM, BLOCK_D: tl.constexpr, MASKED: tl.constexpr):
    """A [BLOCK_N, BLOCK_D] key/value tile; rows past S and columns past HEAD_DIM load as 0.
    Unmasked tiles lie inside [0, S), so only the column test remains (if any)."""
    if MASKED:
        x = tl.load(ptrs, mask=_row_mask(offs_n < S, offs_d, HEAD_DIM, BLOCK_D), other=0.0)
    elif _exact(HEAD_DIM, BLOCK_D):
        x = tl.load(ptrs)
    else:
        x = tl.load(ptrs, mask=(offs_d < HEAD_DIM)[None, :], other=0.0)
    return x


@triton.jit
def _first_row_at_or_after(Pos, count, target):
    """The first row r < count with Pos[r] >= target (count if none); Pos sorted in [0, count)."""
    lo = count * 0
    hi = count
    while lo < hi:
        mid = (lo + hi) // 2
        go_right = tl.load(Pos + mid) < target
        lo = tl.where(go_right, mid + 1, lo)
        hi = tl.where(go_right, hi, mid)
    return lo


@triton.jit
def _key_range(row_limit, row_valid, S, BLOCK_N: tl.constexpr):
    """(full_end, end) for a query tile: keys [0, full_end) are visible to every row of the tile
    (no causal mask needed), keys [full_end, end) need it, keys >= end are visible to none.

    Computed with min/max rather than from the first/last row, so it does not rely on sorting.
    A tile with no valid row gets (0, 0): the program then only writes its zeros.
    """
    first = tl.min(tl.where(row_valid, row_limit, S), 0)
    end = tl.max(tl.where(row_valid, row_limit, -1), 0) + 1
    full_end = tl.minimum((first + 1) // BLOCK_N * BLOCK_N, end)
    return full_end, end


# ---- forward -------------------------------------------------------------------------------------
# HEAD_DIM (no annotation) is a constexpr in the exact variants and an i32 argument in the padded
# ones (see HEAD_DIMS); BLOCK_D is the tile width. Columns >= HEAD_DIM load as 0, so they add
# nothing to any dot product or row sum, and are never stored.


@triton.jit
def _query_tile(Pos, Counts, C, S, H, HKV, HEAD_DIM, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
    # The query tile of a program of grid (cdiv(C * G, BLOCK_M), B * HKV), G = H // HKV. Its rows are
    # (query slot, head) pairs of one kv head's G query heads, slot-major (row r: slot r // G, head
    # hk * G + r % G): the G heads of a slot share its position and its keys, so a tile of BLOCK_M rows
    # spans BLOCK_M / G positions, and its masked key range (first to last position) is G times
    # narrower than with one head per tile; every row's result is the same as in any other tiling.
    # Programs are ordered longest first: tiles of later slots see more keys, and the hardware
    # dispatches blocks in linear order, so the short tiles fill the tail (pid_m counts down, and
    # the kv groups vary fastest so every group's longest tiles start first).
    # Returns each row's offset into Q, O, dO, dQ (row stride H * HEAD_DIM), its offset into Lse and
    # Delta ([B, H, C]), the kv head's offset into K and V and their row stride, the dim indices,
    # which rows are queries, which are inside C (stored) and the last key each may see.
    num_tiles = tl.num_programs(0)
    lin = tl.program_id(1) * num_tiles + tl.program_id(0)
    groups = tl.num_programs(1)
    bhk = lin % groups
    pid_m = num_tiles - 1 - lin // groups
    b = bhk // HKV
    hk = bhk % HKV
    group = H // HKV
    count = tl.load(Counts + b)
    q_stride = H * HEAD_DIM
    kv_stride = HKV * HEAD_DIM
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    slot = offs_m // group
    head = hk * group + offs_m % group
    q_off = b.to(tl.int64) * C * q_stride + slot * q_stride + head * HEAD_DIM
    row_off = (b * H + head).to(tl.int64) * C + slot
    kv_base = b.to(tl.int64) * S * kv_stride + hk * HEAD_DIM
    offs_d = tl.arange(0, BLOCK_D)
    row_valid = slot < count
    in_c = slot < C
    pos = tl.load(Pos + b * C + slot, mask=row_valid, other=0)
    # a padding row attends key 0 (as the reference does) so its softmax stays finite
    row_limit = tl.minimum(pos, S - 1)
    return q_off, row_off, kv_base, kv_stride, offs_d, row_valid, in_c, row_limit


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, K_base, V_base, row_limit, kv_stride, S, start, end, qk_scale, HEAD_DIM,
               BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
    """Online softmax over key tiles [start, end); scores in base 2 (qk_scale holds log2(e))."""
    offs_d = tl.arange(0, BLOCK_D)
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_ptrs = offs_n[:, None] * kv_stride + offs_d[None, :]
        k = _load_kv(K_base + kv_ptrs, offs_n, offs_d, S, HEAD_DIM, BLOCK_D, MASKED)
        s = tl.dot(q, tl.trans(k))
        if MASKED:
            s = tl.where(offs_n[None, :] <= row_limit[:, None], s, float("-inf"))
        # The scale goes on after the row max (max(s) * c = max(s * c) for c > 0, rounding included),
        # so exp2's argument is one fma per score rather than a multiply and a subtract: -1 to +4 %
        # of the kernel by tile and shape (BENCHMARKS.md, "the attention forward's tile"). Every row
        # sees key 0 in the first tile it processes, so m_ij is finite: no inf - inf.
        m_ij = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        p = tl.math.exp2(s * qk_scale - m_ij[:, None])
        alpha = tl.math.exp2(m_i - m_ij)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_kv(V_base + kv_ptrs, offs_n, offs_d, S, HEAD_DIM, BLOCK_D, MASKED)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_ij
    return acc, l_i, m_i


@triton.jit
def sqdk_attention_fwd(Q, K, V, Pos, Counts, O, Lse, C, S, H, HKV, HEAD_DIM,
                       BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # grid: (cdiv(C * (H / HKV), BLOCK_M), B * HKV); rows: see _query_tile
    q_off, lse_off, kv_base, kv_stride, offs_d, row_valid, in_c, row_limit = _query_tile(
        Pos, Counts, C, S, H, HKV, HEAD_DIM, BLOCK_D, BLOCK_M)
    ptrs = q_off[:, None] + offs_d[None, :]
    q = tl.load(Q + ptrs, mask=_row_mask(row_valid, offs_d, HEAD_DIM, BLOCK_D), other=0.0)

    full_end, end = _key_range(row_limit, row_valid, S, BLOCK_N)
    qk_scale = _softmax_scale(HEAD_DIM) * 1.4426950408889634  # 1/sqrt(Dh) * log2(e)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.full([BLOCK_M], 1.0, dtype=tl.float32)  # its first alpha is exp2(-inf) = 0
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K + kv_base, V + kv_base, row_limit, kv_stride, S,
                               0, full_end, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, False)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K + kv_base, V + kv_base, row_limit, kv_stride, S,
                               full_end, end, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, True)

    o = tl.where(row_valid[:, None], acc / l_i[:, None], 0.0)
    lse = tl.where(row_valid, (m_i + tl.math.log2(l_i)) * 0.6931471805599453, 0.0)
    tl.store(O + ptrs, o.to(O.dtype.element_ty), mask=_row_mask(in_c, offs_d, HEAD_DIM, BLOCK_D))
    tl.store(Lse + lse_off, lse, mask=in_c)


# ---- backward ------------------------------------------------------------------------------------


@triton.jit
def sqdk_attention_bwd_preprocess(O, DO, Counts, Delta, C, H, HEAD_DIM,
                                  BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
    # grid: (cdiv(C, BLOCK_M), B * H); delta = rowsum(dO * O): [B, H, C] float32
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    count = tl.load(Counts + b)
    q_stride = H * HEAD_DIM
    q_base = b.to(tl.int64) * C * q_stride + h * HEAD_DIM
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_valid = offs_m < count
    ptrs = q_base + offs_m[:, None] * q_stride + offs_d[None, :]
    mask = _row_mask(row_valid, offs_d, HEAD_DIM, BLOCK_D)
    o = tl.load(O + ptrs, mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + ptrs, mask=mask, other=0.0).to(tl.float32)
    tl.store(Delta + bh.to(tl.int64) * C + offs_m, tl.sum(o * do, 1), mask=offs_m < C)


@triton.jit
def _dkdv_inner(dk, dv, k, v, Q_base, DO_base, Lse_base, Delta_base, Pos_base, count, offs_n,
                q_stride, start, end, qk_scale, HEAD_DIM,
                BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, MASKED: tl.constexpr):
    """Accumulate dK, dV of one key tile over query tiles [start, end) of one query head.

    Works on transposed scores (keys x queries) so that dV += P^T dO and dK += dS^T Q need no
    transpose of a tile in registers. Rows >= count load as q = do = lse = delta = 0, which makes
    their P^T dO and dS^T Q terms exactly 0, so only the causal mask needs MASKED.
    """
    offs_d = tl.arange(0, BLOCK_D)
    for start_m in range(start, end, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_valid = offs_m < count
        if _exact(HEAD_DIM, BLOCK_D):
            mask_t = row_valid[None, :]
        else:
            mask_t = (offs_d[:, None] < HEAD_DIM) & row_valid[None, :]
        q_t = tl.load(Q_base + offs_d[:, None] + offs_m[None, :] * q_stride,
                      mask=mask_t, other=0.0)                                # [BD, BM]
        do = tl.load(DO_base + offs_m[:, None] * q_stride + offs_d[None, :],
                     mask=_row_mask(row_valid, offs_d, HEAD_DIM, BLOCK_D), other=0.0)  # [BM, BD]
        lse2 = tl.load(Lse_base + offs_m, mask=row_valid, other=0.0) * 1.4426950408889634
        p_t = tl.math.exp2(tl.dot(k, q_t) * qk_scale - lse2[None, :])        # [BN, BM]
        if MASKED:
            pos = tl.load(Pos_base + offs_m, mask=row_valid, other=-1)
            p_t = tl.where(offs_n[:, None] <= pos[None, :], p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv)
        delta = tl.load(Delta_base + offs_m, mask=row_valid, other=0.0)
        dp_t = tl.dot(v, tl.trans(do))                                       # [BN, BM]
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q_t.dtype), tl.trans(q_t), dk)
    return dk, dv


@triton.jit
def sqdk_attention_bwd_dkdv(Q, K, V, DO, Lse, Delta, Pos, Counts, DK, DV, C, S, H, HKV, DKV_STRIDE, HEAD_DIM,
                            BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # grid: (cdiv(S, BLOCK_N), B * HKV); one program owns one key tile of one kv head and sums over
    # every query head of its group, so no two programs write the same dK/dV row (no atomics).
    # dK, dV rows are DKV_STRIDE apart (the module docstring says why).
    pid_n = tl.program_id(0)
    bhk = tl.program_id(1)
    b = bhk // HKV
    hk = bhk % HKV
    group = H // HKV
    count = tl.load(Counts + b)
    q_stride = H * HEAD_DIM
    kv_stride = HKV * HEAD_DIM
    kv_base = b.to(tl.int64) * S * kv_stride + hk * HEAD_DIM

    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    kv_mask = _row_mask(offs_n < S, offs_d, HEAD_DIM, BLOCK_D)
    kv_ptrs = kv_base + offs_n[:, None] * kv_stride + offs_d[None, :]
    k = tl.load(K + kv_ptrs, mask=kv_mask, other=0.0)
    v = tl.load(V + kv_ptrs, mask=kv_mask, other=0.0)

    # queries are sorted by position: rows before row_lo see none of this tile; rows from row_full
    # on see all of it (their position is >= its last key), the rows between need the causal mask
    pos_b = Pos + b * C
    row_lo = _first_row_at_or_after(pos_b, count, start_n)
    row_full = _first_row_at_or_after(pos_b, count, start_n + BLOCK_N - 1)
    m_lo = row_lo // BLOCK_M * BLOCK_M
    m_full = tl.cdiv(row_full, BLOCK_M) * BLOCK_M
    m_masked_end = tl.minimum(m_full, count)

    sm_scale = _softmax_scale(HEAD_DIM)
    qk_scale = sm_scale * 1.4426950408889634
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for h in range(hk * group, hk * group + group):
        q_base = b.to(tl.int64) * C * q_stride + h * HEAD_DIM
        row_base = (b * H + h).to(tl.int64) * C
        dk, dv = _dkdv_inner(dk, dv, k, v, Q + q_base, DO + q_base, Lse + row_base, Delta + row_base,
                             pos_b, count, offs_n, q_stride, m_lo, m_masked_end, qk_scale, HEAD_DIM,
                             BLOCK_D, BLOCK_M, True)
        dk, dv = _dkdv_inner(dk, dv, k, v, Q + q_base, DO + q_base, Lse + row_base, Delta + row_base,
                             pos_b, count, offs_n, q_stride, m_full, count, qk_scale, HEAD_DIM,
                             BLOCK_D, BLOCK_M, False)

    dk = dk * sm_scale  # dS is d/d(scaled score); the scale comes back here
    d_ptrs = b.to(tl.int64) * S * DKV_STRIDE + hk * HEAD_DIM + offs_n[:, None] * DKV_STRIDE + offs_d[None, :]
    tl.store(DK + d_ptrs, dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + d_ptrs, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _dq_inner(dq, q, do, lse2, delta, K_base, V_base, row_limit, kv_stride, S, start, end, qk_scale, HEAD_DIM,
              BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
    """Accumulate dQ of one query tile over key tiles [start, end)."""
    offs_d = tl.arange(0, BLOCK_D)
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_ptrs = offs_n[:, None] * kv_stride + offs_d[None, :]
        k = _load_kv(K_base + kv_ptrs, offs_n, offs_d, S, HEAD_DIM, BLOCK_D, MASKED)
        v = _load_kv(V_base + kv_ptrs, offs_n, offs_d, S, HEAD_DIM, BLOCK_D, MASKED)
        p = tl.math.exp2(tl.dot(q, tl.trans(k)) * qk_scale - lse2[:, None])   # [BM, BN]
        if MASKED:
            p = tl.where(offs_n[None, :] <= row_limit[:, None], p, 0.0)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq)
    return dq


@triton.jit
def sqdk_attention_bwd_dq(Q, K, V, DO, Lse, Delta, Pos, Counts, DQ, C, S, H, HKV, HEAD_DIM,
                          BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # grid: (cdiv(C * (H / HKV), BLOCK_M), B * HKV); rows: see _query_tile
    q_off, row_off, kv_base, kv_stride, offs_d, row_valid, in_c, row_limit = _query_tile(
        Pos, Counts, C, S, H, HKV, HEAD_DIM, BLOCK_D, BLOCK_M)
    ptrs = q_off[:, None] + offs_d[None, :]
    # rows >= count: q = do = lse = delta = 0 make dS exactly 0, and the store writes 0 anyway
    mask = _row_mask(row_valid, offs_d, HEAD_DIM, BLOCK_D)
    q = tl.load(Q + ptrs, mask=mask, other=0.0)
    do = tl.load(DO + ptrs, mask=mask, other=0.0)
    lse2 = tl.load(Lse + row_off, mask=row_valid, other=0.0) * 1.4426950408889634
    delta = tl.load(Delta + row_off, mask=row_valid, other=0.0)

    full_end, end = _key_range(row_limit, row_valid, S, BLOCK_N)
    sm_scale = _softmax_scale(HEAD_DIM)
    qk_scale = sm_scale * 1.4426950408889634
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    dq = _dq_inner(dq, q, do, lse2, delta, K + kv_base, V + kv_base, row_limit, kv_stride, S,
                   0, full_end, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, False)
    dq = _dq_inner(dq, q, do, lse2, delta, K + kv_base, V + kv_base, row_limit, kv_stride, S,
                   full_end, end, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, True)
    dq = tl.where(row_valid[:, None], dq * sm_scale, 0.0)
    tl.store(DQ + ptrs, dq.to(DQ.dtype.element_ty), mask=_row_mask(in_c, offs_d, HEAD_DIM, BLOCK_D))


# ---- Python launchers (tests, ci/gpu.sh parity checks) -------------------------------------------


def _check(q, k, v, pos, counts):
    import torch  # only the launchers need torch; aot_compile.py needs Triton alone

    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape:
        raise ValueError(f"q: [B, C, H, Dh], k, v: [B, S, Hkv, Dh]; got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    B, C, H, Dh = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    if k.shape[0] != B or k.shape[3] != Dh or H % Hkv:
        raise ValueError(f"k: [B={B}, S, Hkv | H={H}, Dh={Dh}], got {tuple(k.shape)}")
    if tuple(pos.shape) != (B, C) or pos.dtype != torch.int32:
        raise ValueError(f"pos: [B={B}, C={C}] int32, got {tuple(pos.shape)} {pos.dtype}")
    if tuple(counts.shape) != (B,) or counts.dtype != torch.int32:
        raise ValueError(f"counts: [B={B}] int32, got {tuple(counts.shape)} {counts.dtype}")
    for name, t in (("q", q), ("k", k), ("v", v), ("pos", pos), ("counts", counts)):
        if not t.is_contiguous():
            raise ValueError(f"{name}: must be contiguous")
    return B, C, H, Dh, S, Hkv


def sqdk_attention_forward(q, k, v, pos, counts, tiles: Optional[dict] = None):
    """q: [B, C, H, Dh], k, v: [B, S, Hkv, Dh], pos: [B, C] int32, counts: [B] int32
    -> o: [B, C, H, Dh] (q's dtype), lse: [B, H, C] float32."""
    import torch

    B, C, H, Dh, S, Hkv = _check(q, k, v, pos, counts)
    sm_count = torch.cuda.get_device_properties(q.device).multi_processor_count if q.is_cuda else None
    t = forward_tile(Dh, B, C, S, H, Hkv, sm_count, tiles)
    o = torch.empty_like(q)
    lse = torch.empty((B, H, C), dtype=torch.float32, device=q.device)
    grid = (triton.cdiv(C * (H // Hkv), t.block_m), B * Hkv)
    sqdk_attention_fwd[grid](q, k, v, pos, counts, o, lse, C, S, H, Hkv,
                             **head_dim_args(Dh), BLOCK_M=t.block_m, BLOCK_N=t.block_n,
                             num_warps=t.num_warps, num_stages=t.num_stages)
    return o, lse


def sqdk_attention_backward(do, q, k, v, o, lse, pos, counts, tiles: Optional[dict] = None, dkv=None):
    """Gradients of sqdk_attention_forward
    -> dq: [B, C, H, Dh], dk, dv: [B, S, Hkv, Dh] (q's, k's dtype), delta: [B, H, C] float32.

    dkv: None, or a contiguous [B, S, R] tensor of k's dtype (R a multiple of Dh, >= 2*Hkv*Dh) that
    dk and dv are written into, dk at column 0 and dv at column Hkv*Dh of each token's row (the CUDA
    block's layout at R = 2*Hkv*Dh; the other columns are left as they are); dk, dv are then views of it."""
    import torch

    B, C, H, Dh, S, Hkv = _check(q, k, v, pos, counts)
    if do.shape != q.shape or o.shape != q.shape or not do.is_contiguous():
        raise ValueError("do, o: contiguous, shaped as q")
    KV = Hkv * Dh
    if dkv is not None and (dkv.dim() != 3 or tuple(dkv.shape[:2]) != (B, S) or dkv.shape[2] < 2 * KV
                            or dkv.shape[2] % Dh or dkv.dtype != k.dtype or not dkv.is_contiguous()):
        raise ValueError(f"dkv: contiguous [B={B}, S={S}, R] {k.dtype}, R a multiple of Dh={Dh} and >= {2 * KV}; "
                         f"got {tuple(dkv.shape)} {dkv.dtype}")
    ts = tiles_for(Dh, tiles)
    delta = torch.empty((B, H, C), dtype=torch.float32, device=q.device)
    t = ts["preprocess"]
    sqdk_attention_bwd_preprocess[(triton.cdiv(C, t.block_m), B * H)](
        o, do, counts, delta, C, H, **head_dim_args(Dh), BLOCK_M=t.block_m,
        num_warps=t.num_warps, num_stages=t.num_stages)
    if dkv is None:
        dk = torch.empty_like(k)
        dv = torch.empty_like(v)
    else:
        dk = dkv[:, :, :KV].unflatten(2, (Hkv, Dh))
        dv = dkv[:, :, KV:2 * KV].unflatten(2, (Hkv, Dh))
    t = ts["dkdv"]
    sqdk_attention_bwd_dkdv[(triton.cdiv(S, t.block_n), B * Hkv)](
        q, k, v, do, lse, delta, pos, counts, dk, dv, C, S, H, Hkv, KV if dkv is None else dkv.shape[2],
        **head_dim_args(Dh), BLOCK_M=t.block_m, BLOCK_N=t.block_n,
        num_warps=t.num_warps, num_stages=t.num_stages)
    dq = torch.empty_like(q)
    t = ts["dq"]
    sqdk_attention_bwd_dq[(triton.cdiv(C * (H // Hkv), t.block_m), B * Hkv)](
        q, k, v, do, lse, delta, pos, counts, dq, C, S, H, Hkv,
        **head_dim_args(Dh), BLOCK_M=t.block_m, BLOCK_N=t.block_n,
        num_warps=t.num_warps, num_stages=t.num_stages)
    return dq, dk, dv, delta
