"""The sampling definition of native/README.md "Sampling" in numpy float32 and Python integers: the
reference that the CPU op, the CUDA op and the Java Sampler all match bit for bit (check_sample.py).

Each float32 step is one numpy operation (rounded to nearest, nothing fused), the constants are given
by their bits, and every sum after the masses is an exact integer."""

import math

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15
M64 = (1 << 64) - 1
MASS_SCALE = np.float32(2.0 ** 46)
NAN_CODE, POS_INF_CODE, ALL_NEG_INF_CODE = -1, -2, -3


def _f(bits):
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


# the float literals of Sampler.expNonPositive / core/sampling.h, bit for bit
LO, LOG2E, SHIFTER = _f(0xc2aea8f6), _f(0x3fb8aa3b), _f(0x4b400000)  # -87.33, 1.44269504, 1.5 * 2^23
LN2_HI, LN2_LO = _f(0x3f317200), _f(0x35bfbe8e)  # 0.693145752, 1.42860682e-6
C6, C5, C4, C3 = _f(0x3ab60b61), _f(0x3c088889), _f(0x3d2aaaab), _f(0x3e2aaaab)  # 1/720, 1/120, 1/24, 1/6
HALF, ONE = np.float32(0.5), np.float32(1.0)


def exp_non_positive(x):
    """e^x for float32 x <= 0, exactly as the Java/C/CUDA code computes it (0 below -87.33)."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        c = np.where(x < LO, LO, x).astype(np.float32)
        t = c * LOG2E + SHIFTER
        n = t - SHIFTER
        f = (c - n * LN2_HI) - n * LN2_LO
        p = f * C6
        p = f * (C5 + p)
        p = f * (C4 + p)
        p = f * (C3 + p)
        p = f * (HALF + p)
        p = f * (ONE + p)
        p = ONE + p
        scale = ((t.view(np.uint32).astype(np.uint32) - np.uint32(0x4B400000) + np.uint32(127)) << np.uint32(23))
        e = p * scale.astype(np.uint32).view(np.float32)
        return np.where(x < LO, np.float32(0.0), e).astype(np.float32)


def masses(x, m, inv_t):
    """floor(2^46 * expNonPositive((x - m) * inv_t)) as uint64."""
    with np.errstate(invalid="ignore", over="ignore"):
        q = exp_non_positive((x - m) * inv_t)
    return (q * MASS_SCALE).astype(np.uint64)


def keys(x):
    """48-bit keys: order-preserving bits of the logit (-0 as +0) << 16 | (0xFFFF - id)."""
    x = np.asarray(x, dtype=np.float32)
    u = np.where(x == 0, np.float32(0.0), x).view(np.uint32).astype(np.uint64)
    o = np.where(u & 0x80000000, (~u) & 0xFFFFFFFF, u | 0x80000000).astype(np.uint64)
    ids = np.arange(x.size, dtype=np.uint64)
    return (o << np.uint64(16)) | (np.uint64(0xFFFF) - ids)


def draw_bits(seed, draw):
    z = (seed + draw * GOLDEN) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def nucleus_need(p, total):
    want = float(np.float64(np.float32(p)) * np.float64(total))  # the double product of the definition
    return min(total, int(math.ceil(want)))


def kept_mask(x, q, top_k, top_p):
    """Boolean mask of the kept tokens (top-k by key, then the shortest key prefix reaching the nucleus mass)."""
    V = x.size
    k = keys(x)
    thr = np.uint64(0)
    if 0 < top_k < V:
        thr = np.sort(k)[::-1][top_k - 1]
    if np.float32(top_p) < 1:
        cand = k >= thr
        order = np.argsort(k[cand])[::-1]
        cq = q[cand][order]
        total = int(cq.sum(dtype=np.uint64))
        need = nucleus_need(top_p, total)
        cum = np.cumsum(cq, dtype=np.uint64)
        j = int(np.argmax(cum >= np.uint64(need)))
        thr = k[cand][order][j]
    return k >= thr


def sample_row(x, temperature, top_k, top_p, seed, draw):
    """The token of one row (or NAN_CODE / POS_INF_CODE / ALL_NEG_INF_CODE)."""
    x = np.asarray(x, dtype=np.float32)
    if np.isnan(x).any():
        return NAN_CODE
    if np.isposinf(x).any():
        return POS_INF_CODE
    m = x.max()
    if np.isneginf(m):
        return ALL_NEG_INF_CODE
    if np.float32(temperature) == 0:
        return int(np.argmax(x == m))
    inv_t = np.float32(1.0) / np.float32(temperature)
    q = masses(x, m, inv_t)
    if (0 < top_k < x.size) or np.float32(top_p) < 1:
        q = np.where(kept_mask(x, q, top_k, top_p), q, np.uint64(0))
    total = int(q.sum(dtype=np.uint64))
    target = (draw_bits(seed, draw) * total) >> 64
    cum = np.cumsum(q, dtype=np.uint64)
    return int(np.argmax(cum > np.uint64(target)))


def distribution(x, temperature, top_k, top_p):
    """The exact probabilities the definition samples from: Q_i / sum Q over the kept set (float64)."""
    x = np.asarray(x, dtype=np.float32)
    m = x.max()
    inv_t = np.float32(1.0) / np.float32(temperature)
    q = masses(x, m, inv_t)
    q = np.where(kept_mask(x, q, top_k, top_p), q, np.uint64(0))
    return q.astype(np.float64) / float(int(q.sum(dtype=np.uint64)))
