"""Baseline for the HSPMN benchmarks: a dense Llama-style block of the same sizes, in PyTorch.

x -> RMSNorm -> Q/K/V (GQA) -> RoPE -> causal SDPA -> O -> +x -> RMSNorm -> SwiGLU -> +,
bf16, torch.compile (default mode). Every token attends: this is what HSPMN's sparse queries are
measured against, side by side in the same ci/gpu.sh call.

    python3 native/bench/dense_block.py --mode throughput|longctx|train|all [--json OUT.json]

Prints one line per configuration (tok/s, ms, peak GB) and writes them as JSON.
"""

import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from bench_common import arg_parser, configs, event_median_ms, failed, measured, run_configs, warm_for, write_json


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


def bench(fn, iters, warmup=3, warmup_s=0.0):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    warm_for(warmup_s, fn, torch.cuda.synchronize)
    return event_median_ms(fn, iters)


def run(name, B, S, train, block, iters, warmup_s=0.0):
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
        ms = bench(step, iters, warmup_s=warmup_s)
    except torch.OutOfMemoryError:
        return failed(name, B, S, train, "out of memory")
    return measured(name, B, S, train, ms, torch.cuda.max_memory_allocated() / 2**30)


def main():
    ap = arg_parser(__doc__)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    block = DenseBlock().cuda().to(torch.bfloat16)
    fwd = block if args.no_compile else torch.compile(block)

    def run_one(name, B, S, train):
        t0 = time.time()
        r = run(name, B, S, train, fwd, args.iters, warmup_s=args.warmup_s)
        r["compile"] = not args.no_compile
        r["wall_s"] = round(time.time() - t0, 1)
        return r

    results = run_configs(configs("dense", args.mode), run_one)
    write_json(args.json, results, gpu=torch.cuda.get_device_name(), torch=torch.__version__)


if __name__ == "__main__":
    sys.exit(main())
