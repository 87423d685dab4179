"""HSPMN_RMS_NORM_RESIDENT=1 (the block backward's pair-norm input gradient from the kernel that keeps each
row in registers and reads it once, rms_norm.cu's rms_norm_pair_backward_out_resident_kernel, where
D <= 2048; the default) against 0 (the kernel that reads each row twice), through the CUDA backend:
every result must be the same bits, since the one-read kernel makes the same loads, sums and terms in the
same order. Prints each check, a summary line, and exits 1 on a failure.

    python3 native/reference/check_rms_norm_resident.py --lib build-gpu/libhspmn.so

The cases are check_swiglu_gemm.py's shapes (forwards, training with and without dropout, a graph) plus
one at D = 2048 (the kernel's widest rows, all 8 of a lane's steps), under this variable; a malformed
value must fail a training backward with HSPMN_ERR_INVALID_ARGUMENT naming it.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_harness  # noqa: E402
from check_swiglu_gemm import SHAPES, run_backward_errors, run_shape  # noqa: E402
from hspmn_ctypes import Lib  # noqa: E402

ENV = "HSPMN_RMS_NORM_RESIDENT"
WIDE = ("d2048_b1_s160", 1, 160, 2048, 16, 4, 4)


def main():
    args = check_harness.parse(check_harness.parser(__doc__, backend=False))
    lib = Lib(args.lib)
    rows, failures = [], []

    def case(name):
        return check_harness.Case(name, rows, failures)

    items = [(s[0], lambda s=s: run_shape(lib, case(s[0]), *s, env=ENV)) for s in SHAPES + [WIDE]]
    items.append(("errors", lambda: run_backward_errors(lib, case("errors"), ENV, ("2", "yes"))))
    failures += check_harness.run_cases(items, lambda item: item[1]())
    return check_harness.verdict(lib, rows, failures, "check_rms_norm_resident: {checks} checks, {failures} failures")


if __name__ == "__main__":
    sys.exit(main())
