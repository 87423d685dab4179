"""What every check_*.py that runs libhspmn against the reference shares: the command line, running the
cases, the table of checks and the verdict (exit status 1 past any bound, on any error or leak); and what
the self-tests (test_*.py) share: their registry and runner.

A check collects rows (case, what, value, bound); a row with bound math.inf is printed for information and
not counted. A case that raises RuntimeError (a failed library call: Lib.ok) is a failure of that case,
and the next case still runs.
"""

import argparse
import ctypes as C
import math
import os
import sys
import time

import torch

import hspmn_lm
import hspmn_ref
from hspmn_ctypes import BACKENDS, AllocStats, Lib

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def parser(description=None, cases=False, backend=True):
    """--lib, --backend, --threads (without backend: --lib alone, for a check that runs both backends) and
    --case NAME, repeatable, when the check has named cases."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default=os.path.join(ROOT, "native", "build", "libhspmn.so"))
    if backend:
        ap.add_argument("--backend", choices=sorted(BACKENDS), default="cpu")
        ap.add_argument("--threads", type=int, default=2)
    if cases:
        ap.add_argument("--case", action="append", help="run only these cases (by name)")
    return ap


def parse(ap):
    args = ap.parse_args()
    torch.set_num_threads(max(1, getattr(args, "threads", 2)))
    return args


def selected(cases, args):
    """The cases (tuples named by their first item) that --case picked, or all; a name of no case is an error."""
    wanted = getattr(args, "case", None)
    unknown = set(wanted or []) - {c[0] for c in cases}
    if unknown:
        raise SystemExit(f"--case: no case named {', '.join(sorted(unknown))} "
                         f"(cases: {', '.join(c[0] for c in cases)})")
    return [c for c in cases if not wanted or c[0] in wanted]


def run_cases(items, run):
    """run(item) for every item; returns the failures it reported plus one per item that raised."""
    failures = []
    for item in items:
        try:
            failures += run(item) or []
        except RuntimeError as e:
            name = item[0] if isinstance(item, tuple) else getattr(item, "__name__", str(item))
            failures.append(f"{name}: {e}")
    return failures


class Case:
    """One case's rows: check() counts one against its bound (past it, a failure of the case), exact() a
    bitwise comparison, info() one printed only."""

    def __init__(self, name, rows, failures=None):
        self.name, self.rows = name, rows
        self.failures = [] if failures is None else failures

    def check(self, what, err, bound):
        self.rows.append((self.name, what, err, bound))
        if not (err <= bound):
            self.failures.append(f"{self.name}: {what} {err:.3g} > {bound:g}")

    def exact(self, what, same):
        self.check(what + " (bitwise)", 0.0 if same else math.inf, 0.0)

    def info(self, what, value):
        self.rows.append((self.name, "(info) " + what, value, math.inf))


def lm_config(lib, vocab_size, num_layers, block):
    """The reference's LMConfig of a model the library builds from hspmn_block_default_params with the
    fields of `block` (a dict in hspmn_block_params' names that names its routing) set."""
    defaults = lib.block_default_params()
    fields = {k: getattr(defaults, k) for k, _ in defaults._fields_ if k != "reserved"}
    fields.update(block)
    ref_block = hspmn_ref.BlockConfig(**{k: fields[k] for k in hspmn_ref.BlockConfig.__dataclass_fields__})
    return hspmn_lm.LMConfig(vocab_size=vocab_size, num_layers=num_layers, block=ref_block).validate()


def main(description, name, cases, run_case, options=None, label=lambda args: ""):
    """The whole main of a check over named cases: the command line (plus options(ap) when given), then
    run_case(lib, args, case, rows) -> failures for every case --case picked, then the verdict. The summary
    line reads `name --backend B<label(args)>: N cases, C checks, F failures`; returns the exit status."""
    ap = parser(description, cases=True)
    if options:
        options(ap)
    args = parse(ap)
    lib = Lib(args.lib)
    picked = selected(cases, args)
    rows = []
    failures = run_cases(picked, lambda c: run_case(lib, args, c, rows))
    return verdict(lib, rows, failures, f"{name} --backend {args.backend}{label(args)}: {len(picked)} cases, "
                   "{checks} checks, {failures} failures")


def leaks(lib):
    """A failure line when the library still holds objects, else None; and the peak bytes it held."""
    st = AllocStats()
    lib.ok(lib.alloc_stats_get(C.byref(st)), "alloc_stats_get")
    if st.live_tensors or st.live_blocks or st.live_contexts or st.live_bytes:
        return (f"leak after all cases: tensors {st.live_tensors}, blocks {st.live_blocks}, "
                f"contexts {st.live_contexts}, bytes {st.live_bytes}"), st.peak_bytes
    return None, st.peak_bytes


def verdict(lib, rows, failures, summary, header=("case", "check")):
    """Prints the table, the leak check and every failure, then the `summary` line formatted with {checks}
    (rows with a finite bound), {failures} and {peak} (bytes the library held at most); returns the exit
    status. Each check lists its own failures (a row past its bound among them)."""
    w0 = max([len(header[0])] + [len(str(r[0])) for r in rows])
    w1 = max([len(header[1])] + [len(str(r[1])) for r in rows])
    print(f"{header[0]:<{w0}} {header[1]:<{w1}} {'value':>10} {'bound':>9}")
    for case, what, err, bound in rows:
        flag = "" if err <= bound else "  FAIL"
        print(f"{case:<{w0}} {what:<{w1}} {err:>10.3g} {bound:>9.2g}{flag}")
    failures = list(failures)
    leak, peak = leaks(lib)
    if leak:
        failures.append(leak)
    for f in failures:
        print("FAIL", f)
    checks = sum(1 for r in rows if r[3] != math.inf)
    print(summary.format(checks=checks, failures=len(failures), peak=peak))
    return 1 if failures else 0


class Tests:
    """The self-tests of one test_*.py: `test = Tests()`, then @test on each test function (no arguments,
    an assert that fails raises), then `sys.exit(test.main())`. Every test runs even after one fails."""

    def __init__(self):
        self.fns = []

    def __call__(self, fn):
        self.fns.append(fn)
        return fn

    def main(self, timed=False):
        """Runs every test (PASS / FAIL and why, each; with timed its seconds too); returns the exit status."""
        failed = 0
        t_all = time.time()
        for fn in self.fns:
            t0 = time.time()
            try:
                fn()
                print(f"PASS {fn.__name__}" + (f" ({time.time() - t0:.1f} s)" if timed else ""))
            except Exception as e:  # noqa: BLE001 - report every failing test, not only the first
                failed += 1
                print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}")
        took = f" in {time.time() - t_all:.1f} s" if timed else ""
        print(f"{os.path.basename(sys.argv[0])}: {len(self.fns) - failed}/{len(self.fns)} passed{took}")
        return 1 if failed else 0
