"""HSPMN_DOWN_RESIDUAL=1 (the block's down projection and residual from down_residual's sm_90a kernel, m
never written, in inference and training forwards; off by default) against HSPMN_DOWN_RESIDUAL=0 (a
cuBLASLt GEMM into f32 m, then residual_out, as when unset), through the CUDA backend:
every result must be the same bits. The kernel sums each product in cuBLASLt's order
(native/tests/down_residual_cuda) and adds x, then o, in residual_out's order, so nothing may move.
Prints each check, a summary line, and exits 1 on a failure.

    python3 native/reference/check_down_residual.py --lib build-gpu/libhspmn.so

The cases are check_swiglu_gemm.py's (the same shapes, forwards, backward, dropout, capture, errors)
under this variable, and the same proof that the kernel runs: HSPMN_DOWN_RESIDUAL_CLUSTER is read only
where it launches, so a malformed value must fail an inference forward under HSPMN_DOWN_RESIDUAL=1 and
leave one under HSPMN_DOWN_RESIDUAL=0 unharmed (on a GPU other than sm_90 that proof fails, as it must).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_harness  # noqa: E402
from check_streams import run_errors  # noqa: E402
from check_swiglu_gemm import SHAPES, run_proof, run_shape  # noqa: E402
from hspmn_ctypes import Lib  # noqa: E402

ENV = "HSPMN_DOWN_RESIDUAL"
CLUSTER_ENV = "HSPMN_DOWN_RESIDUAL_CLUSTER"


def main():
    args = check_harness.parse(check_harness.parser(__doc__, backend=False))
    lib = Lib(args.lib)
    rows, failures = [], []

    def case(name):
        return check_harness.Case(name, rows, failures)

    items = [(s[0], lambda s=s: run_shape(lib, case(s[0]), *s, env=ENV)) for s in SHAPES]
    items.append(("errors", lambda: run_errors(lib, case("errors"), ENV, ("2", "yes"))))
    items.append(("kernel runs", lambda: run_proof(lib, case("kernel runs"), ENV, CLUSTER_ENV, on="1")))
    failures += check_harness.run_cases(items, lambda item: item[1]())
    return check_harness.verdict(lib, rows, failures, "check_down_residual: {checks} checks, {failures} failures")


if __name__ == "__main__":
    sys.exit(main())
