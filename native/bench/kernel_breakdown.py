"""Where the GPU time of one HSPMN block goes: CUDA kernel time per kernel and per category.

    python3 native/bench/kernel_breakdown.py --lib build-gpu/libhspmn.so [--train] [--batch 64] [--seq 4096]
        [--dim 2048 --heads 16 --kv-heads 4 --mlp-ratio 4 --rho 0.2] [--iters 10 --warmup 3]
        [--nan-policy reject|propagate] [--json OUT.json] [--trace TRACE.json]

Runs the block through libhspmn's C ABI (native/reference/hspmn_ctypes.py) on device tensors: an
inference forward per iteration, or with --train a training forward + backward. After --warmup
iterations, --iters more run under torch.profiler.profile(activities=[ProfilerActivity.CUDA]): CUPTI
records every kernel, memcpy and memset of the process, so the library's own CUDA kernels, the Triton
attention cubins (loaded with cuModuleLoadData) and cuBLASLt's GEMM kernels are all seen although
torch launches none of them. Each iteration ends with hspmn_context_synchronize.

Output: a table of categories and of the kernels (ms per iteration, % of the GPU time = the sum of all
recorded kernel, memcpy and memset durations, calls per iteration), the wall time per iteration, and
the GEMM total's achieved TFLOP/s from the block's GEMM FLOP count (gemm_flops). --json writes the
same numbers; --trace keeps the profiler's Chrome trace. The last line starts with "breakdown
summary:" (ci/gpu.sh copies it into its summary).

When the profiler records no device activity (torch without CUDA, CUPTI unavailable or refused), the
script says so and falls back to timing each block call: host clock between two
hspmn_context_synchronize calls (CUDA events cannot bracket the calls: the library's stream is private
and non-blocking, so an event on another stream does not order with its work). Then there is no
per-kernel data, only forward / backward milliseconds, and the JSON says "per_kernel": false.

Routing is top-k (the library's default): the GEMM FLOP count needs the number of selected tokens,
k = max(1, floor(S * rho)) per sequence. The attention's FLOPs depend on the selected positions and
are not counted. --backend cpu runs the same plumbing on the CPU backend (host tensors) for testing
without a GPU; it always takes the fallback.
"""

import argparse
import ctypes as C
import json
import math
import os
import re
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "native", "reference"))
from device_trace import device_trace  # noqa: E402
from hspmn_ctypes import AllocStats, Lib  # noqa: E402

BF16, F32 = 0, 1
HOST, DEVICE = 0, 1
BACKENDS = {"cpu": (0, HOST), "cuda": (1, DEVICE)}
NAN_POLICIES = {"reject": 0, "propagate": 1}

# ---- kernel names and categories -----------------------------------------------------------------

GEMM = "GEMM (cuBLASLt)"
ATTN_FWD = "sqdk_attention fwd (Triton)"
ATTN_BWD = "sqdk_attention bwd (Triton)"
COPIES = "convert / copies / memset"
OTHER = "other"
FUSED_SWIGLU = "gate|up GEMM + swiglu (sm_90a)"
# Our kernels by base name (native/src/cuda/kernels/*.cu), checked before the GEMM patterns.
CATEGORY_PREFIXES = [
    ("sqdk_attention_fwd", ATTN_FWD),
    ("sqdk_attention_bwd", ATTN_BWD),
    # rms_norm_pair_conv: both norms and the reflex conv of a whole-sequence pass in one kernel
    ("rms_norm_pair_conv", "rms_norm + causal_conv (fused)"),
    ("rms_norm_", "rms_norm"),  # also rms_norm_pair_* (both norms of a block)
    ("causal_conv_", "causal_conv"),
    # swiglu_gemm's sm_90a kernel: the gate|up GEMM with the activation (src/cuda/sm90a/), before "swiglu_"
    ("swiglu_gemm_kernel", FUSED_SWIGLU),
    ("swiglu_", "swiglu"),
    ("rope_", "rope"),
    ("router_", "router / route_select / aux"),
    ("route_select", "router / route_select / aux"),
    ("aux_loss_", "router / route_select / aux"),
    ("gumbel_noise", "router / route_select / aux"),
    ("gather_selected", "gather / scatter / gate"),
    ("scatter_add_selected", "gather / scatter / gate"),
    ("gate_scatter_", "gather / scatter / gate"),
    ("row_slots", "gather / scatter / gate"),
    ("residual_out", "residual out (x + m + y o, bf16)"),
    ("bf16_to_f32", COPIES),
    ("f32_to_bf16", COPIES),
    ("reduce_partials", COPIES),  # convert.cu: the in-order sum of rms_norm's and causal_conv's dw partials
    ("non_finite", "non_finite scan (NaN policy)"),
    ("fill_u64", "non_finite scan (NaN policy)"),
]
CATEGORIES = [GEMM, FUSED_SWIGLU, ATTN_FWD, ATTN_BWD, "rms_norm + causal_conv (fused)", "rms_norm", "causal_conv",
              "swiglu", "rope",
              "router / route_select / aux", "gather / scatter / gate", "residual out (x + m + y o, bf16)", COPIES,
              "non_finite scan (NaN policy)", OTHER]
# cuBLAS/cuBLASLt kernel families (Hopper nvjet, sm90 xmma/cutlass, Ampere s16816 ..., split-K reduce).
GEMM_PATTERN = re.compile(r"gemm|nvjet|xmma|cutlass|cublas|splitk|s16816|s1688|wgmma|gemv", re.IGNORECASE)


def short_name(name: str) -> str:
    """The function name with its template arguments, without return type, namespaces or parameters:
    'void hspmn::cuda::(anonymous namespace)::rms_norm_forward_kernel<true>(__nv_bfloat16 const*, ...)'
    -> 'rms_norm_forward_kernel<true>'. Names that are not C++ signatures come back unchanged."""
    s = name.replace("(anonymous namespace)", "").strip()
    depth, cut = 0, len(s)
    for i, ch in enumerate(s):  # the parameter list: the first '(' outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            cut = i
            break
    s = s[:cut].strip()
    depth, start = 0, 0
    for i, ch in enumerate(s):  # the last '::' or space outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0 and (ch == " " or (ch == ":" and i + 1 < len(s) and s[i + 1] == ":")):
            start = i + (2 if ch == ":" else 1)
    return s[start:] or name


def base_name(name: str) -> str:
    s = short_name(name)
    return s.split("<", 1)[0]


def categorize(name: str, kind: str = "kernel") -> str:
    """kind: the trace's 'cat' ('kernel', 'gpu_memcpy', 'gpu_memset')."""
    if kind in ("gpu_memcpy", "gpu_memset") or name.startswith(("Memcpy", "Memset")):
        return COPIES
    base = base_name(name)
    for prefix, cat in CATEGORY_PREFIXES:
        if base.startswith(prefix):
            return cat
    if GEMM_PATTERN.search(name):
        return GEMM
    return OTHER


# ---- counting ------------------------------------------------------------------------------------


def topk_count(S: int, rho: float) -> int:
    """k = max(1, floor(S * rho)) with rho as float32 and the product exact (native/README.md)."""
    return min(S, max(1, math.floor(S * float(np.float32(rho)))))


def gemm_flops(B: int, S: int, D: int, H: int, Hkv: int, mlp_ratio: int, rho: float, train: bool) -> int:
    """FLOPs of the block's cuBLASLt GEMMs per iteration (2 per multiply-add), as cuda_block.cu runs them.

    Forward: gate, up [N, D] x [D, F] and down [N, F] x [F, D] over all N = B*S tokens; K, V
    [N, D] x [D, KV]; Q and O [BC, D] x [D, D] over the BC = B*k selected rows. Backward: every GEMM's
    weight gradient and input gradient, each the forward's size (every input needs its gradient:
    c, act, a, a_sel, attn), so a training iteration is 3x the forward."""
    N, F, KV = B * S, mlp_ratio * D, Hkv * (D // H)
    BC = B * topk_count(S, rho)
    fwd = 2 * N * D * F * 3 + 2 * N * D * KV * 2 + 2 * BC * D * D * 2
    return fwd * 3 if train else fwd


def device_events(trace: dict) -> list:
    """[(name, cat, duration_us)] of the device activities of a torch.profiler Chrome trace."""
    out = []
    for e in trace.get("traceEvents", []):
        if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"):
            out.append((e.get("name", "?"), e["cat"], float(e.get("dur", 0.0))))
    return out


def aggregate(events: list, iters: int, flops: int) -> dict:
    """Per-kernel and per-category totals of device events [(name, cat, us)] over iters iterations."""
    total_us = sum(us for _, _, us in events)
    kernels, cats = {}, {c: {"us": 0.0, "calls": 0} for c in CATEGORIES}
    for name, kind, us in events:
        key = short_name(name) if kind == "kernel" else name
        k = kernels.setdefault(key, {"us": 0.0, "calls": 0, "category": categorize(name, kind), "full_name": name})
        k["us"] += us
        k["calls"] += 1
        cats[k["category"]]["us"] += us
        cats[k["category"]]["calls"] += 1

    def row(name, v, extra=None):
        r = {"name": name, "ms_per_iter": v["us"] / 1e3 / iters,
             "percent": 100.0 * v["us"] / total_us if total_us else 0.0, "calls_per_iter": v["calls"] / iters}
        r.update(extra or {})
        return r

    kernel_rows = [row(n, v, {"category": v["category"], "avg_us": v["us"] / v["calls"], "full_name": v["full_name"]})
                   for n, v in kernels.items()]
    kernel_rows.sort(key=lambda r: -r["ms_per_iter"])
    cat_rows = [row(c, cats[c]) for c in CATEGORIES if cats[c]["calls"]]
    cat_rows.sort(key=lambda r: -r["ms_per_iter"])
    # The fused kernel's time holds the gate|up GEMM that gemm_flops counts (and the activation, a pass the
    # unfused path spends in "swiglu"): both GEMM categories together against the FLOP count.
    gemm_ms = (cats[GEMM]["us"] + cats[FUSED_SWIGLU]["us"]) / 1e3 / iters
    return {
        "gpu_ms_per_iter": total_us / 1e3 / iters,
        "categories": cat_rows,
        "kernels": kernel_rows,
        "gemm": {"flop_per_iter": flops, "ms_per_iter": gemm_ms,
                 "tflops": flops / (gemm_ms * 1e-3) / 1e12 if gemm_ms > 0 else None},
    }


def format_tables(result: dict, top: int = 40) -> str:
    lines = []
    if not result.get("per_kernel"):
        lines.append("no per-kernel data was available (" + result.get("why_no_kernels", "") + "); per call, "
                     "host clock between hspmn_context_synchronize calls:")
        for k, v in result["fallback_ms"].items():
            lines.append(f"  {k:<28} {v:9.3f} ms")
        lines.append(f"  {'wall per iteration':<28} {result['wall_ms_per_iter']:9.3f} ms")
        return "\n".join(lines)
    g = result["gemm"]
    lines.append(f"GPU time {result['gpu_ms_per_iter']:.3f} ms per iteration (sum of kernel, memcpy and memset "
                 f"durations), wall {result['wall_ms_per_iter']:.3f} ms")
    tf = f"{g['tflops']:.1f} TFLOP/s" if g["tflops"] else "n/a"
    lines.append(f"GEMM (cuBLASLt and the fused gate|up kernel): {g['flop_per_iter'] / 1e12:.3f} TFLOP per iteration "
                 f"in {g['ms_per_iter']:.3f} ms: {tf}")
    lines.append("")
    lines.append(f"{'category':<32} {'ms/iter':>9} {'% GPU':>7} {'calls/iter':>11}")
    for r in result["categories"]:
        lines.append(f"{r['name']:<32} {r['ms_per_iter']:>9.3f} {r['percent']:>7.1f} {r['calls_per_iter']:>11.1f}")
    lines.append("")
    lines.append(f"{'kernel':<64} {'category':<28} {'ms/iter':>9} {'% GPU':>7} {'calls':>6} {'avg us':>9}")
    for r in result["kernels"][:top]:
        name = r["name"] if len(r["name"]) <= 64 else r["name"][:61] + "..."
        lines.append(f"{name:<64} {r['category']:<28} {r['ms_per_iter']:>9.3f} {r['percent']:>7.1f} "
                     f"{r['calls_per_iter']:>6.1f} {r['avg_us']:>9.1f}")
    if len(result["kernels"]) > top:
        lines.append(f"... {len(result['kernels']) - top} more in the JSON")
    return "\n".join(lines)


def summary_line(result: dict) -> str:
    c = result["config"]
    head = f"breakdown summary: {'train' if c['train'] else 'inference'} B={c['B']} S={c['S']}: "
    if not result.get("per_kernel"):
        return head + f"wall {result['wall_ms_per_iter']:.2f} ms/iter, no per-kernel data"
    cats = {r["name"]: r for r in result["categories"]}
    parts = [f"GPU {result['gpu_ms_per_iter']:.2f} ms/iter (wall {result['wall_ms_per_iter']:.2f})"]
    g = result["gemm"]
    if GEMM in cats:
        parts.append(f"GEMM {cats[GEMM]['percent']:.0f}% at {g['tflops']:.0f} TFLOP/s")
    attn = sum(cats[n]["percent"] for n in (ATTN_FWD, ATTN_BWD) if n in cats)
    parts.append(f"attention {attn:.0f}%")
    rest = [r for r in result["categories"] if r["name"] not in (GEMM, ATTN_FWD, ATTN_BWD)]
    if rest:
        parts.append(f"largest other: {rest[0]['name']} {rest[0]['percent']:.0f}%")
    return head + ", ".join(parts)


# ---- running the block ---------------------------------------------------------------------------


class Session:
    """One context, one block, its tensors; everything destroyed by close()."""

    def __init__(self, lib, backend: str, nan_policy: str):
        self.lib, self.memory = lib, BACKENDS[backend][1]
        p = lib.context_default_params()
        p.backend, p.nan_policy = BACKENDS[backend][0], NAN_POLICIES[nan_policy]
        h = C.c_void_p()
        lib.ok(lib.context_create(C.byref(p), C.byref(h)), "context_create")
        self.h, self.tensors, self.block = h, [], None

    def tensor(self, dtype, shape, data=None):
        h = C.c_void_p()
        dims = (C.c_int64 * len(shape))(*shape)
        self.lib.ok(self.lib.tensor_create(self.h, dtype, self.memory, len(shape), dims, C.byref(h)), "tensor_create")
        self.tensors.append(h)
        if data is not None:
            data = np.ascontiguousarray(data)
            self.lib.ok(self.lib.tensor_copy_in(h, data.ctypes.data, data.nbytes), "tensor_copy_in")
        return h

    def sync(self):
        self.lib.ok(self.lib.context_synchronize(self.h), "context_synchronize")

    def close(self):
        if self.block:
            self.lib.ok(self.lib.block_destroy(self.block), "block_destroy")
        for t in self.tensors:
            self.lib.ok(self.lib.tensor_destroy(t), "tensor_destroy")
        self.lib.ok(self.lib.context_destroy(self.h), "context_destroy")


def random_bf16(shape, rng) -> np.ndarray:
    """A 16M-value random bf16 pattern tiled over the tensor (as hspmn_block.py): real data, no minutes of RNG."""
    n = int(np.prod(shape))
    u = rng.standard_normal(min(n, 1 << 24), dtype=np.float32).view(np.uint32)
    pat = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.resize(pat, n).reshape(shape)


def profile_device(step, s: Session, iters: int):
    """Runs step() iters times under torch.profiler (device_trace.py); -> (events, wall ms per iteration,
    trace or why-not)."""
    def run():
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
            s.sync()
        return (time.perf_counter() - t0) * 1e3 / iters

    events, wall, trace = device_trace(run, device_events, "CUDA activity")
    return events or [], wall, trace


def time_calls(calls: dict, s: Session, iters: int) -> dict:
    """Median host time of each call between two hspmn_context_synchronize, in ms."""
    out = {}
    for name, fn in calls.items():
        ts = []
        for _ in range(iters):
            s.sync()
            t0 = time.perf_counter()
            fn()
            s.sync()
            ts.append((time.perf_counter() - t0) * 1e3)
        out[name] = sorted(ts)[len(ts) // 2]
    return out


def run(a) -> dict:
    lib = Lib(a.lib)
    s = Session(lib, a.backend, a.nan_policy)
    B, S, D = a.batch, a.seq, a.dim
    config = {"B": B, "S": S, "D": D, "H": a.heads, "Hkv": a.kv_heads, "mlp_ratio": a.mlp_ratio, "rho": a.rho,
              "routing": "topk", "train": a.train, "iters": a.iters, "warmup": a.warmup, "nan_policy": a.nan_policy,
              "backend": a.backend}
    try:
        lib.alloc_stats_reset_peak()
        bp = lib.block_default_params()
        bp.dim, bp.num_heads, bp.num_kv_heads, bp.mlp_ratio, bp.sparsity_k = D, a.heads, a.kv_heads, a.mlp_ratio, a.rho
        bp.routing = 0
        blk = C.c_void_p()
        lib.ok(lib.block_create(s.h, C.byref(bp), 1, C.byref(blk)), "block_create")
        s.block = blk
        rng = np.random.default_rng(0)
        x = s.tensor(BF16, (B, S, D), random_bf16((B, S, D), rng))
        out = s.tensor(BF16, (B, S, D))
        fp = lib.forward_default_params()
        fp.training = 1 if a.train else 0
        if a.train:
            d_out = s.tensor(BF16, (B, S, D), random_bf16((B, S, D), rng))
            d_x, aux = s.tensor(BF16, (B, S, D)), s.tensor(F32, (1,))
            bw = lib.backward_default_params()

            def forward():
                lib.ok(lib.block_forward(blk, C.byref(fp), x, out, aux), "forward")

            def backward():
                lib.ok(lib.block_backward(blk, C.byref(bw), d_out, None, d_x), "backward")

            def step():
                forward()
                backward()
        else:
            def forward():
                lib.ok(lib.block_forward(blk, C.byref(fp), x, out, None), "forward")

            step = forward
        for _ in range(a.warmup):
            step()
        s.sync()

        flops = gemm_flops(B, S, D, a.heads, a.kv_heads, a.mlp_ratio, a.rho, a.train)
        events, wall, info = profile_device(step, s, a.iters) if a.backend == "cuda" else \
            ([], None, "the CPU backend launches no CUDA kernels")
        if events:
            result = aggregate(events, a.iters, flops)
            result.update(per_kernel=True, source="torch.profiler (CUPTI)", wall_ms_per_iter=wall)
            if a.trace:
                with open(a.trace, "w") as f:
                    json.dump(info, f)
        else:
            if a.train:
                fb = time_calls({"forward (training)": forward}, s, a.iters)
                # backward alone: each timed call needs the activations of a forward just before it
                ts = []
                for _ in range(a.iters):
                    forward()
                    s.sync()
                    t0 = time.perf_counter()
                    backward()
                    s.sync()
                    ts.append((time.perf_counter() - t0) * 1e3)
                fb["backward"] = sorted(ts)[len(ts) // 2]
            else:
                fb = time_calls({"forward (inference)": forward}, s, a.iters)
            result = {"per_kernel": False, "source": "host clock between hspmn_context_synchronize",
                      "why_no_kernels": info, "fallback_ms": fb, "wall_ms_per_iter": sum(fb.values()),
                      "gemm": {"flop_per_iter": flops}}
        st = AllocStats()
        lib.ok(lib.alloc_stats_get(C.byref(st)), "alloc_stats_get")
        result["peak_gib"] = st.peak_bytes / 2 ** 30
        result["config"] = config
        result["tool"] = "native/bench/kernel_breakdown.py"
        return result
    finally:
        s.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=os.path.join(ROOT, "build-gpu", "libhspmn.so"))
    ap.add_argument("--backend", choices=sorted(BACKENDS), default="cuda")
    ap.add_argument("--train", action="store_true", help="training forward + backward per iteration")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--mlp-ratio", type=int, default=4)
    ap.add_argument("--rho", type=float, default=0.2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--nan-policy", choices=sorted(NAN_POLICIES), default="reject",
                    help="the context's NaN policy (reject, the library default, scans x on every call)")
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--trace", help="keep the profiler's Chrome trace here")
    a = ap.parse_args(argv)
    if a.iters < 1 or a.warmup < 0:
        ap.error("--iters must be >= 1 and --warmup >= 0")
    c = f"B={a.batch} S={a.seq} D={a.dim} H={a.heads} Hkv={a.kv_heads} F={a.mlp_ratio * a.dim} rho={a.rho}"
    print(f"{'training forward + backward' if a.train else 'inference forward'}, {c}, {a.iters} iterations "
          f"after {a.warmup} warm-up, backend {a.backend}", flush=True)
    try:
        result = run(a)
    except (OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_tables(result))
    print(f"peak {result['peak_gib']:.2f} GiB held by the library")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {a.json}")
    print(summary_line(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
