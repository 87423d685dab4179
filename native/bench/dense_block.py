"""Baseline for the HSPMN benchmarks: a dense Llama-style block of the same sizes, in PyTorch.

x -> RMSNorm -> Q/K/V (GQA) -> RoPE -> causal SDPA -> O -> +x -> RMSNorm -> SwiGLU -> +,
bf16, torch.compile (default mode). Every token attends: this is what HSPMN's sparse queries are
measured against, side by side in the same ci/gpu.sh call.

    python3 native/bench/dense_block.py --mode throughput|longctx|train|all [--json OUT.json]

Prints one line per configuration (tok/s, ms, peak GB) and writes them as JSON.
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


class DenseBlock(nn.Module):
    def __init__(self, D=2048, H=16, Hkv=4, mlp_ratio=4, base=10000.0, eps=1e-6):
        super().__init__()
        self.D, self.H, self.Hkv, self.Dh, self.eps, self.base = D, H, Hkv, D // H, eps, base
        Fd = mlp_ratio * D
        self.attn_norm = nn.Parameter(torch.ones(D))
        self.mlp_norm = nn.Parameter(torch.ones(D))
        self.q = nn.Linear(D, D, bias=False)
        self.k = nn.Linear(D, Hkv * self.Dh, bias=False)
        self.v = nn.Linear(D, Hkv * self.Dh, bias=False)
        self.o = nn.Linear(D, D, bias=False)
        self.gate = nn.Linear(D, Fd, bias=False)
        self.up = nn.Linear(D, Fd, bias=False)
        self.down = nn.Linear(Fd, D, bias=False)

    def rope(self, x):
        # x: [B, heads, S, Dh]; rotate-half, angles in float32 (as a typical Llama block does)
        S, Dh = x.shape[2], x.shape[3]
        inv = self.base ** (-torch.arange(0, Dh, 2, device=x.device, dtype=torch.float32) / Dh)
        ang = torch.arange(S, device=x.device, dtype=torch.float32)[:, None] * inv[None, :]
        cos, sin = ang.cos().repeat(1, 2).to(x.dtype), ang.sin().repeat(1, 2).to(x.dtype)
        x1, x2 = x[..., : Dh // 2], x[..., Dh // 2:]
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin

    def forward(self, x):
        B, S, D = x.shape
        a = F.rms_norm(x, (D,), self.attn_norm, self.eps)
        q = self.q(a).view(B, S, self.H, self.Dh).transpose(1, 2)
        k = self.k(a).view(B, S, self.Hkv, self.Dh).transpose(1, 2)
        v = self.v(a).view(B, S, self.Hkv, self.Dh).transpose(1, 2)
        q, k = self.rope(q), self.rope(k)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o(o.transpose(1, 2).reshape(B, S, D))
        m = F.rms_norm(x, (D,), self.mlp_norm, self.eps)
        return x + self.down(F.silu(self.gate(m)) * self.up(m))


def bench(fn, iters, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]


def run(name, B, S, train, block, iters):
    torch.cuda.reset_peak_memory_stats()
    x = torch.randn(B, S, block.D, device="cuda", dtype=torch.bfloat16)
    if train:
        x.requires_grad_(True)
        g = torch.randn_like(x)

        def step():
            block(x).backward(g)
    else:
        def step():
            with torch.inference_mode():
                block(x)
    try:
        ms = bench(step, iters)
    except torch.OutOfMemoryError:
        return {"name": name, "B": B, "S": S, "train": train, "error": "out of memory"}
    peak = torch.cuda.max_memory_allocated() / 2**30
    return {"name": name, "B": B, "S": S, "train": train, "ms": ms, "tok_s": B * S / (ms / 1e3), "peak_gib": peak}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="all", choices=["throughput", "longctx", "train", "all"])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    block = DenseBlock().cuda().to(torch.bfloat16)
    fwd = block if args.no_compile else torch.compile(block)
    cfgs = []
    if args.mode in ("throughput", "all"):
        cfgs.append(("dense throughput", 64, 4096, False))
    if args.mode in ("longctx", "all"):
        cfgs += [("dense longctx", 1, 65536, False), ("dense longctx", 1, 131072, False)]
    if args.mode in ("train", "all"):
        cfgs.append(("dense train", 64, 4096, True))
    results = []
    for name, B, S, train in cfgs:
        t0 = time.time()
        r = run(name, B, S, train, fwd, args.iters)
        r["compile"] = not args.no_compile
        r["wall_s"] = round(time.time() - t0, 1)
        results.append(r)
        if "error" in r:
            print(f"{name:18s} B={B:3d} S={S:6d}  {r['error']}", flush=True)
        else:
            print(f"{name:18s} B={B:3d} S={S:6d}  {r['tok_s'] / 1e6:7.3f} M tok/s  {r['ms']:9.2f} ms  "
                  f"peak {r['peak_gib']:6.1f} GiB", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "results": results}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
