"""swiglu_gemm in Triton: the gate and up projections of the SwiGLU MLP with SwiGLU in the epilogue.

    c      : [N, D] bf16        rows (any N >= 0)
    w_gate : [F, D] bf16        W_gate (as the block stores it: nn.Linear's [out, in])
    w_up   : [F, D] bf16
    act    : [N, F] bf16        bf16(silu(gate) * up)
    gate   : [N, F] bf16        bf16(c W_gate^T)  (training only: TRAIN=True; swiglu's backward reads it)
    up     : [N, F] bf16        bf16(c W_up^T)    (training only)

The math and its rounding points are those of today's CUDA path (two cuBLASLt GEMMs with bf16
output, then native/src/cuda/kernels/swiglu.cu), so the fused kernel can replace it bit for bit
up to the GEMM's summation order:
    gate, up = bf16(float32 sum over D), each rounded to bf16 before the activation;
    act      = bf16((g * sigmoid(g)) * u) in float32, g, u the bf16 values,
               sigmoid(g) = 1 / (1 + expf(-g)) with CUDA's expf (libdevice __nv_expf) and an IEEE
               division, as swiglu.cu compiles them (no fast math). Triton links libdevice with
               flush-to-zero on, which changes expf only where its result is denormal (g > 87),
               and there 1 + expf(-g) is 1 either way.

One program computes both [BLOCK_M, BLOCK_N] accumulators of an output tile from one load of each
c tile (two dots per K step: effectively a [N, 2F] GEMM against the stacked weights, but the two
halves of a tile line up, so the epilogue has gate and up of the same elements in registers).

Persistent: the grid is any number of programs (the launchers use one per SM); program p takes
tiles p, p + grid, ... in grouped order (GROUP_M row tiles share a band of weight tiles, so that
weights and rows stay in L2). All tensors go through TMA descriptors built on the device
(tl.make_tensor_descriptor): Triton writes them into its global scratch (global_scratch_size bytes
per program; the JIT launcher needs triton.set_allocator, the AOT loader passes the pointer).
TMA does the tails: loads past N, F or D read zeros, stores past N or F are dropped.

Constraints (what the launchers check; TMA needs 16-byte aligned row strides and bases):
    N >= 0 any; D and F multiples of 8 (bf16 rows of 16-byte multiples), D >= 8, F >= 8;
    all tensors contiguous, base pointers 16-byte aligned; N, F, D < 2**31.

Like every Triton >= 3.4 kernel, the compiled one takes two trailing scratch pointers (global and
profile scratch) after the arguments listed here.
"""

import os
from typing import NamedTuple, Optional

import triton
import triton.language as tl
from triton.language.extra.cuda import libdevice

# ---- configurations: the one place they are chosen ------------------------------------------------


class Config(NamedTuple):
    block_m: int      # rows of c per tile
    block_n: int      # columns of gate (and of up) per tile: the tile's dots are 2 x BLOCK_N wide
    block_k: int      # reduction step over D
    group_m: int      # row tiles per group of the grouped order
    num_warps: int
    num_stages: int
    warp_specialize: bool  # Triton's automatic warp specialisation of the K loop (see "ws" below)


# Candidates for swiglu_gemm_gpu.py to time (it proposes; DEFAULT decides). Shared memory per
# stage is (BLOCK_M + 2 * BLOCK_N) * BLOCK_K * 2 bytes, plus one [BLOCK_M, BLOCK_N] bf16 epilogue
# tile: 128/128/64 takes 48 KiB a stage, so 4 stages are the most that fit the 227 KiB of an
# H100/H200 block (128x256 tiles do not fit at all). Registers: two f32 accumulators of
# BLOCK_M * BLOCK_N, 128 per thread at 128x128 over two warpgroups (m64 wgmma each).
# - plain (flattened persistent loop, num_warps warps compute and load);
# - "ws": Triton's Hopper warp specialisation, which on 3.6 takes effect only with num_warps = 4
#   (one warpgroup per partition: a TMA producer plus two consumers splitting BLOCK_M, 12 warps in
#   all, registers rebalanced with setmaxnreg; checked in the TTGIR/PTX for sm_90 -- with 8 warps
#   the flag compiles to exactly the code without it).
# Measured on an H100 (2026-12-06, BENCHMARKS.md "SwiGLU in the GEMM's epilogue"): at N = 262144,
# D = 2048, F = 8192 the best "ws" config reaches 584 TFLOP/s in inference (0.94x cuBLAS x2 + the
# swiglu pass) and the plain ones 497-561, so the block keeps cuBLASLt; and the "ws" configs wrote NaN
# in some act elements of the odd-tail shapes (Triton 3.6's experimental warp specialisation), so
# they are EXPERIMENTAL_CONFIGS: timed and checked only when named with --configs.
CONFIGS = {
    "m128n128k64w8s3": Config(128, 128, 64, 8, 8, 3, False),
    "m128n128k64w8s4": Config(128, 128, 64, 8, 8, 4, False),
    "m64n128k64w4s4": Config(64, 128, 64, 8, 4, 4, False),
}
EXPERIMENTAL_CONFIGS = {
    "m128n128k64ws3": Config(128, 128, 64, 8, 4, 3, True),
    "m128n128k64ws4": Config(128, 128, 64, 8, 4, 4, True),
    "m128n64k64ws4": Config(128, 64, 64, 8, 4, 4, True),
}
ALL_CONFIGS = {**CONFIGS, **EXPERIMENTAL_CONFIGS}
DEFAULT = "m128n128k64w8s3"
# The training variant writes three [BLOCK_M, BLOCK_N] tiles per tile: with Triton 3.6's warp
# specialisation its epilogue buffers take 260-390 KiB of shared memory, more than an H100 has, so
# the "ws" configs serve inference only and training keeps its own choice.
DEFAULT_TRAIN = "m128n128k64w8s3"

# Small tiles for the interpreter test: tiny shapes then cross several tiles in every dimension,
# with tails in N, F and D, and several tiles per program.
TEST_CONFIG = Config(16, 16, 16, 2, 4, 1, False)

ALIGN = 8  # D and F must be multiples of this (16-byte rows of bf16 for TMA)


# ---- the kernel ----------------------------------------------------------------------------------


if os.environ.get("TRITON_INTERPRET") == "1":
    # The interpreter has no libdevice; NumPy's exp is as accurate as expf, which is all the
    # float32 test needs (it checks the GEMMs, tiling and tails, not the last ulp of expf).
    @triton.jit
    def _expf(x):
        return tl.exp(x)
else:
    @triton.jit
    def _expf(x):
        # CUDA's expf (swiglu.cu's), not tl.exp: on the GPU that is ex2.approx(x * log2(e)), a few
        # ulps off, which would flip the bf16 rounding of act against today's path now and then
        return libdevice.exp(x)


@triton.jit
def _sigmoid(x):
    """1 / (1 + expf(-x)) as swiglu.cu computes it: CUDA's expf, IEEE division (div_rn; Triton's `/`
    is the approximate div.full.f32)."""
    return tl.math.div_rn(tl.full(x.shape, 1.0, tl.float32), 1.0 + _expf(-x))


@triton.jit
def _tile_coords(tile_id, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """Grouped order: GROUP_M row tiles walk the column tiles together (weights reused from L2)."""
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = tile_id // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (tile_id % group_size_m)
    pid_n = (tile_id % num_pid_in_group) // group_size_m
    return pid_m, pid_n


# N, F, D only size the TMA descriptors and the tile count, so the JIT compiles one kernel per
# config whatever the shape (no divisibility or ==1 specialisation: odd N costs no recompile).
@triton.jit(do_not_specialize=["N", "F", "D"])
def swiglu_gemm_kernel(X, WG, WU, ACT, GATE, UP, N, F, D,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       GROUP_M: tl.constexpr, TRAIN: tl.constexpr, WARP_SPECIALIZE: tl.constexpr):
    # X is c (named so that no argument name means two things to the C++ loader: attention's C is
    # an int). grid: (programs,), any count >= 1. GATE and UP are used only when TRAIN; the
    # inference kernel still takes them (unused: pass anything, e.g. ACT).
    dtype = ACT.dtype.element_ty
    c_desc = tl.make_tensor_descriptor(X, shape=[N, D], strides=[D, 1], block_shape=[BLOCK_M, BLOCK_K])
    wg_desc = tl.make_tensor_descriptor(WG, shape=[F, D], strides=[D, 1], block_shape=[BLOCK_N, BLOCK_K])
    wu_desc = tl.make_tensor_descriptor(WU, shape=[F, D], strides=[D, 1], block_shape=[BLOCK_N, BLOCK_K])
    act_desc = tl.make_tensor_descriptor(ACT, shape=[N, F], strides=[F, 1], block_shape=[BLOCK_M, BLOCK_N])
    if TRAIN:
        gate_desc = tl.make_tensor_descriptor(GATE, shape=[N, F], strides=[F, 1], block_shape=[BLOCK_M, BLOCK_N])
        up_desc = tl.make_tensor_descriptor(UP, shape=[N, F], strides=[F, 1], block_shape=[BLOCK_M, BLOCK_N])

    num_pid_m = tl.cdiv(N, BLOCK_M)
    num_pid_n = tl.cdiv(F, BLOCK_N)
    num_tiles = num_pid_m * num_pid_n
    k_tiles = tl.cdiv(D, BLOCK_K)
    # Without warp specialisation the tile loop is flattened into the K loop, so the software
    # pipeline keeps loading across tile boundaries (tutorial 09). With it, Triton 3.6's Hopper pass
    # takes the K loop alone (it ignores a flattened one): one producer warpgroup issues the TMA
    # loads, two consumer warpgroups (num_warps = 4 each) split BLOCK_M and run the wgmma and the
    # epilogue; the compiled kernel then has 12 warps (its metadata says so).
    for tile_id in tl.range(tl.program_id(0), num_tiles, tl.num_programs(0), flatten=not WARP_SPECIALIZE):
        pid_m, pid_n = _tile_coords(tile_id, num_pid_m, num_pid_n, GROUP_M)
        offs_m = pid_m * BLOCK_M
        offs_n = pid_n * BLOCK_N
        acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in tl.range(k_tiles, warp_specialize=WARP_SPECIALIZE):
            offs_k = ki * BLOCK_K
            a = c_desc.load([offs_m, offs_k])                      # [BLOCK_M, BLOCK_K]
            acc_g = tl.dot(a, wg_desc.load([offs_n, offs_k]).T, acc_g)
            acc_u = tl.dot(a, wu_desc.load([offs_n, offs_k]).T, acc_u)
        # the GEMMs' outputs are rounded to the storage type first, as cuBLASLt's bf16 outputs are
        gate = acc_g.to(dtype)
        up = acc_u.to(dtype)
        g = gate.to(tl.float32)
        act = g * _sigmoid(g) * up.to(tl.float32)
        act_desc.store([offs_m, offs_n], act.to(dtype))
        if TRAIN:
            gate_desc.store([offs_m, offs_n], gate)
            up_desc.store([offs_m, offs_n], up)


# ---- Python launcher (tests, swiglu_gemm_gpu.py) -------------------------------------------------


def check_shapes(N: int, D: int, F: int) -> None:
    """Raises ValueError for a shape the kernel does not take (the C++ launcher checks the same)."""
    if N < 0 or D < ALIGN or F < ALIGN:
        raise ValueError(f"swiglu_gemm: N >= 0, D >= {ALIGN}, F >= {ALIGN}; got N={N} D={D} F={F}")
    if D % ALIGN or F % ALIGN:
        raise ValueError(f"swiglu_gemm: D and F must be multiples of {ALIGN} (TMA needs 16-byte rows); "
                         f"got D={D} F={F}")
    if max(N, D, F) >= 2 ** 31:
        raise ValueError(f"swiglu_gemm: N, D, F must be < 2**31; got N={N} D={D} F={F}")


def grid_size(N: int, F: int, cfg: Config, programs: int) -> int:
    """Persistent grid: at most `programs` (one per SM), never more than there are tiles (>= 1)."""
    tiles = triton.cdiv(N, cfg.block_m) * triton.cdiv(F, cfg.block_n)
    return max(1, min(programs, tiles))


_allocator_set = False


def _ensure_allocator():
    """Device-side TMA descriptors live in Triton's global scratch: the JIT launch asks this."""
    global _allocator_set
    if not _allocator_set:
        import torch

        triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
        _allocator_set = True


def swiglu_gemm(c, w_gate, w_up, train: bool = False, config: Optional[Config] = None,
                programs: Optional[int] = None, out: Optional[tuple] = None):
    """c: [N, D], w_gate, w_up: [F, D] (bf16 on a GPU; float32 in the interpreter)
    -> act: [N, F], or (act, gate, up) when train. out: the outputs to write (act, or act, gate,
    up), contiguous [N, F] of c's dtype; allocated here when None."""
    import torch  # only the launcher needs torch; an AOT compile needs Triton alone

    cfg = config or CONFIGS[DEFAULT_TRAIN if train else DEFAULT]
    if c.dim() != 2 or w_gate.dim() != 2 or w_gate.shape != w_up.shape or w_gate.shape[1] != c.shape[1]:
        raise ValueError(f"swiglu_gemm: c [N, D], w_gate and w_up [F, D]; got {tuple(c.shape)}, "
                         f"{tuple(w_gate.shape)}, {tuple(w_up.shape)}")
    N, D = c.shape
    F = w_gate.shape[0]
    check_shapes(N, D, F)
    if out is None:
        out = tuple(torch.empty((N, F), dtype=c.dtype, device=c.device) for _ in range(3 if train else 1))
    if len(out) != (3 if train else 1):
        raise ValueError(f"swiglu_gemm: out holds {'act, gate, up' if train else 'act'}; got {len(out)} tensors")
    named = [("c", c), ("w_gate", w_gate), ("w_up", w_up)] + list(zip(("act", "gate", "up"), out))
    for name, t in named:
        if not t.is_contiguous() or t.data_ptr() % 16 or t.dtype != c.dtype or t.device != c.device:
            raise ValueError(f"swiglu_gemm: {name} must be contiguous, 16-byte aligned, of c's dtype and device")
    for name, t in named[3:]:
        if tuple(t.shape) != (N, F):
            raise ValueError(f"swiglu_gemm: {name} must be [N={N}, F={F}], got {tuple(t.shape)}")
    act, gate, up = out if train else (out[0], out[0], out[0])
    if N > 0:
        if programs is None:
            programs = torch.cuda.get_device_properties(c.device).multi_processor_count if c.is_cuda else 4
        if c.is_cuda:
            _ensure_allocator()
        grid = (grid_size(N, F, cfg, programs), )
        swiglu_gemm_kernel[grid](c, w_gate, w_up, act, gate, up, N, F, D,
                                 BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
                                 GROUP_M=cfg.group_m, TRAIN=train, WARP_SPECIALIZE=cfg.warp_specialize,
                                 num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return (act, gate, up) if train else act
