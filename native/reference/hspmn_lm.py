"""HSPMN language model and its optimiser in PyTorch: the executable spec of the training issue's
native code (MODEL.md, "The language model"; native/README.md for the block's choices).

Model: tokens [B, S] -> embedding [V, D] -> N hspmn_ref.HSPMNBlock -> rms_norm(norm) -> logits =
h . embedding^T (tied head). loss = mean next-byte cross-entropy + sum over layers of aux.
Optimiser: adamw_step, lr_schedule, aux_target_schedule, clip_grad_norm, written as the formulas the
native code must match (no torch.optim). Float64 on bf16-rounded parameters, like hspmn_ref.
Op names here (cross_entropy_fused, adamw_step, lr_schedule, aux_target_schedule, clip_grad_norm,
noise_step) are the native ones.
"""

import dataclasses
import json
import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from hspmn_ref import BlockConfig, HSPMNBlock, bf16_round, dropout_masks, f32, gumbel_noise, rms_norm

# ---- config --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """JSON: {"vocab_size": V, "num_layers": N, "block": {BlockConfig fields}} (the shape
    io.hspmn.checkpoint.LanguageModelLayout and load_checkpoint.py read)."""

    vocab_size: int = 256
    num_layers: int = 2
    block: BlockConfig = BlockConfig()

    def validate(self) -> "LMConfig":
        for name in ("vocab_size", "num_layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}: must be a positive integer, got {v!r}")
        self.block.validate()
        return self

    def to_dict(self) -> dict:
        return {"vocab_size": self.vocab_size, "num_layers": self.num_layers,
                "block": dataclasses.asdict(self.block)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @staticmethod
    def from_dict(d: dict) -> "LMConfig":
        """Other top-level keys (training settings stored beside the model) are ignored; an unknown
        block field is an error, as in load_checkpoint.py."""
        blk = d["block"]
        unknown = set(blk) - set(BlockConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"block: unknown fields {sorted(unknown)}")
        return LMConfig(vocab_size=d["vocab_size"], num_layers=d["num_layers"],
                        block=BlockConfig(**blk)).validate()

    @staticmethod
    def from_json(text: str) -> "LMConfig":
        return LMConfig.from_dict(json.loads(text))


def validate_dropout(p: float) -> float:
    """Residual dropout probability: finite, 0 <= p < 1 (the trainer's --dropout and the ABI's rule)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 <= f32(p) < 1.0):
        raise ValueError(f"dropout: must be in [0, 1), got {p!r}")
    return float(p)


def stored_dropout(config: dict) -> float:
    """The residual dropout a checkpoint's run trained with: config["training"]["dropout"], the key
    io.hspmn.train.TrainOptions stores (a RUN option); 0 for checkpoints written before it existed and
    for bare weights. Evaluation and sampling never apply it; a resumed run must."""
    training = config.get("training")
    if not isinstance(training, dict) or "dropout" not in training:
        return 0.0
    return validate_dropout(training["dropout"])


# ---- fused cross-entropy -------------------------------------------------------------------------


def cross_entropy_fused_forward_backward(h: torch.Tensor, embedding: torch.Tensor, targets: torch.Tensor,
                                         chunk_rows: int = 256, need_grad: bool = True):
    """h: [N, D], embedding: [V, D], targets: [N] int -> (loss [] mean over N, d_h [N, D], d_emb [V, D]).

    Rows are processed chunk_rows at a time, so at most [chunk_rows, V] logits exist at once; the
    gradients are produced in the same pass (d loss / d loss = 1), which is why nothing [N, V] has to
    be kept for the backward. Per row n, with z = h_n . embedding^T:
        m = max_v z_v;  lse = m + ln sum_v exp(z_v - m);  loss_n = lse - z_{t_n}
        p = exp(z - lse);  g = p - onehot(t_n)
        d_h_n = (g . embedding) / N;   d_emb += g^T h_n / N
    loss = sum_n loss_n / N. d_h and d_emb are the gradients of that mean.
    """
    N = h.shape[0]
    loss = h.new_zeros(())
    d_h = torch.zeros_like(h) if need_grad else None
    d_emb = torch.zeros_like(embedding) if need_grad else None
    rows = torch.arange(N)
    for r0 in range(0, N, chunk_rows):
        r1 = min(N, r0 + chunk_rows)
        hc, tc = h[r0:r1], targets[r0:r1]
        z = hc @ embedding.T  # [R, V]
        m = z.max(dim=1, keepdim=True).values
        lse = m + torch.log(torch.exp(z - m).sum(dim=1, keepdim=True))
        z_t = z.gather(1, tc[:, None])
        loss = loss + (lse - z_t).sum()
        if need_grad:
            g = torch.exp(z - lse)
            g[rows[: r1 - r0], tc] -= 1.0
            d_h[r0:r1] = (g @ embedding) / N
            d_emb += (g.T @ hc) / N
    return loss / N, d_h, d_emb


class _CrossEntropyFused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, embedding, targets, chunk_rows):
        loss, d_h, d_emb = cross_entropy_fused_forward_backward(h, embedding, targets, chunk_rows)
        ctx.save_for_backward(d_h, d_emb)
        return loss

    @staticmethod
    def backward(ctx, d_loss):
        d_h, d_emb = ctx.saved_tensors
        return d_h * d_loss, d_emb * d_loss, None, None


def cross_entropy_fused(h: torch.Tensor, embedding: torch.Tensor, targets: torch.Tensor,
                        chunk_rows: int = 256) -> torch.Tensor:
    # h: [N, D], embedding: [V, D], targets: [N] int64 -> mean cross-entropy [] (nats), differentiable
    return _CrossEntropyFused.apply(h, embedding, targets.to(torch.int64), chunk_rows)


# ---- model ---------------------------------------------------------------------------------------


def noise_step(step: int, micro: int, grad_accum: int) -> int:
    """The `step` word of the Gumbel counter for micro-batch `micro` of optimizer step `step`.

    With gradient accumulation every micro-batch must draw fresh noise, and a resumed run the same
    noise: step * grad_accum + micro is both (grad_accum = 1 gives the optimizer step itself).
    """
    return step * grad_accum + micro


class LMOutput(NamedTuple):
    loss: torch.Tensor             # [] ce + sum(aux) (ce alone when targets is None: then 0)
    ce: torch.Tensor               # [] mean next-byte cross-entropy, nats
    aux: torch.Tensor              # [N] aux of each layer
    routed_fraction: torch.Tensor  # [N] tokens routed / (B*S), per layer
    router_prob: torch.Tensor      # [N] mean sigmoid(l), the quantity aux pulls to the target
    hidden: torch.Tensor           # [B, S, D] after the final rms_norm
    blocks: list                   # hspmn_ref.BlockOutput of each layer (routing, scores)


def _norm_last(module, state_dict, prefix, local_metadata):
    state_dict[prefix + "norm"] = state_dict.pop(prefix + "norm")
    return state_dict


class HSPMNLM(nn.Module):
    """state_dict: embedding [V, D], blocks.{i}.<HSPMNBlock names>, norm [D], in that order."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg.validate()
        D = cfg.block.dim
        self.embedding = nn.Parameter(torch.zeros(cfg.vocab_size, D, dtype=torch.float64))
        self.blocks = nn.ModuleList(HSPMNBlock(cfg.block) for _ in range(cfg.num_layers))
        self.norm = nn.Parameter(torch.ones(D, dtype=torch.float64))
        # PyTorch lists a module's own parameters before its children's; the checkpoint order
        # (LanguageModelLayout) has the final norm last, after the blocks
        self._register_state_dict_hook(_norm_last)

    def init_parameters(self, generator: torch.Generator) -> "HSPMNLM":
        """Distributions, not bits: embedding U(-1/sqrt(D), 1/sqrt(D)) (so the tied logits start with
        std ~0.58 and the first loss is ~ln V), blocks as hspmn_block_create, norm 1; bf16-rounded."""
        D = self.cfg.block.dim
        bound = 1.0 / math.sqrt(D)
        with torch.no_grad():
            e = (torch.rand(self.embedding.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
            self.embedding.copy_(bf16_round(e))
            for blk in self.blocks:
                blk.init_parameters(generator)
            self.norm.fill_(1.0)
        return self

    def forward(self, tokens: torch.Tensor, targets: Optional[torch.Tensor] = None, training: bool = False,
                seed: int = 0, step: int = 0, aux_target: Optional[float] = None,
                routes: Optional[Sequence[Tuple[torch.Tensor, torch.Tensor]]] = None,
                gate_sg: Optional[Sequence[torch.Tensor]] = None, chunk_rows: int = 256,
                dropout: float = 0.0, row_offset: int = 0) -> LMOutput:
        """tokens, targets: [B, S] int (targets[b, s] is the byte after tokens[b, s]).

        training: Gumbel noise gumbel_noise(seed, step, layer=i) in layer i (step: see noise_step);
                  evaluation draws none.
        aux_target: every layer's rho_target (aux_target_schedule); None: the config's sparsity_k.
        dropout: residual dropout p, training only: layer i multiplies m and o by
                 hspmn_ref.dropout_masks(seed, step, i, ...) (the same key as its noise); 0 drops nothing.
        row_offset: >= 0, row b's noise and masks are drawn as row row_offset + b (the rows' first
                    index in the global batch under data parallelism; hspmn_model_forward_params).
        routes / gate_sg: per-layer (indices, counts) and sg(sigmoid(n)) pinned, for gradient checks.
        Activations between blocks stay float64 here; a bf16 backend rounds them, which the
        ||out - ref|| / ||ref|| bounds of MODEL.md cover.
        """
        B, S = tokens.shape
        D = self.cfg.block.dim
        x = self.embedding[tokens.to(torch.int64)]  # [B, S, D]
        outs, auxes = [], []
        for i, blk in enumerate(self.blocks):
            noise = gumbel_noise(seed, step, i, B, S, row_offset) if training else None
            idx, cnt = routes[i] if routes is not None else (None, None)
            drop = dropout_masks(seed, step, i, B, S, D, dropout, row_offset) if training else None
            res = blk(x, training=training, noise=noise, indices=idx, counts=cnt, aux_target=aux_target,
                      gate_sg=gate_sg[i] if gate_sg is not None else None, dropout=drop)
            outs.append(res)
            auxes.append(res.aux.reshape(()))
            x = res.out
        h = rms_norm(x, self.norm, self.cfg.block.norm_eps)
        aux = torch.stack(auxes) if auxes else h.new_zeros(0)
        if targets is not None:
            ce = cross_entropy_fused(h.reshape(B * S, D), self.embedding, targets.reshape(B * S), chunk_rows)
        else:
            ce = h.new_zeros(())
        routed = torch.stack([r.counts.sum().to(torch.float64) / (B * S) for r in outs]) if outs else aux
        prob = torch.stack([r.probs.detach().mean() for r in outs]) if outs else aux
        return LMOutput(ce + aux.sum(), ce, aux, routed, prob, h, outs)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        # h: [B, S, D] (LMOutput.hidden) -> [B, S, V]; sampling and tests only, training never forms it
        return h @ self.embedding.T


# ---- optimiser -----------------------------------------------------------------------------------

BETA1 = 0.9
BETA2 = 0.95
ADAM_EPS = 1e-8
CLIP_EPS = 1e-6


def is_decayed(name: str, shape: Sequence[int]) -> bool:
    """Weight decay applies to the 2-D weights: embedding, blocks.{i}.reflex.{conv, gate, up, down},
    blocks.{i}.attn.{q, k, v, o}. Not to norm, blocks.{i}.{reflex, attn}.norm (gains),
    blocks.{i}.router.b (bias), blocks.{i}.router.log_temp (temperature) nor blocks.{i}.router.w
    (1-D like the gains; decaying it would pull every logit toward the bias alone)."""
    return len(shape) == 2


def adamw_update(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: int, lr: float,
                 weight_decay: float, beta1: float = BETA1, beta2: float = BETA2, eps: float = ADAM_EPS) -> None:
    """One AdamW update of one tensor, in place on p, m, v (float32 master weights in native code).

    step: 1-based count of updates including this one.
        p <- p * (1 - lr * wd)                       (decoupled decay, wd = 0 where not is_decayed)
        m <- beta1 * m + (1 - beta1) * g
        v <- beta2 * v + (1 - beta2) * g * g
        p <- p - (lr / (1 - beta1^step)) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
    which is lr * m_hat / (sqrt(v_hat) + eps), written in the order torch.optim.AdamW evaluates it.
    """
    bc1 = 1.0 - beta1 ** step
    bc2_sqrt = math.sqrt(1.0 - beta2 ** step)
    if weight_decay != 0.0:
        p.mul_(1.0 - lr * weight_decay)
    m.mul_(beta1).add_(g, alpha=1.0 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
    denom = v.sqrt() / bc2_sqrt + eps
    p.addcdiv_(m, denom, value=-(lr / bc1))


def adamw_step(params: Dict[str, torch.Tensor], grads: Dict[str, torch.Tensor], m: Dict[str, torch.Tensor],
               v: Dict[str, torch.Tensor], step: int, lr: float, weight_decay: float) -> None:
    """adamw_update of every named parameter, decay per is_decayed; m and v start at 0."""
    for name, p in params.items():
        wd = weight_decay if is_decayed(name, p.shape) else 0.0
        adamw_update(p, grads[name], m[name], v[name], step, lr, wd)


def lr_schedule(step: int, warmup: int, total: int, peak: float, min_ratio: float) -> float:
    """Learning rate of optimizer step `step` (0-based, the update about to be made).

        step < warmup:  peak * (step + 1) / warmup            (never 0: step 0 already moves)
        otherwise:      q = clamp((step - warmup) / max(1, total - warmup), 0, 1)
                        peak * (min_ratio + (1 - min_ratio) * (1 + cos(pi * q)) / 2)
    so steps warmup - 1 and warmup both use peak, and step >= total uses peak * min_ratio.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    q = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * q)))


AUX_TARGET_START = 0.8


def aux_target_schedule(step: int, warmup: int, sparsity_k: float = 0.2, start: float = AUX_TARGET_START) -> float:
    """rho_target of the aux loss at optimizer step `step` (the paper anneals 0.8 -> 0.2).

        step < warmup:  start + (sparsity_k - start) * step / warmup
        otherwise:      sparsity_k
    It ends at sparsity_k rather than a fixed 0.2 so that nothing jumps at the end of warm-up
    (with the default sparsity_k = 0.2 both read the same). Passed as float32 (f32) at the ABI.
    """
    if step < warmup:
        return f32(start + (f32(sparsity_k) - start) * step / warmup)
    return f32(sparsity_k)


def clip_grad_norm(grads: Sequence[torch.Tensor], max_norm: float) -> float:
    """Global L2 clipping over every parameter's gradient, in place; returns the norm before clipping.

        norm = sqrt(sum over all elements g^2)     (float32 sums of squares per tensor in native code)
        c = max_norm / (norm + 1e-6);  if c < 1: g <- g * c
    (torch.nn.utils.clip_grad_norm_'s rule). max_norm <= 0 disables clipping. A non-finite norm is
    returned untouched and nothing is scaled: the trainer skips that step.
    """
    norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    if max_norm > 0 and math.isfinite(norm):
        c = max_norm / (norm + CLIP_EPS)
        if c < 1.0:
            for g in grads:
                g.mul_(c)
    return norm


# ---- training step (what the Java trainer drives) ------------------------------------------------


def noise_free_fraction(logits: torch.Tensor) -> float:
    """logits l: [B, S] -> the share with l > 0, as float32 (what native code reports): what threshold
    routing selects without noise (t > 0 keeps the sign), i.e. evaluation mode on this input."""
    return f32(float((logits > 0).sum()) / logits.numel())


def router_bias_step(master: Dict[str, torch.Tensor], fractions: Sequence[float], target: float,
                     rate: float) -> None:
    """Router bias control (native/README.md "Router bias control"; the sign rule of Wang et al. 2024,
    "Auxiliary-Loss-Free Load Balancing Strategy for Mixture-of-Experts"), on the master weights:

        blocks.{i}.router.b += rate  if f_i < target,   -= rate  if f_i > target
    f_i: layer i's noise_free_fraction averaged over the step's micro-batches (float64 mean of the float32
    values); target: the step's aux target (float32). The sum is float32 like the native master weight.
    """
    for i, f in enumerate(fractions):
        if f == target or rate == 0.0:
            continue
        name = f"blocks.{i}.router.b"
        b = master[name]
        step = f32(rate) if f < target else -f32(rate)
        b.copy_(torch.tensor([f32(f32(float(b[0])) + step)], dtype=b.dtype))


def train_step(model: HSPMNLM, master: Dict[str, torch.Tensor], m: Dict[str, torch.Tensor],
               v: Dict[str, torch.Tensor], micro_batches: List[Tuple[torch.Tensor, torch.Tensor]], step: int,
               seed: int, lr: float, weight_decay: float, max_norm: float, aux_target: float,
               dropout: float = 0.0, router_bias_rate: float = 0.0) -> dict:
    """One optimizer step: forward/backward of each micro-batch on the bf16-rounded master weights,
    gradients averaged (g = (1/A) sum_a grad loss_a), clipped, then AdamW on the master weights, then
    (threshold routing, router_bias_rate > 0, the step applied) router_bias_step toward aux_target.

    master/m/v: float master weights and moments by state_dict name (the forward reads
    bf16_round(master), the native bf16 copy). step is 0-based; AdamW sees step + 1.
    dropout: residual dropout p; micro-batch a draws its masks at noise_step(step, a, A), as its noise.
    """
    A = len(micro_batches)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(bf16_round(master[name]))
            p.grad = None
    stats = {"loss": 0.0, "ce": 0.0, "aux": 0.0}
    routed = prob = 0
    noise_free = [0.0] * model.cfg.num_layers
    for a, (tok, tgt) in enumerate(micro_batches):
        out = model(tok, tgt, training=True, seed=seed, step=noise_step(step, a, A), aux_target=aux_target,
                    dropout=dropout)
        (out.loss / A).backward()
        for i, r in enumerate(out.blocks):
            noise_free[i] += noise_free_fraction(r.logits)
        stats["loss"] += float(out.loss.detach()) / A
        stats["ce"] += float(out.ce.detach()) / A
        stats["aux"] += float(out.aux.detach().sum()) / A
        routed = routed + out.routed_fraction / A
        prob = prob + out.router_prob / A
    grads = {name: p.grad for name, p in params.items()}
    stats["grad_norm"] = clip_grad_norm(list(grads.values()), max_norm)
    noise_free = [x / A for x in noise_free]
    if math.isfinite(stats["grad_norm"]):
        adamw_step(master, grads, m, v, step + 1, lr, weight_decay)
        if router_bias_rate > 0.0 and model.cfg.block.routing == "threshold":
            router_bias_step(master, noise_free, f32(aux_target), router_bias_rate)
    stats["noise_free_fraction"] = noise_free
    stats["routed_fraction"] = [float(x) for x in routed]
    stats["router_prob"] = [float(x) for x in prob]
    return stats


# ---- checkpoints ---------------------------------------------------------------------------------


def load_lm_checkpoint(path: str):
    """A checkpoint io.hspmn.checkpoint.Checkpoint wrote -> (HSPMNLM, metadata dict).

    The weights load with load_state_dict(strict=True): names and shapes must be the reference's.
    load_checkpoint.check validates the rest of the file (moments, rng.state, finiteness).
    """
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        weights = {k: f.get_tensor(k).to(torch.float64) for k in f.keys() if not k.startswith(("optim.", "rng."))}
    model = HSPMNLM(LMConfig.from_json(meta["config"]))
    model.load_state_dict(weights, strict=True)
    return model, meta
