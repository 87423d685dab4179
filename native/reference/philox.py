"""Philox4x32-10 (Salmon et al., Random123), vectorised over numpy arrays.

The Gumbel noise of the router is keyed by (seed, step, layer, b, s) so that any backend, any
thread layout and any replay draws the same numbers; a counter-based generator gives that without
state. Constants and round as in native/README.md ("Gumbel noise").
"""

import numpy as np

_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
M0 = np.uint64(0xD2511F53)
M1 = np.uint64(0xCD9E8D57)
W0 = np.uint64(0x9E3779B9)
W1 = np.uint64(0xBB67AE85)


def _u32(v):
    # uint64 holding 32-bit values: the 32x32 product then fits exactly and hi/lo are a shift away.
    return np.asarray(v, dtype=np.uint64) & _MASK32


def philox4x32_10(counter, key):
    """counter: 4 arrays (or ints) of uint32 values, key: 2 of them; broadcast together.

    Returns the 4 output words as uint64 arrays holding uint32 values.
    """
    c0, c1, c2, c3 = (_u32(c) for c in counter)
    k0, k1 = (_u32(k) for k in key)
    for r in range(10):
        if r:
            k0 = (k0 + W0) & _MASK32
            k1 = (k1 + W1) & _MASK32
        p0 = M0 * c0
        p1 = M1 * c2
        hi0, lo0 = p0 >> _SHIFT32, p0 & _MASK32
        hi1, lo1 = p1 >> _SHIFT32, p1 & _MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3
