"""Checks that two golden sets agree up to float64 round-off.

    python native/reference/compare_goldens.py A_DIR B_DIR

Same files, same metadata, same tensor names/dtypes/shapes; BF16 and I32 tensors identical bit for
bit (they are inputs or discrete routing); F32 tensors within F32_ULPS float32 ulps (they are
float64 results rounded once to float32, so a different float64 summation order moves them by at
most an ulp or so). Exits 1 on any difference, printing one line per file either way.
"""

import json
import math
import os
import sys

import numpy as np

import golden_io
from hspmn_ref import BlockConfig

F32_ULPS = 2
# A float64 sum that cancels keeps an error relative to its largest terms, not to its result, so
# an element far below the tensor's scale may move by many of its own ulps. Such an element is
# accepted within this fraction of the tensor's largest magnitude (~1e4 float64 epsilons).
CANCELLATION_FLOOR = 1e-12


def ordered_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> int64 in which adjacent floats differ by 1 (and -0 == +0)."""
    bits = a.astype("<f4").view("<i4").astype(np.int64)
    return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def compare_f32(a: np.ndarray, b: np.ndarray):
    """-> (ok, max ulp distance, count outside tolerance)."""
    if not (np.array_equal(np.isnan(a), np.isnan(b))):
        return False, math.inf, int(np.sum(np.isnan(a) != np.isnan(b)))
    finite = ~np.isnan(a)
    ulps = np.abs(ordered_bits(a[finite]) - ordered_bits(b[finite]))
    scale = max(float(np.max(np.abs(a[finite]), initial=0.0)), float(np.max(np.abs(b[finite]), initial=0.0)))
    near = np.abs(a[finite].astype(np.float64) - b[finite].astype(np.float64)) <= CANCELLATION_FLOOR * scale
    bad = (ulps > F32_ULPS) & ~near
    return not bad.any(), int(ulps.max(initial=0)), int(bad.sum())


def block_config(text: str):
    """A golden's config as a BlockConfig: a field absent from a golden written before the field existed is
    its default, so adding a block option (ARCHITECTURE.md) leaves the committed goldens valid."""
    return BlockConfig(**json.loads(text))


def compare_metadata(ma: dict, mb: dict):
    problems = []
    if set(ma) != set(mb):
        problems.append(f"metadata keys {sorted(ma)} vs {sorted(mb)}")
    for key in sorted(set(ma) & set(mb)):
        if key == "margin":
            # computed in float64 like the tensors; a summation-order change may move its last digits
            fa, fb = float(ma[key]), float(mb[key])
            if not (fa == fb or abs(fa - fb) <= 1e-12 * max(abs(fa), abs(fb))):
                problems.append(f"margin {ma[key]} vs {mb[key]}")
        elif key == "config":
            if block_config(ma[key]) != block_config(mb[key]):
                problems.append(f"{key} {ma[key]} vs {mb[key]}")
        elif key == "forward":
            if json.loads(ma[key]) != json.loads(mb[key]):
                problems.append(f"{key} {ma[key]} vs {mb[key]}")
        elif ma[key] != mb[key]:
            problems.append(f"{key} {ma[key]!r} vs {mb[key]!r}")
    return problems


def compare_file(path_a: str, path_b: str):
    ma, ta = golden_io.read(path_a)
    mb, tb = golden_io.read(path_b)
    problems = compare_metadata(ma, mb)
    if list(ta) != list(tb):
        problems.append(f"tensor names {list(ta)} vs {list(tb)}")
    worst_ulps = 0
    for name in ta:
        if name not in tb:
            continue
        (da, sa, ra), (db, sb, rb) = ta[name], tb[name]
        if (da, sa) != (db, sb):
            problems.append(f"{name}: {da}{list(sa)} vs {db}{list(sb)}")
            continue
        if da in ("BF16", "I32"):
            if ra != rb:
                na, nb = golden_io.as_numpy(da, sa, ra), golden_io.as_numpy(db, sb, rb)
                problems.append(f"{name}: {int(np.sum(na != nb))} elements differ ({da} must be bitwise equal)")
        elif da == "F32":
            ok, ulps, nbad = compare_f32(golden_io.as_numpy(da, sa, ra), golden_io.as_numpy(db, sb, rb))
            worst_ulps = max(worst_ulps, ulps)
            if not ok:
                problems.append(f"{name}: {nbad} elements beyond {F32_ULPS} ulps (max {ulps})")
        else:
            problems.append(f"{name}: unexpected dtype {da}")
    # the standard library must read what golden_io wrote
    try:
        from safetensors import safe_open
        for path in (path_a, path_b):
            with safe_open(path, framework="pt") as f:
                if sorted(f.keys()) != sorted(ta if path == path_a else tb):
                    problems.append(f"{path}: safetensors library sees other tensor names")
    except Exception as e:  # a malformed file is a difference to report, not a crash
        problems.append(f"safetensors library cannot read the file: {e}")
    return problems, len(ta), worst_ulps


def main(argv) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    dir_a, dir_b = argv[1], argv[2]
    files_a = sorted(f for f in os.listdir(dir_a) if f.endswith(".safetensors"))
    files_b = sorted(f for f in os.listdir(dir_b) if f.endswith(".safetensors"))
    failed = False
    for f in sorted(set(files_a) ^ set(files_b)):
        print(f"{f}: only in {dir_a if f in files_a else dir_b}")
        failed = True
    if not files_a and not files_b:
        print("no golden files in either directory")
        failed = True
    for f in sorted(set(files_a) & set(files_b)):
        problems, ntensors, worst = compare_file(os.path.join(dir_a, f), os.path.join(dir_b, f))
        status = "OK  " if not problems else "DIFF"
        print(f"{status} {f}: {ntensors} tensors, max F32 distance {worst} ulps")
        for p in problems:
            print(f"       {p}")
        failed |= bool(problems)
    print("goldens match" if not failed else "goldens DIFFER")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
