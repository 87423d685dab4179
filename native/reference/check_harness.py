"""What every check_*.py that runs libhspmn against the reference shares: the command line, running the
cases, the table of checks and the verdict (exit status 1 past any bound, on any error or leak).

A check collects rows (case, what, value, bound); a row with bound math.inf is printed for information and
not counted. A case that raises RuntimeError (a failed library call: Lib.ok) is a failure of that case,
and the next case still runs.
"""

import argparse
import ctypes as C
import math
import os

import torch

from hspmn_ctypes import BACKENDS, AllocStats

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def parser(description=None, cases=False):
    """--lib, --backend, --threads (and --case NAME, repeatable, when the check has named cases)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default=os.path.join(ROOT, "native", "build", "libhspmn.so"))
    ap.add_argument("--backend", choices=sorted(BACKENDS), default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    if cases:
        ap.add_argument("--case", action="append", help="run only these cases (by name)")
    return ap


def parse(ap):
    args = ap.parse_args()
    torch.set_num_threads(max(1, args.threads))
    return args


def selected(cases, args):
    """The cases (tuples named by their first item) that --case picked, or all."""
    return [c for c in cases if not getattr(args, "case", None) or c[0] in args.case]


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
