"""HSPMN block in PyTorch: the executable form of shared/design/MODEL.md with the choices of
native/README.md. Every backend is judged against this file.

Computation is float64 on values the caller has rounded to bf16 (inputs and parameters are bf16 at
the ABI); the config's float fields are used as float32, because that is what hspmn_block_params
carries, so the reference computes the same function a backend is asked for.
Op names match the CPU/CUDA backends and their tests: rms_norm, causal_conv, swiglu, rope,
router_logits, gumbel_noise, route_select, aux_loss, sqdk_attention, dropout_mask.

Residual dropout is this project's extension where MODEL.md is silent (native/README.md "Residual
dropout"): in training only, the reflexive branch m and the attention branch o are each multiplied by
an inverted-dropout mask before they reach the residual, out = x + M_m * m + y * (M_o * o), with
M = keep / (1 - p) drawn from Philox keyed by (seed, step, layer, branch, b, s, d) (dropout_mask).
p = 0 (the default) is the block without dropout; evaluation never drops.
"""

import ctypes as C
import dataclasses
import json
import math
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import hspmn_h
from philox import philox4x32_10

TEMP_MIN = 0.1
TEMP_MAX = 2.0


def f32(v: float) -> float:
    """The float32 value a float config field takes at the C ABI."""
    return float(np.float32(v))


def bf16_round(t: torch.Tensor) -> torch.Tensor:
    """t rounded to bfloat16 (nearest even), returned as float64."""
    return t.to(torch.float32).to(torch.bfloat16).to(torch.float64)


# ---- config --------------------------------------------------------------------------------------


def _constant_names(field: str) -> dict:
    """{code: name} of hspmn.h's HSPMN_<FIELD>_<NAME> constants, NAME in lower case ({} when there are none)."""
    prefix = f"HSPMN_{field.upper()}_"
    return {v: k[len(prefix):].lower() for k, v in vars(hspmn_h).items() if k.startswith(prefix)}


# Fields of hspmn_block_params with constants of their own (routing: HSPMN_ROUTING_TOPK ...), which the
# reference and the config JSON spell by name ("topk", "threshold").
NAMED_FIELDS = {f: n for f, _ in hspmn_h.BlockParams._fields_ if (n := _constant_names(f))}


class _BlockConfigMethods:
    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def ffn_dim(self) -> int:
        return self.mlp_ratio * self.dim

    def validate(self) -> "BlockConfig":
        """Raises ValueError whose message starts with the offending field."""
        for name in ("dim", "num_heads", "num_kv_heads", "mlp_ratio", "conv_kernel"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}: must be a positive integer, got {v!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"num_heads: dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_kv_heads: num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}")
        if self.head_dim % 2:
            # rotate-half RoPE pairs channel i with i + Dh/2
            raise ValueError(f"num_heads: head_dim {self.head_dim} must be even for RoPE")
        for name, names in NAMED_FIELDS.items():
            if getattr(self, name) not in names.values():
                raise ValueError(f"{name}: must be {' or '.join(map(repr, names.values()))}, got {getattr(self, name)!r}")
        rho = f32(self.sparsity_k)
        if not (0.0 < rho <= 1.0):
            raise ValueError(f"sparsity_k: must be in (0, 1], got {self.sparsity_k!r}")
        if not (math.isfinite(f32(self.rope_base)) and f32(self.rope_base) > 0.0):
            raise ValueError(f"rope_base: must be positive and finite, got {self.rope_base!r}")
        for name in ("router_sparsity_coef", "router_entropy_coef"):
            v = f32(getattr(self, name))
            if not (math.isfinite(v) and v >= 0.0):
                raise ValueError(f"{name}: must be finite and >= 0, got {getattr(self, name)!r}")
        if not (math.isfinite(f32(self.norm_eps)) and f32(self.norm_eps) >= 0.0):
            raise ValueError(f"norm_eps: must be finite and >= 0, got {self.norm_eps!r}")
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @staticmethod
    def from_json(text: str) -> "BlockConfig":
        return BlockConfig(**json.loads(text)).validate()

    def c_value(self, name: str):
        """Field `name` as hspmn_block_params holds it: a named field's constant, else the value."""
        v = getattr(self, name)
        return {n: code for code, n in NAMED_FIELDS[name].items()}[v] if name in NAMED_FIELDS else v


def _block_fields():
    """(name, type, default) of every field of hspmn_block_params but reserved*, in struct order: the
    generated hspmn_h.BlockParams and the "default V" of hspmn.h's field comments (BLOCK_PARAMS_NOTES)."""
    out = []
    for name, ctype in hspmn_h.BlockParams._fields_:
        if name.startswith("reserved"):
            continue
        default = hspmn_h.BLOCK_PARAMS_NOTES[name][0]
        if name in NAMED_FIELDS:
            out.append((name, str, dataclasses.field(default=NAMED_FIELDS[name][default])))
        else:
            out.append((name, float if ctype in (C.c_float, C.c_double) else int, dataclasses.field(default=default)))
    return out


# The fields and names of hspmn_block_params, taken from the header (a new field needs no edit here
# unless the math uses it); routing is "topk" or "threshold". Frozen: a config is a value.
BlockConfig = dataclasses.make_dataclass("BlockConfig", _block_fields(), bases=(_BlockConfigMethods,), frozen=True,
                                         namespace={"__module__": __name__})


def topk_count(seq_len: int, rho: float) -> int:
    """k = max(1, floor(S * rho)) with rho as float32; S * f32(rho) is exact in float64."""
    return max(1, math.floor(seq_len * f32(rho)))


# ---- ops -----------------------------------------------------------------------------------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # x: [..., D], weight: [D] -> [..., D]
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + f32(eps)) * weight


def causal_conv(h: torch.Tensor, conv: torch.Tensor) -> torch.Tensor:
    # h: [B, S, D], conv: [D, K] -> c: [B, S, D]; c_t = sum_j conv[:, j] * h_{t-(K-1)+j}, h_{<0} = 0
    S = h.shape[1]
    K = conv.shape[1]
    hp = F.pad(h, (0, 0, K - 1, 0))  # zero history only: a token must not see its successors
    c = torch.zeros_like(h)
    for j in range(K):
        c = c + conv[:, j] * hp[:, j:j + S]
    return c


def swiglu(c: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    # c: [..., D], gate/up: [F, D], down: [D, F] -> [..., D]
    return F.linear(F.silu(F.linear(c, gate)) * F.linear(c, up), down)


def rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    # x: [B, N, heads, Dh], positions: [B, N] int (absolute; negative means padding, treated as 0)
    Dh = x.shape[-1]
    half = Dh // 2
    # float64 angles: in float32 the angle itself loses ~0.01 rad at position 131072
    inv_freq = f32(base) ** (-(2.0 * torch.arange(half, dtype=torch.float64)) / Dh)
    ang = positions.clamp(min=0).to(torch.float64)[..., None] * inv_freq  # [B, N, half]
    cos = torch.cos(ang).repeat(1, 1, 2)[:, :, None, :]
    sin = torch.sin(ang).repeat(1, 1, 2)[:, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin


def router_logits(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # x: [B, S, D], w: [D], b: [1] -> l: [B, S]
    return x @ w + b


def router_temperature(log_temp: torch.Tensor) -> torch.Tensor:
    """t = clamp(exp(log_temp), 0.1, 2.0) whose gradient is 0 AT the bounds as well as outside.

    torch.clamp lets the gradient through at a bound; native/README.md says strictly inside.
    """
    t = torch.exp(log_temp)
    inside = (t > TEMP_MIN) & (t < TEMP_MAX)
    return torch.where(inside, t, t.detach().clamp(TEMP_MIN, TEMP_MAX))


def row_keys(B: int, row_offset: int) -> np.ndarray:
    """The rows' indices in the batch the draws are keyed by: row_offset + b mod 2^32, [B] uint64
    (a data-parallel rank's rows [first, first + B) of the global batch draw with row_offset = first)."""
    if row_offset < 0:
        raise ValueError(f"row_offset ({row_offset}) must be >= 0")
    return (np.arange(B, dtype=np.uint64) + np.uint64(row_offset)) & np.uint64(0xFFFFFFFF)


def gumbel_noise(seed: int, step: int, layer: int, B: int, S: int, row_offset: int = 0) -> torch.Tensor:
    """The generator's Gumbel(0, 1) draw for (seed, step, layer): [B, S] float32; row b draws as row
    row_offset + b."""
    mask32 = 0xFFFFFFFF
    seed &= (1 << 64) - 1
    s = np.arange(S, dtype=np.uint64)[None, :]
    b = row_keys(B, row_offset)[:, None]
    counter = (s, b, layer & mask32, step & mask32)
    key = (seed & mask32, seed >> 32)
    bits = philox4x32_10(counter, key)[0]
    bits = np.broadcast_to(bits, (B, S))
    u = ((bits >> np.uint64(8)).astype(np.float64) + 0.5) * 2.0 ** -24  # in (0, 1), never 0 or 1
    g = -np.log(-np.log(u))
    return torch.from_numpy(g.astype(np.float32))


# Stream tags of the two dropout masks, XORed into the high key word: the Gumbel noise uses the seed
# itself as key, so no dropout draw can share a (key, counter) with it, nor the two masks with each other.
DROPOUT_TAG_REFLEX = 0x44524F31  # "DRO1": the mask of m (reflexive stream)
DROPOUT_TAG_ATTN = 0x44524F32    # "DRO2": the mask of o (contextual stream)


def dropout_threshold(p: float) -> int:
    """A draw w (uint32) keeps its element iff w >= ceil(p * 2^32) (p as float32; the product is exact
    in float64), so P(keep) = 1 - p to within 2^-32 and p = 0 keeps everything."""
    return math.ceil(f32(p) * 2.0 ** 32)


def dropout_scale(p: float) -> float:
    """1 / (1 - p) computed in float64 from the float32 p, rounded to float32 (what backends multiply by)."""
    return f32(1.0 / (1.0 - f32(p)))


def dropout_keep(seed: int, step: int, layer: int, tag: int, B: int, S: int, D: int,
                 row_offset: int = 0) -> np.ndarray:
    """The raw draw of every element: [B, S, D] uint64 holding uint32 values.

    Philox4x32-10, key = (seed_lo ^ layer, seed_hi ^ tag), counter = (d >> 2, s, row_offset + b,
    step mod 2^32); element d takes output word d & 3, so one Philox call serves four consecutive features.
    """
    mask32 = 0xFFFFFFFF
    seed &= (1 << 64) - 1
    groups = (D + 3) // 4
    d4 = np.arange(groups, dtype=np.uint64)[None, None, :]
    s = np.arange(S, dtype=np.uint64)[None, :, None]
    b = row_keys(B, row_offset)[:, None, None]
    key = ((seed & mask32) ^ (layer & mask32), (seed >> 32) ^ tag)
    words = philox4x32_10((d4, s, b, step & mask32), key)
    words = [np.broadcast_to(w, (B, S, groups)) for w in words]
    full = np.stack(words, axis=-1).reshape(B, S, groups * 4)  # feature 4g + j is word j of group g
    return full[:, :, :D]


def dropout_mask(seed: int, step: int, layer: int, tag: int, B: int, S: int, D: int, p: float,
                 row_offset: int = 0) -> torch.Tensor:
    """Inverted-dropout multiplier of one branch: [B, S, D] float64, dropout_scale(p) where kept, else 0."""
    keep = dropout_keep(seed, step, layer, tag, B, S, D, row_offset) >= np.uint64(dropout_threshold(p))
    return torch.from_numpy(np.where(keep, dropout_scale(p), 0.0))


def dropout_masks(seed: int, step: int, layer: int, B: int, S: int, D: int, p: float, row_offset: int = 0):
    """(M_m, M_o) of layer `layer`, or None when p == 0 (no dropout at all, bit for bit)."""
    if f32(p) == 0.0:
        return None
    return (dropout_mask(seed, step, layer, DROPOUT_TAG_REFLEX, B, S, D, p, row_offset),
            dropout_mask(seed, step, layer, DROPOUT_TAG_ATTN, B, S, D, p, row_offset))


def route_select(scores: torch.Tensor, routing: str, rho: float):
    """scores n: [B, S] -> indices: [B, C] int64 increasing, padded with -1; counts: [B] int64.

    topk: C = k, the k largest n, equal scores broken by the lower position.
    threshold: C = S, token s selected iff sigmoid(n_s) > 0.5.
    """
    B, S = scores.shape
    pos = torch.arange(S).expand(B, S)
    if routing == "topk":
        k = topk_count(S, rho)
        # stable ascending sort of -n keeps equal scores in position order: lower position wins
        order = torch.sort(-scores, dim=1, stable=True).indices[:, :k]
        indices = torch.sort(order, dim=1).values
        counts = torch.full((B,), k, dtype=torch.int64)
        return indices, counts
    if routing == "threshold":
        selected = torch.sigmoid(scores) > 0.5
        counts = selected.sum(dim=1)
        key = torch.where(selected, pos, pos + S)  # selected first, each group in position order
        indices = torch.sort(key, dim=1).values
        indices = torch.where(torch.arange(S)[None, :] < counts[:, None], indices, torch.full_like(indices, -1))
        return indices, counts
    raise ValueError(f"routing: must be 'topk' or 'threshold', got {routing!r}")


def aux_loss(logits: torch.Tensor, target: float, sparsity_coef: float, entropy_coef: float) -> torch.Tensor:
    # logits l: [B, S] -> aux: [1]
    p = torch.sigmoid(logits)
    # -p ln p - (1-p) ln(1-p) written so it stays finite when p rounds to 0 or 1
    entropy = p * F.softplus(-logits) + (1 - p) * F.softplus(logits)
    aux = f32(sparsity_coef) * (p.mean() - f32(target)) ** 2 + f32(entropy_coef) * entropy.mean()
    return aux.reshape(1)


def sqdk_attention(q_sel: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Sparse queries over dense keys.

    q_sel: [B, C, H, Dh] queries of the selected tokens (RoPE applied)
    k, v:  [B, S, Hkv, Dh] keys (RoPE applied) and values of every token
    positions: [B, C] absolute position of each query, -1 for padding (its output is 0)
    -> [B, C, H, Dh]. Query at position p attends keys 0..p; query head h reads kv head h // (H/Hkv).
    """
    B, C, H, Dh = q_sel.shape
    S, Hkv = k.shape[1], k.shape[2]
    group = H // Hkv
    kh = k.repeat_interleave(group, dim=2)  # [B, S, H, Dh]; head h -> kv head h // group
    vh = v.repeat_interleave(group, dim=2)
    scores = torch.einsum("bchd,bshd->bhcs", q_sel, kh) / math.sqrt(Dh)
    valid = positions >= 0
    # a padded row attends key 0 so its softmax stays finite; its output is zeroed below
    limit = torch.where(valid, positions, torch.zeros_like(positions))
    allowed = torch.arange(S)[None, None, :] <= limit[:, :, None]  # [B, C, S]
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    o = torch.einsum("bhcs,bshd->bchd", probs, vh)
    return o * valid[:, :, None, None].to(o.dtype)


# ---- block ---------------------------------------------------------------------------------------


class BlockOutput(NamedTuple):
    out: torch.Tensor       # [B, S, D]
    aux: torch.Tensor       # [1]
    logits: torch.Tensor    # [B, S] l
    probs: torch.Tensor     # [B, S] sigmoid(l)
    scores: torch.Tensor    # [B, S] n, what routing compares
    indices: torch.Tensor   # [B, C] int64, -1 padded
    counts: torch.Tensor    # [B] int64


class Router(nn.Module):
    def __init__(self, D: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(D, dtype=torch.float64))
        self.b = nn.Parameter(torch.zeros(1, dtype=torch.float64))
        self.log_temp = nn.Parameter(torch.zeros(1, dtype=torch.float64))


class Reflex(nn.Module):
    def __init__(self, D: int, Fd: int, K: int):
        super().__init__()
        self.norm = nn.Parameter(torch.ones(D, dtype=torch.float64))
        self.conv = nn.Parameter(torch.zeros(D, K, dtype=torch.float64))
        self.gate = nn.Parameter(torch.zeros(Fd, D, dtype=torch.float64))
        self.up = nn.Parameter(torch.zeros(Fd, D, dtype=torch.float64))
        self.down = nn.Parameter(torch.zeros(D, Fd, dtype=torch.float64))


class Attn(nn.Module):
    def __init__(self, D: int, kv_dim: int):
        super().__init__()
        self.norm = nn.Parameter(torch.ones(D, dtype=torch.float64))
        self.q = nn.Parameter(torch.zeros(D, D, dtype=torch.float64))
        self.k = nn.Parameter(torch.zeros(kv_dim, D, dtype=torch.float64))
        self.v = nn.Parameter(torch.zeros(kv_dim, D, dtype=torch.float64))
        self.o = nn.Parameter(torch.zeros(D, D, dtype=torch.float64))


class HSPMNBlock(nn.Module):
    """state_dict names and order are those of MODEL.md and hspmn_block_param_name."""

    def __init__(self, cfg: BlockConfig):
        super().__init__()
        self.cfg = cfg.validate()
        D = cfg.dim
        self.router = Router(D)
        self.reflex = Reflex(D, cfg.ffn_dim, cfg.conv_kernel)
        self.attn = Attn(D, cfg.num_kv_heads * cfg.head_dim)

    def init_parameters(self, generator: torch.Generator) -> "HSPMNBlock":
        """The distributions of hspmn_block_create (native/README.md), bf16-rounded; not its bits."""
        cfg = self.cfg

        def uniform(shape, fan_in):
            bound = 1.0 / math.sqrt(fan_in)
            return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound

        rho = f32(cfg.sparsity_k)
        rho = min(rho, 0.999)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith(".norm"):
                    p.fill_(1.0)
                elif name == "router.b":
                    p.fill_(math.log(rho / (1 - rho)))
                elif name == "router.log_temp":
                    p.fill_(0.0)
                elif name == "router.w":
                    p.copy_(uniform(p.shape, cfg.dim))
                else:
                    p.copy_(uniform(p.shape, p.shape[1]))
                p.copy_(bf16_round(p))
        return self

    def forward(self, x: torch.Tensor, training: bool = False, noise: Optional[torch.Tensor] = None,
                indices: Optional[torch.Tensor] = None, counts: Optional[torch.Tensor] = None,
                aux_target: Optional[float] = None, gate_sg: Optional[torch.Tensor] = None,
                dropout: Optional[tuple] = None) -> BlockOutput:
        """x: [B, S, D] float64 (bf16 values).

        noise: [B, S] Gumbel noise g, used only when training (None: g = 0).
        indices/counts: routing pinned from outside (as hspmn_block_forward_routed); else route_select.
        aux_target: rho_target of the aux loss; None or < 0 means cfg.sparsity_k.
        gate_sg: [B, S] value held for sg(sigmoid(n)) in the gate (gradient checks); default
                 sigmoid(n).detach(), which makes the gate exactly 1 in the forward pass.
        dropout: (M_m, M_o) of dropout_masks, [B, S, D] each, used only when training: m and o are
                 multiplied by them before they join the residual (None: no dropout).
        """
        cfg = self.cfg
        B, S, D = x.shape
        H, Hkv, Dh = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

        logits = router_logits(x, self.router.w, self.router.b)
        probs = torch.sigmoid(logits)
        t = router_temperature(self.router.log_temp)
        g = noise.to(torch.float64) if (training and noise is not None) else torch.zeros_like(logits)
        scores = (logits + g) / t
        if indices is None:
            if counts is not None:
                raise ValueError("indices and counts come together or not at all")
            indices, counts = route_select(scores.detach(), cfg.routing, cfg.sparsity_k)
        elif counts is None:
            raise ValueError("indices and counts come together or not at all")
        indices = indices.to(torch.int64)
        counts = counts.to(torch.int64)
        target = cfg.sparsity_k if aux_target is None or aux_target < 0 else aux_target
        aux = aux_loss(logits, target, cfg.router_sparsity_coef, cfg.router_entropy_coef)

        # reflexive stream, every token
        h = rms_norm(x, self.reflex.norm, cfg.norm_eps)
        c = causal_conv(h, self.reflex.conv)
        m = swiglu(c, self.reflex.gate, self.reflex.up, self.reflex.down)
        drop = dropout if training else None
        if drop is not None:
            m = m * drop[0]
        r = x + m

        # contextual stream: K/V of every token, Q of selected tokens only
        C = indices.shape[1]
        valid = (indices >= 0) & (torch.arange(C)[None, :] < counts[:, None])
        sel = torch.where(valid, indices, torch.zeros_like(indices))
        a = rms_norm(x, self.attn.norm, cfg.norm_eps)
        k = F.linear(a, self.attn.k).view(B, S, Hkv, Dh)
        v = F.linear(a, self.attn.v).view(B, S, Hkv, Dh)
        k = rope(k, torch.arange(S).expand(B, S), cfg.rope_base)
        a_sel = torch.gather(a, 1, sel[:, :, None].expand(B, C, D))
        q = rope(F.linear(a_sel, self.attn.q).view(B, C, H, Dh), sel, cfg.rope_base)
        positions = torch.where(valid, sel, torch.full_like(sel, -1))
        o = F.linear(sqdk_attention(q, k, v, positions).reshape(B, C, D), self.attn.o)
        if drop is not None:
            o = o * torch.gather(drop[1], 1, sel[:, :, None].expand(B, C, D))

        # straight-through gate: exactly 1 forward, d/dn sigmoid(n) backward
        s = torch.gather(torch.sigmoid(scores), 1, sel)
        held = torch.gather(gate_sg, 1, sel) if gate_sg is not None else s.detach()
        y = (s - held + 1.0) * valid.to(s.dtype)
        out = r.scatter_add(1, sel[:, :, None].expand(B, C, D), y[:, :, None] * o)
        return BlockOutput(out, aux, logits, probs, scores, indices, counts)
