"""What the block benchmarks share (dense_block.py, hspmn_block.py): the configurations of each mode
(the CUDA issue's shapes), the command line, a result's fields and printed line, and the JSON file, so
the dense baseline and HSPMN are run and reported alike.
"""

import argparse
import json
import time

MODES = ("throughput", "longctx", "train", "all")


def arg_parser(doc):
    """--mode, --iters, --warmup-s and --json; a benchmark adds its own options."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--mode", default="all", choices=MODES)
    ap.add_argument("--iters", type=int, default=10)
    # A GPU that was idle starts a burst of work at lowered clocks for about 0.4 s (an H200, BENCHMARKS.md
    # 2026-12-07), inside which a short timed run can fall; seconds of load before timing measure the
    # steady state instead. 0 keeps the earlier tables' method (a few warm-up calls only).
    ap.add_argument("--warmup-s", type=float, default=0.0,
                    help="run each configuration for this many seconds before timing it")
    ap.add_argument("--json")
    return ap


def warm_for(seconds, step, sync):
    """Calls step() and sync() until `seconds` of wall time have passed (none when seconds <= 0)."""
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        step()
        sync()


def event_median_ms(fn, n, before=None):
    """Median of n calls of fn, each timed alone between two CUDA events on the current stream and
    synchronised; before(), when given, is queued right before each (not timed)."""
    import torch  # the torch benchmarks' alone: hspmn_block.py times through the library

    ts = []
    for _ in range(n):
        if before:
            before()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return sorted(ts)[n // 2]


def configs(prefix, mode):
    """(name, B, S, train) of each configuration `mode` runs, names starting with `prefix`."""
    cfgs = []
    if mode in ("throughput", "all"):
        cfgs.append((f"{prefix} throughput", 64, 4096, False))
    if mode in ("longctx", "all"):
        cfgs += [(f"{prefix} longctx", 1, 65536, False), (f"{prefix} longctx", 1, 131072, False)]
    if mode in ("train", "all"):
        cfgs.append((f"{prefix} train", 64, 4096, True))
    return cfgs


def measured(name, B, S, train, ms, peak_gib, **extra):
    """A configuration that ran: ms the median time of one call, peak_gib the peak memory."""
    return {"name": name, "B": B, "S": S, "train": train, **extra, "ms": ms, "tok_s": B * S / (ms / 1e3),
            "peak_gib": peak_gib}


def failed(name, B, S, train, error):
    return {"name": name, "B": B, "S": S, "train": train, "error": error}


def run_configs(cfgs, run_one):
    """run_one(name, B, S, train) for each configuration, a line printed as each finishes."""
    results = []
    for name, B, S, train in cfgs:
        r = run_one(name, B, S, train)
        results.append(r)
        if "error" in r:
            print(f"{name:18s} B={B:3d} S={S:6d}  {r['error']}", flush=True)
        else:
            print(f"{name:18s} B={B:3d} S={S:6d}  {r['tok_s'] / 1e6:7.3f} M tok/s  {r['ms']:9.2f} ms  "
                  f"peak {r['peak_gib']:6.1f} GiB", flush=True)
    return results


def write_json(path, results, **header):
    """{header..., "results": [...]} to path, when one is given."""
    if path:
        with open(path, "w") as f:
            json.dump({**header, "results": results}, f, indent=1)
