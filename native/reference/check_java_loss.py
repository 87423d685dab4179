"""Evaluation loss of a Java-written checkpoint on a batch, by the reference: the check that a checkpoint
means to PyTorch what it meant to the Java trainer.

    python check_java_loss.py CKPT BATCH

CKPT: a checkpoint io.hspmn.train.Trainer wrote (float32 master weights under state_dict names, config
JSON {"vocab_size", "num_layers", "block", "training"}), loaded with hspmn_lm.load_lm_checkpoint.
BATCH: a safetensors file with `tokens` and `targets`, [B, S] int32.

The native forward computes with the bf16 copy rounded from each master weight, so the weights are
rounded here too (bf16_round, as hspmn_lm.train_step does) before an evaluation forward (no noise,
aux against the config's sparsity_k). Prints one JSON line: loss, ce, aux and routed_fraction per
layer, and two variants that size the bf16 effects: ce_bf16_activations (the same forward with every
block's output and the final norm's output rounded to bf16, as the native forward stores them: the
reference's own error at the native precision) and ce_unrounded (on the float32 masters).
"""

import json
import sys

import torch
from safetensors import safe_open

from hspmn_lm import cross_entropy_fused, load_lm_checkpoint
from hspmn_ref import bf16_round, rms_norm


def evaluate(model, tokens, targets):
    with torch.no_grad():
        return model(tokens, targets, training=False)


def ce_bf16_activations(model, tokens, targets):
    """HSPMNLM.forward in evaluation mode with the activations between blocks and after the final norm
    rounded to bf16, where the native forward keeps them in bf16."""
    B, S = tokens.shape
    with torch.no_grad():
        x = model.embedding[tokens]
        for blk in model.blocks:
            x = bf16_round(blk(x, training=False).out)
        h = bf16_round(rms_norm(x, model.norm, model.cfg.block.norm_eps))
        return float(cross_entropy_fused(h.reshape(B * S, -1), model.embedding, targets.reshape(B * S)))


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    model, meta = load_lm_checkpoint(argv[1])
    with safe_open(argv[2], framework="pt") as f:
        tokens = f.get_tensor("tokens").to(torch.int64)
        targets = f.get_tensor("targets").to(torch.int64)
    unrounded = evaluate(model, tokens, targets)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(bf16_round(p))
    out = evaluate(model, tokens, targets)
    print(json.dumps({
        "step": int(meta["step"]),
        "loss": float(out.loss),
        "ce": float(out.ce),
        "aux": [float(a) for a in out.aux],
        "routed_fraction": [float(r) for r in out.routed_fraction],
        "ce_bf16_activations": ce_bf16_activations(model, tokens, targets),
        "ce_unrounded": float(unrounded.ce),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
