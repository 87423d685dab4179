"""Writes the golden cases: one safetensors file per case, format of native/README.md.

    python native/reference/make_goldens.py --out DIR

Deterministic: every tensor comes from a torch.Generator seeded per case, and golden_io writes the
same bytes for the same tensors. Weights are scaled so each stream's contribution is comparable to
x (a 1 % change of any parameter shows in out or in a gradient), and each case's routing margin is
kept >= MIN_MARGIN so a float32/bf16 backend makes the same discrete choice as this float64 one.
"""

import argparse
import dataclasses
import json
import math
import os
import sys
from typing import Optional

import numpy as np
import torch

import golden_io
from hspmn_ref import BlockConfig, HSPMNBlock, bf16_round, f32, gumbel_noise, topk_count

MIN_MARGIN = 1e-3
MAX_ROUTER_DRAWS = 100
D_AUX = 0.7
# Linear weights are N(0, gain^2/fan_in). Gains picked so the SwiGLU output m and the attention
# output o of a selected token both have rms near rms(x) = 1: the product silu(a)*b grows the MLP
# stream, the softmax average over keys shrinks the attention one.
LINEAR_GAIN = {"reflex.gate": 1.0, "reflex.up": 1.0, "reflex.down": 1.2,
               "attn.q": 1.5, "attn.k": 1.5, "attn.v": 2.0, "attn.o": 2.0}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    description: str
    cfg: BlockConfig
    B: int
    S: int
    seed: int                       # data seed; the router is drawn from seed + 1, seed + 2, ...
    noise: bool = False             # training with Gumbel noise from (noise_seed, step, layer)
    noise_seed: int = 0
    step: int = 0
    layer: int = 0
    aux_target: float = -1.0        # as hspmn_forward_params: < 0 means cfg.sparsity_k
    log_temp: float = -0.25         # t = 0.78: a case with t = 1 would hide a missing dt/dlog_temp
    route_frac: Optional[float] = None  # threshold: router.b set so about this fraction routes


def cfg(**kw) -> BlockConfig:
    base = dict(dim=32, num_heads=4, num_kv_heads=2, mlp_ratio=4, conv_kernel=3, routing="topk",
                rope_base=10000.0, sparsity_k=0.2, router_sparsity_coef=0.1, router_entropy_coef=0.01,
                norm_eps=1e-6)
    base.update(kw)
    return BlockConfig(**base).validate()


CASES = [
    Case("topk_gqa", "topk, GQA H=4 Hkv=2, k=7 of S=37",
         cfg(dim=48, num_heads=4, num_kv_heads=2), B=2, S=37, seed=1000),
    Case("topk_mha", "topk, MHA Hkv=H=4, k=12 of S=50, three sequences",
         cfg(dim=32, num_heads=4, num_kv_heads=4, sparsity_k=0.25), B=3, S=50, seed=2000),
    Case("topk_mqa", "topk, MQA H=8 Hkv=1, default rho 0.2 with S*rho integral (k=13 of S=65)",
         cfg(dim=64, num_heads=8, num_kv_heads=1, mlp_ratio=2), B=1, S=65, seed=3000),
    Case("threshold_gqa", "threshold, GQA H=4 Hkv=2, about 30% routed, counts differ per sequence",
         cfg(routing="threshold"), B=2, S=45, seed=4000, route_frac=0.3),
    Case("train_noise_topk", "training with Gumbel noise, topk, seed uses both key words, step 7, layer 3",
         cfg(dim=32, num_heads=2, num_kv_heads=1, mlp_ratio=3, sparsity_k=0.3), B=2, S=41, seed=5000,
         noise=True, noise_seed=0x1234DEADBEEF, step=7, layer=3),
    Case("train_noise_threshold", "training with Gumbel noise, threshold, conv_kernel 4, step 1000, layer 1",
         cfg(routing="threshold", conv_kernel=4), B=2, S=33, seed=6000,
         noise=True, noise_seed=42, step=1000, layer=1, route_frac=0.3),
    Case("topk_k1", "topk with k = max(1, floor(20*0.04)) = 1",
         cfg(sparsity_k=0.04), B=2, S=20, seed=7000),
    Case("dense_rho1", "topk with rho = 1: every token routed (dense attention)",
         cfg(sparsity_k=1.0), B=2, S=24, seed=8000),
    Case("temp_inside", "log_temp 0.3 (t = 1.35, inside the clamp), GQA H=4 Hkv=1",
         cfg(num_heads=4, num_kv_heads=1), B=2, S=30, seed=9000, log_temp=0.3),
    Case("temp_clamped_high", "log_temp 0.9 (exp = 2.46, clamped to t = 2): grad.router.log_temp is 0",
         cfg(routing="threshold"), B=2, S=28, seed=10000, log_temp=0.9, route_frac=0.4),
    Case("temp_clamped_low", "log_temp -2.5 (exp = 0.08, clamped to t = 0.1): grad.router.log_temp is 0",
         cfg(), B=1, S=24, seed=11000, log_temp=-2.5),
    Case("aux_anneal", "aux_target 0.6 != sparsity_k 0.2 (warm-up annealing)",
         cfg(), B=2, S=26, seed=12000, aux_target=0.6),
]


def normal(gen, shape, std):
    return torch.randn(shape, generator=gen, dtype=torch.float64) * std


def draw_weights(block: HSPMNBlock, gen: torch.Generator) -> dict:
    """Every parameter but the router's."""
    c = block.cfg
    out = {}
    for name, p in block.state_dict().items():
        if name.startswith("router."):
            continue
        if name.endswith(".norm"):
            v = 1.0 + normal(gen, p.shape, 0.1)
        elif name == "reflex.conv":
            v = normal(gen, p.shape, 1.0 / math.sqrt(c.conv_kernel))
        else:
            v = normal(gen, p.shape, LINEAR_GAIN[name] / math.sqrt(p.shape[1]))
        out[name] = bf16_round(v)
    return out


def routing_margin(scores: torch.Tensor, cfg_: BlockConfig) -> float:
    """topk: smallest gap between the k-th and (k+1)-th score of a sequence; threshold: min |n|."""
    if cfg_.routing == "threshold":
        return scores.abs().min().item()
    S = scores.shape[1]
    k = topk_count(S, cfg_.sparsity_k)
    if k >= S:
        return math.inf
    top = torch.sort(scores, dim=1, descending=True).values
    return (top[:, k - 1] - top[:, k]).min().item()


def check_k_unambiguous(S: int, rho: float) -> None:
    """floor(S*rho) must not depend on how a backend multiplies (decimal, f64 of f32 rho, f32)."""
    ways = {max(1, math.floor(S * rho)), topk_count(S, rho),
            max(1, math.floor(float(np.float32(S) * np.float32(rho))))}
    if len(ways) != 1:
        raise SystemExit(f"S={S} rho={rho}: k is ambiguous between backends {sorted(ways)}")


def draw_router(case: Case, block: HSPMNBlock, x: torch.Tensor, noise: Optional[torch.Tensor]):
    """Router parameters whose routing margin is >= MIN_MARGIN (and, for threshold with B > 1,
    whose counts differ between sequences); re-drawn from the next seed otherwise."""
    c = case.cfg
    D = c.dim
    g = noise.to(torch.float64) if noise is not None else torch.zeros(case.B, case.S, dtype=torch.float64)
    log_temp = bf16_round(torch.tensor([case.log_temp], dtype=torch.float64))
    t = min(max(math.exp(log_temp.item()), 0.1), 2.0)
    for attempt in range(MAX_ROUTER_DRAWS):
        gen = torch.Generator().manual_seed(case.seed + 1 + attempt)
        w = bf16_round(normal(gen, (D,), 1.0 / math.sqrt(D)))
        base = x @ w + g
        if c.routing == "threshold":
            # put b between the two scores around the wanted quantile, so about route_frac routes
            flat = torch.sort(base.flatten(), descending=True).values
            i = max(1, round(case.route_frac * flat.numel()))
            b = -(flat[i - 1] + flat[i]) / 2
        else:
            b = normal(gen, (), 0.5)
        b = bf16_round(b.reshape(1))
        scores = (base + b) / t
        margin = routing_margin(scores, c)
        if margin < MIN_MARGIN:
            continue
        if c.routing == "threshold" and case.B > 1:
            counts = (torch.sigmoid(scores) > 0.5).sum(dim=1)
            if len(set(counts.tolist())) < 2:
                continue
        return {"router.w": w, "router.b": b, "router.log_temp": log_temp}, margin, attempt
    raise SystemExit(f"{case.name}: no router draw with margin >= {MIN_MARGIN} in {MAX_ROUTER_DRAWS} tries")


def make_case(case: Case):
    c = case.cfg
    if c.routing == "topk":
        check_k_unambiguous(case.S, c.sparsity_k)
    gen = torch.Generator().manual_seed(case.seed)
    block = HSPMNBlock(c)
    x = bf16_round(normal(gen, (case.B, case.S, c.dim), 1.0))
    weights = draw_weights(block, gen)
    d_out = bf16_round(normal(gen, (case.B, case.S, c.dim), 1.0))
    d_aux = torch.tensor([f32(D_AUX)], dtype=torch.float64)
    noise = gumbel_noise(case.noise_seed, case.step, case.layer, case.B, case.S) if case.noise else None
    router, _, attempt = draw_router(case, block, x, noise)
    weights.update(router)
    block.load_state_dict(weights)

    xg = x.clone().requires_grad_(True)
    res = block(xg, training=True, noise=noise, aux_target=case.aux_target)
    loss = (res.out * d_out).sum() + (res.aux * d_aux).sum()
    loss.backward()
    margin = routing_margin(res.scores.detach(), c)  # the block's own scores are what is recorded
    if margin < MIN_MARGIN:
        raise SystemExit(f"{case.name}: margin {margin} of the block's scores is below {MIN_MARGIN}")

    metadata = {
        "config": c.to_json(),
        "forward": json.dumps({"training": 1, "noise": int(case.noise), "seed": case.noise_seed,
                               "step": case.step, "layer": case.layer, "aux_target": case.aux_target}),
        "margin": repr(margin) if math.isfinite(margin) else "Infinity",
        "description": case.description,
    }
    params = block.state_dict()
    tensors = [("x", "BF16", x)]
    tensors += [(name, "BF16", p) for name, p in params.items()]
    if noise is not None:
        tensors.append(("noise", "F32", noise))
    tensors += [
        ("logits", "F32", res.logits),
        ("probs", "F32", res.probs),
        ("indices", "I32", res.indices),
        ("counts", "I32", res.counts),
        ("out", "F32", res.out),
        ("aux", "F32", res.aux),
        ("d_out", "BF16", d_out),
        ("d_aux", "F32", d_aux),
        ("d_x", "F32", xg.grad),
    ]
    tensors += [("grad." + name, "F32", p.grad) for name, p in block.named_parameters()]

    # how visible each stream is next to x (reported, so a too-small contribution is noticed)
    with torch.no_grad():
        stats = {
            "counts": res.counts.tolist(),
            "router_draw": attempt,
            "rms_x": x.pow(2).mean().sqrt().item(),
            "rms_out_minus_x": (res.out - x).pow(2).mean().sqrt().item(),
            "aux": res.aux.item(),
            "grad.log_temp": block.router.log_temp.grad.item(),
        }
    return metadata, tensors, margin, stats


def verify_file(path: str, case: Case) -> None:
    """Reads the file back through the safetensors library and recomputes the case from its own
    tensors: what a consumer loads is what the reference computed with."""
    from safetensors.torch import load_file
    t = {k: v.to(torch.float64) if v.is_floating_point() else v for k, v in load_file(path).items()}
    block = HSPMNBlock(case.cfg)
    block.load_state_dict({name: t[name] for name in block.state_dict()})
    x = t["x"].clone().requires_grad_(True)
    res = block(x, training=True, noise=t.get("noise"), aux_target=case.aux_target)
    ((res.out * t["d_out"]).sum() + (res.aux * t["d_aux"]).sum()).backward()
    got = {"logits": res.logits, "probs": res.probs, "out": res.out, "aux": res.aux, "d_x": x.grad}
    got.update({"grad." + n: p.grad for n, p in block.named_parameters()})
    for name, v in got.items():
        if not torch.equal(v.detach().to(torch.float32), t[name].to(torch.float32)):
            raise SystemExit(f"{path}: {name} read back differs from a recomputation")
    if not (torch.equal(res.indices, t["indices"].long()) and torch.equal(res.counts, t["counts"].long())):
        raise SystemExit(f"{path}: routing read back differs from a recomputation")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory for the .safetensors files")
    ap.add_argument("--only", default=None, help="comma-separated case names (debugging)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # one reduction order, whatever the machine's core count
    os.makedirs(args.out, exist_ok=True)
    names = set(args.only.split(",")) if args.only else None
    total = 0
    for case in CASES:
        if names is not None and case.name not in names:
            continue
        metadata, tensors, margin, stats = make_case(case)
        path = os.path.join(args.out, case.name + ".safetensors")
        golden_io.write(path, metadata, tensors)
        verify_file(path, case)
        size = os.path.getsize(path)
        total += size
        print(f"{case.name:24s} {size:8d} B  margin {metadata['margin']:>22s}  counts {stats['counts']}"
              f"  rms(out-x)/rms(x) {stats['rms_out_minus_x'] / stats['rms_x']:.2f}"
              f"  aux {stats['aux']:.5f}  dlog_temp {stats['grad.log_temp']:+.4g}  router draw {stats['router_draw']}")
    print(f"total {total} bytes in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
