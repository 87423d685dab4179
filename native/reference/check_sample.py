"""hspmn_sample (the sample_tokens op) against the definition of native/README.md "Sampling", bit for bit;
prints each check, a summary line, and exits 1 when any check fails.

    .venv/bin/python native/reference/check_sample.py [--backend cpu|cuda] [--lib native/build/libhspmn.so]

--backend cpu   the CPU op against sampling_ref.py (numpy float32 + Python integers) on random rows of
                every mode (greedy, temperature, top-k, top-p, both; ties, -inf entries, signed zeros,
                underflowing masses) for V in 1, 2, 7, 33, 255, 256, 1000, 1025, 4097 and 65536; bad rows
                (NaN, +Inf, only -Inf: the status names the first, the other rows are still sampled); and
                a chi-square test of the frequencies of many draws against the exact distribution
                (fixed seed: deterministic, it cannot flake).
--backend cuda  the CUDA op (device tensors; host tensors once, through the staging path) against the
                CPU op of the same library on the same rows, and against sampling_ref.py; bad rows and
                then a good call (the op's status words must reset between launches); 20000 rows in one
                call (the last-CTA ticket over many CTAs); the chi-square test on the GPU's draws; then the
                kernel's time per launch from torch.profiler (CUPTI) for n = 1, 32 at V = 256 and 65536.
"""

import argparse
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sampling_ref as ref  # noqa: E402
from device_trace import device_trace  # noqa: E402
from emulate_sample_kernel import random_case  # noqa: E402
from hspmn_ctypes import F32, HOST, I32, Context, Lib, SamplingParams  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
NON_FINITE = 11
SIZES = [1, 2, 7, 33, 255, 256, 1000, 1025, 4097]

failures = 0


def check(ok, what):
    global failures
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures += 1


class Op:
    """hspmn_sample on one context; every call makes and destroys its tensors."""

    def __init__(self, lib, backend):
        self.lib = lib
        self.ctx = Context(lib, backend, 2)

    def __call__(self, x, params, memory=None):
        x = np.ascontiguousarray(x, dtype=np.float32)
        n, V = x.shape
        saved = self.ctx.memory
        if memory is not None:
            self.ctx.memory = memory
        try:
            lt = self.ctx.tensor(F32, [n, V], x)
            tt = self.ctx.tensor(I32, [n])
        finally:
            self.ctx.memory = saved
        P = (SamplingParams * n)()
        for r, (t, k, p, seed, draw) in enumerate(params):
            P[r].temperature, P[r].top_k, P[r].top_p, P[r].seed, P[r].draw = t, k, p, seed, draw
        status = self.lib.sample(self.ctx.h, lt, P, tt)
        msg = self.lib.last_error().decode() if status else ""
        tokens = self.ctx.read(tt, I32, [n])
        for h in (lt, tt):
            self.lib.ok(self.lib.tensor_destroy(h), "tensor_destroy")
            self.ctx.tensors.remove(h)
        return status, tokens, msg

    def sync(self):
        self.lib.ok(self.lib.context_synchronize(self.ctx.h), "synchronize")

    def close(self):
        self.ctx.close()


def batches(rng, rows_per_size, big_rows):
    """[(V, x [n, V], params)] of random cases, rows of one V per batch."""
    out = []
    for V in SIZES:
        left = rows_per_size
        while left > 0:
            n = min(left, 64)
            cases = [random_case(rng, V) for _ in range(n)]
            out.append((V, np.stack([c[0] for c in cases]), [c[1:] for c in cases]))
            left -= n
    cases = [random_case(rng, 65536) for _ in range(big_rows)]
    out.append((65536, np.stack([c[0] for c in cases]), [c[1:] for c in cases]))
    return out


def check_rows(op, rng, rows_per_size, big_rows, other=None, label="reference"):
    """op against sampling_ref (and against `other`, an Op, when given) on random batches."""
    bad_ref = bad_other = total = 0
    for V, x, params in batches(rng, rows_per_size, big_rows):
        status, got, msg = op(x, params)
        if status != 0:
            check(False, f"V={V}: status {status}: {msg}")
            continue
        if other is not None:
            s2, want2, msg2 = other(x, params)
            mism = int((got != want2).sum()) if s2 == 0 else len(params)
            bad_other += mism
            for r in np.flatnonzero(got != want2)[:3]:
                print(f"      V={V} row {r} {params[r][:3]}: {got[r]} vs CPU {want2[r]}")
        for r, p in enumerate(params):
            want = ref.sample_row(x[r], *p)
            total += 1
            if got[r] != want:
                bad_ref += 1
                if bad_ref <= 5:
                    print(f"      V={V} row {r} T={p[0]} k={p[1]} p={p[2]}: got {got[r]}, {label} {want}")
    check(bad_ref == 0, f"{total} random rows (V {SIZES} and 65536, every mode) equal sampling_ref.py: "
                        f"{bad_ref} differ")
    if other is not None:
        check(bad_other == 0, f"the same {total} rows equal the CPU op of this library: {bad_other} differ")


def check_bad_rows(op):
    rng = np.random.default_rng(3)
    V = 300
    x = rng.standard_normal((8, V)).astype(np.float32)
    x[5, 17] = np.nan
    x[3, :] = -np.inf
    x[6, 2] = np.inf
    params = [(1.0, 0, 1.0, 7, r + 1) if r % 2 else (0.0, 0, 1.0, 0, 1) for r in range(8)]
    status, got, msg = op(x, params)
    check(status == NON_FINITE and "row 3" in msg and "-Inf" in msg,
          f"rows 3 (only -inf), 5 (NaN), 6 (+Inf): status {status}, message '{msg}' names row 3")
    want = [ref.sample_row(x[r], *params[r]) for r in range(8)]
    got = [int(t) for t in got]
    check(got == want and got[3] == -3 and got[5] == -1 and got[6] == -2,
          f"bad rows hold -3, -1, -2 and the good rows are sampled: {got} (want {want})")
    for row, value, words in ((0, np.nan, "NaN"), (0, np.inf, "+Inf")):
        y = x[:1].copy()
        y[0, 9] = value
        status, got, msg = op(y, params[:1])
        check(status == NON_FINITE and f"row {row} holds {words}" in msg, f"one row with {words}: '{msg}'")
    status, got, msg = op(x[:2], params[:2])  # after failed calls: the status words must be clean again
    check(status == 0 and list(got) == [ref.sample_row(x[r], *params[r]) for r in range(2)],
          f"a good call after the bad ones: status {status} {msg}")


def chi_square_critical(df, z=4.753):
    """Wilson-Hilferty: the chi-square value exceeded with probability ~1e-6 (z = 4.753) at df degrees."""
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + z * math.sqrt(h)) ** 3


def check_chi_square(op, draws):
    """Frequencies of `draws` draws (one row each, draw indices 1..draws) against the exact distribution."""
    rng = np.random.default_rng(11)
    base = (rng.standard_normal(40) * 1.5).astype(np.float32)
    base[[3, 9]] = base[0]  # ties
    base[[20, 21]] = -np.inf
    for T, k, p in ((1.0, 0, 1.0), (0.6, 0, 1.0), (1.3, 7, 1.0), (0.9, 0, 0.8), (1.0, 12, 0.7)):
        x = np.broadcast_to(base, (draws, base.size))
        params = [(T, k, p, 0xC0FFEE, d + 1) for d in range(draws)]
        status, got, msg = op(x, params)
        if status != 0:
            check(False, f"chi-square T={T} k={k} p={p}: status {status}: {msg}")
            continue
        prob = ref.distribution(base, T, k, p)
        # The definition's distribution is the softmax of logits / T over the kept set, to float32: each
        # mass is off by the exp polynomial (< 3e-7) and the rounding of x = (l - max) / T (2^-23 |x|),
        # the normalisation by at most the worst of those. Tokens below 2^-16 of the top one are left
        # out: their truncation to multiples of 2^-46 is a larger share of them.
        kept = prob > 0
        xs = (base.astype(np.float64) - base.max()) / T
        soft = np.where(kept, np.exp(xs), 0.0)
        soft /= soft.sum()
        big = kept & (soft >= soft.max() * 2.0 ** -16)
        worst = float(np.max(np.abs(prob[big] - soft[big]) / soft[big]))
        bound = 2 * (3e-7 + 2.0 ** -23 * float(np.max(np.abs(xs[big]))))
        check(worst < bound, f"T={T} k={k} p={p}: the sampled distribution is the float64 softmax over the kept "
                             f"set to {worst:.1e} relative (bound {bound:.1e})")
        obs = np.bincount(got, minlength=base.size).astype(np.float64)
        exp = prob * draws
        outside = int(obs[prob == 0].sum())
        big = exp >= 5
        o = np.append(obs[big], obs[~big & (prob > 0)].sum())
        e = np.append(exp[big], exp[~big & (prob > 0)].sum())
        keep = e > 0
        chi2 = float((((o - e) ** 2)[keep] / e[keep]).sum())
        df = int(keep.sum()) - 1
        crit = chi_square_critical(df)
        check(outside == 0 and chi2 < crit,
              f"chi-square T={T} k={k} p={p}: {draws} draws, chi2 {chi2:.1f} < {crit:.1f} (df {df}, p 1e-6), "
              f"{outside} outside the kept set")


def profile_kernel_us(op, x, params, iters):
    """Mean device time of sample_tokens_kernel per launch from a torch.profiler (CUPTI) trace, as
    native/bench/kernel_breakdown.py reads it; or None and why."""
    def run():
        for _ in range(iters):
            op(x, params)
        op.sync()

    def durations(trace):
        return [float(e.get("dur", 0.0)) for e in trace.get("traceEvents", [])
                if e.get("ph") == "X" and e.get("cat") == "kernel" and "sample_tokens_kernel" in e.get("name", "")]

    durs, _, why = device_trace(run, durations, "sample_tokens_kernel")
    return (float(np.mean(durs)), f"{len(durs)} launches") if durs else (None, why)


def timing(op):
    rng = np.random.default_rng(2)
    modes = {"greedy": (0.0, 0, 1.0), "temperature 0.8": (0.8, 0, 1.0), "top-k 40 + top-p 0.9": (0.8, 40, 0.9),
             "top-p 0.9": (0.8, 0, 0.9)}
    print("kernel time per launch (torch.profiler, mean of 30; logits N(0, 2^2)):")
    for V in (256, 65536):
        for n in (1, 32):
            x = (rng.standard_normal((n, V)) * 2).astype(np.float32)
            cells = []
            for name, (T, k, p) in modes.items():
                params = [(T, k, p, 5, r + 1) for r in range(n)]
                op(x, params)  # warm: the op's scratch, the module
                us, why = profile_kernel_us(op, x, params, 30)
                if us is None:
                    t0 = time.perf_counter()
                    for _ in range(30):
                        op(x, params)
                    cells.append(f"{name}: (no profiler: {why}; whole call {1e6 * (time.perf_counter() - t0) / 30:.0f} us)")
                else:
                    cells.append(f"{name} {us:.1f} us")
            print(f"  V={V:5d} n={n:2d}: " + ", ".join(cells))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--lib", default=os.path.join(ROOT, "native", "build", "libhspmn.so"))
    ap.add_argument("--rows", type=int, default=300, help="random rows per vocabulary size")
    ap.add_argument("--big-rows", type=int, default=24, help="random rows at V = 65536")
    ap.add_argument("--draws", type=int, default=100_000, help="draws per chi-square case")
    a = ap.parse_args()
    lib = Lib(a.lib)
    rng = np.random.default_rng(1)
    op = Op(lib, a.backend)
    if a.backend == "cpu":
        check_rows(op, rng, a.rows, a.big_rows)
    else:
        cpu = Op(lib, "cpu")
        check_rows(op, rng, a.rows, a.big_rows, other=cpu)
        x = (rng.standard_normal((5, 1000)) * 3).astype(np.float32)
        params = [(0.7, 30, 0.9, 1, 9), (1.0, 0, 1.0, 2, 3), (0.0, 0, 1.0, 0, 1), (2.0, 0, 0.5, 3, 1), (1.0, 999, 0.99, 4, 77)]
        s1, t1, _ = op(x, params, memory=HOST)
        s2, t2, _ = cpu(x, params)
        check(s1 == 0 and s2 == 0 and np.array_equal(t1, t2),
              f"host tensors on the CUDA backend (staged): {t1.tolist()} vs the CPU's {t2.tolist()}")
        n = 20000
        x = rng.standard_normal((n, 7)).astype(np.float32)
        x[12345, 3] = np.nan
        x[17000, :] = -np.inf
        params = [(1.0, 3, 0.9, 99, r + 1) for r in range(n)]
        s1, t1, m1 = op(x, params)
        s2, t2, m2 = cpu(x, params)
        check(s1 == NON_FINITE and "row 12345" in m1 and np.array_equal(t1, t2),
              f"{n} rows in one launch, bad rows 12345 and 17000: '{m1}', tokens equal the CPU's")
        cpu.close()
    check_bad_rows(op)
    check_chi_square(op, a.draws)
    if a.backend == "cuda":
        timing(op)
    op.close()
    print(f"check_sample --backend {a.backend}: {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
