"""The algorithm of src/cuda/kernels/sample_tokens.cu replayed in Python, step for step (chunks per warp,
four 8-bit radix passes with the warp-0 bin search over lanes of 8 bins, the tie cut by an ordered
count, the draw's chunk scan and walk), checked against sampling_ref.py on random rows of every mode.
It checks the kernel's logic where no GPU is at hand; the kernel itself is checked against the CPU op on
a GPU by check_sample.py --backend cuda.
  usage: emulate_sample_kernel.py [--rows N] [--seed S]"""

import argparse
import sys

import numpy as np

import sampling_ref as ref


class Kernel:
    def __init__(self, x):
        self.x = np.asarray(x, dtype=np.float32)
        V = self.x.size
        self.V = V
        threads = 1024 if V >= 1024 else (V + 31) // 32 * 32
        self.W = threads // 32
        per_warp = -(-V // self.W)
        self.C = (per_warp + 31) // 32 * 32
        self.keys = ref.keys(self.x)

    def chunk(self, w):
        """Ids of warp w's chunk in walk order (step by step, lanes in order), only those < V."""
        lo = w * self.C
        return np.arange(lo, min(lo + self.C, self.V))

    def select(self, q, lo, by_mass, want, top_p):
        k, x = self.keys, self.x
        o = (k >> np.uint64(16)).astype(np.uint64)
        prefix = 0
        above_c = above_m = 0
        group_c = group_m = 0
        for d in range(4):
            shift = 24 - 8 * d
            cand = k >= np.uint64(lo)
            if d > 0:
                cand &= (o >> np.uint64(shift + 8)) == np.uint64(prefix >> (shift + 8))
            digit = ((o >> np.uint64(shift)) & np.uint64(0xFF)).astype(np.int64)
            hist_c = np.bincount(digit[cand], minlength=256).astype(object)
            hist_m = np.zeros(256, dtype=object)
            for b, qq in zip(digit[cand], q[cand]):
                hist_m[b] += int(qq)
            if by_mass and d == 0:
                total = int(sum(hist_m))
                want = ref.nucleus_need(top_p, total)
            # lane l holds bins 255 - 8l .. 248 - 8l; inclusive scan over lanes; first lane reaching want
            c8 = [sum(hist_c[255 - 8 * l - j] for j in range(8)) for l in range(32)]
            m8 = [sum(hist_m[255 - 8 * l - j] for j in range(8)) for l in range(32)]
            ic = np.cumsum(np.array(c8, dtype=object))
            im = np.cumsum(np.array(m8, dtype=object))
            reached = [(above_m + im[l] >= want) if by_mass else (above_c + ic[l] >= want) for l in range(32)]
            assert any(reached), "no lane reaches the target: the invariant is broken"
            L = reached.index(True)
            ec, em = ic[L] - c8[L], im[L] - m8[L]
            digit_sel = None
            for j in range(8):
                b = 255 - 8 * L - j
                nc, nm = ec + hist_c[b], em + hist_m[b]
                if (above_m + nm >= want) if by_mass else (above_c + nc >= want):
                    digit_sel = b
                    break
                ec, em = nc, nm
            assert digit_sel is not None
            above_c += ec
            above_m += em
            group_c, group_m = int(hist_c[digit_sel]), int(hist_m[digit_sel])
            prefix |= digit_sel << shift
        g = group_c
        take = -(-(want - above_m) // (group_m // g)) if by_mass else want - above_c
        assert 1 <= take, (take, g)
        t = prefix << 16
        if take < g:
            t |= 0xFFFF - self.nth_lowest_id(prefix, lo, take)
        return max(t, lo)

    def nth_lowest_id(self, ord_bits, lo, rank):
        k = self.keys
        member = ((k >> np.uint64(16)) == np.uint64(ord_bits)) & (k >= np.uint64(lo))
        counts = [int(member[self.chunk(w)].sum()) for w in range(self.W)]
        incl = np.cumsum(counts)
        L = int(np.argmax(incl >= rank))
        rem = rank - (incl[L] - counts[L])
        ids = self.chunk(L)
        hits = ids[member[ids]]
        return int(hits[rem - 1])

    def run(self, temperature, top_k, top_p, seed, draw):
        x, V = self.x, self.V
        if np.isnan(x).any():
            return ref.NAN_CODE
        if np.isposinf(x).any():
            return ref.POS_INF_CODE
        m = x.max()
        if np.isneginf(m):
            return ref.ALL_NEG_INF_CODE
        if np.float32(temperature) == 0:
            return int(np.argmax(x == m))
        inv_t = np.float32(1.0) / np.float32(temperature)
        q = ref.masses(x, m, inv_t)
        thr = 0
        if 0 < top_k < V:
            thr = self.select(q, 0, False, top_k, 1.0)
        if np.float32(top_p) < 1:
            thr = self.select(q, thr, True, 0, top_p)
        kept = self.keys >= np.uint64(thr)
        qk = np.where(kept, q, np.uint64(0))
        part = [int(qk[self.chunk(w)].sum(dtype=np.uint64)) for w in range(self.W)] + [0] * (32 - self.W)
        incl = np.cumsum(np.array(part, dtype=object))
        total = incl[31]
        target = (ref.draw_bits(seed, draw) * total) >> 64
        L = next(l for l in range(32) if incl[l] > target)
        acc = incl[L] - part[L]
        for i in self.chunk(L):
            acc += int(qk[i])
            if acc > target:
                return int(i)
        raise AssertionError("the walk ran past its chunk")


def random_case(rng, V):
    style = rng.integers(0, 6)
    if style == 0:
        x = rng.standard_normal(V) * rng.uniform(0.1, 8)
    elif style == 1:
        x = rng.integers(-3, 3, V).astype(np.float64)  # many ties
    elif style == 2:
        x = np.full(V, rng.uniform(-2, 2))  # all equal
    elif style == 3:
        x = rng.standard_normal(V) * 1e-6 + 5.0  # a tight spread: masses tie after the float exp
    elif style == 4:
        x = rng.standard_normal(V) * 30  # most masses underflow to 0
    else:
        x = np.where(rng.random(V) < 0.5, -0.0, 0.0) + rng.integers(0, 2, V)  # signed zeros and ones
    x = x.astype(np.float32)
    if V > 2 and rng.random() < 0.5:
        x[rng.random(V) < 0.3] = -np.inf
        x[rng.integers(0, V)] = rng.uniform(-1, 1)
    temperature = float(rng.choice([0.0, 0.05, 0.7, 1.0, 1.5, 100.0]))
    top_k = int(rng.choice([0, 0, 1, 2, 3, 17, 40, max(1, V - 1), V, V + 5]))
    top_p = float(rng.choice([1.0, 1.0, 0.01, 0.3, 0.5, 0.9, 0.999]))
    return x, temperature, top_k, top_p, int(rng.integers(0, 2**64, dtype=np.uint64)), int(rng.integers(1, 2**40))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=5)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    sizes = [1, 2, 7, 33, 255, 256, 1000, 1025, 4097]
    # then the large vocabulary, a few rows (the emulation is slow there)
    vocabs = [sizes[n % len(sizes)] for n in range(a.rows)] + [65536] * 6
    bad = 0
    for V in vocabs:
        case = random_case(rng, V)
        want = ref.sample_row(*case)
        got = Kernel(case[0]).run(*case[1:])
        if got != want:
            bad += 1
            print(f"MISMATCH V={V} T={case[1]} k={case[2]} p={case[3]}: kernel {got}, reference {want}")
    print(f"emulate_sample_kernel: {len(vocabs)} rows, {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
