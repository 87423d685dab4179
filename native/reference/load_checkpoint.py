"""Loads a Java-written HSPMN checkpoint through the safetensors library and validates it.

    python load_checkpoint.py CKPT [--json]

Proves the PyTorch side reads what io.hspmn.checkpoint.Checkpoint writes: the standard reader opens it,
the `__metadata__` fields parse, every tensor matches its CRC-32 in `__metadata__.tensor_crc32` (when the
file has them: checkpoints from before they existed do not), the optimizer moments match their weights,
values are finite, and when
the config describes a language model ({"vocab_size", "num_layers", "block": BlockConfig fields}) every
block's weights load into hspmn_ref.HSPMNBlock with load_state_dict(strict=True), so the names and
shapes are the reference's own. Exit status 0 when valid, 1 with the problems listed otherwise.
--json prints a summary (per tensor: dtype, shape, first/last value, sum of |x|) that the Java test
compares with what it wrote.
"""

import json
import sys
import zlib

import torch
from safetensors import safe_open

from hspmn_ref import BlockConfig, HSPMNBlock

FORMAT = "hspmn.checkpoint"
FORMAT_VERSION = "1"


def _block_config(cfg: dict) -> BlockConfig:
    fields = BlockConfig.__dataclass_fields__
    unknown = set(cfg) - set(fields)
    if unknown:
        raise ValueError(f"block: unknown fields {sorted(unknown)}")
    return BlockConfig(**cfg).validate()


def check(path: str):
    """-> (problems list, summary dict)."""
    problems = []
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    if meta.get("format") != FORMAT:
        problems.append(f"__metadata__.format is {meta.get('format')!r}, not {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        problems.append(f"__metadata__.format_version is {meta.get('format_version')!r}")
    summary = {"metadata": meta, "tensors": {}}
    for key in ("step", "data_position"):
        v = meta.get(key, "")
        if not v.isdigit():
            problems.append(f"__metadata__.{key} is {v!r}, not a non-negative integer")
        else:
            summary[key] = int(v)
    try:
        config = json.loads(meta.get("config", ""))
    except json.JSONDecodeError as e:
        config = None
        problems.append(f"__metadata__.config is not JSON: {e}")
    rng = tensors.get("rng.state")
    if rng is None or rng.dtype != torch.int64 or rng.dim() != 1:
        problems.append("rng.state missing or not a 1-D int64 tensor")
    else:
        summary["rng_state"] = [int(x) for x in rng.tolist()]

    if "tensor_crc32" in meta:
        try:
            crc = json.loads(meta["tensor_crc32"])
        except json.JSONDecodeError as e:
            crc = {}
            problems.append(f"__metadata__.tensor_crc32 is not JSON: {e}")
        for k, t in tensors.items():
            raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            got = f"{zlib.crc32(raw):08x}"
            if crc.get(k) != got:
                problems.append(f"damaged tensor {k}: crc32 {got}, written {crc.get(k)!r}")
        summary["checksums"] = len(crc)

    weights = {k: t for k, t in tensors.items() if not k.startswith(("optim.", "rng."))}
    for prefix in ("optim.m.", "optim.v."):
        for k, t in tensors.items():
            if k.startswith(prefix):
                w = weights.get(k[len(prefix):])
                if w is None or w.shape != t.shape:
                    problems.append(f"{k}: no weight of the same shape")
    for k, t in tensors.items():
        x = t.to(torch.float64)
        if t.is_floating_point():
            bad = int((~torch.isfinite(x)).sum())
            if bad:
                problems.append(f"{k}: {bad} non-finite values")
        flat = x.reshape(-1)
        summary["tensors"][k] = {
            "dtype": str(t.dtype).removeprefix("torch."),
            "shape": list(t.shape),
            "first": float(flat[0]) if flat.numel() else None,
            "last": float(flat[-1]) if flat.numel() else None,
            "sum_abs": float(flat.abs().sum()),
        }

    if isinstance(config, dict) and "block" in config:
        try:
            cfg = _block_config(config["block"])
            V, N = int(config["vocab_size"]), int(config["num_layers"])
            expected = {"embedding": (V, cfg.dim), "norm": (cfg.dim,)}
            for i in range(N):
                block = HSPMNBlock(cfg)
                prefix = f"blocks.{i}."
                sd = {k[len(prefix):]: t.to(torch.float64) for k, t in weights.items() if k.startswith(prefix)}
                block.load_state_dict(sd, strict=True)  # names and shapes must be the reference's exactly
                expected.update({prefix + k: tuple(v.shape) for k, v in block.state_dict().items()})
            for k, shape in expected.items():
                if k not in weights:
                    problems.append(f"weight {k} missing")
                elif tuple(weights[k].shape) != shape:
                    problems.append(f"weight {k} has shape {tuple(weights[k].shape)}, config wants {shape}")
            for k in weights:
                if k not in expected:
                    problems.append(f"weight {k} is not in the config's model")
            summary["layers_loaded"] = N
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            problems.append(f"config/state_dict mismatch: {e}")
    return problems, summary


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    problems, summary = check(argv[1])
    if "--json" in argv[2:]:
        summary["problems"] = problems
        print(json.dumps(summary))
    else:
        for p in problems:
            print("PROBLEM:", p)
        print("OK" if not problems else f"INVALID ({len(problems)} problems)")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
