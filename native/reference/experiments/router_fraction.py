"""Router fraction experiment: does threshold routing end at the target in EVALUATION mode?

What it measures. A byte-level HSPMN LM (hspmn_lm.HSPMNLM, threshold routing) is trained with
hspmn_lm.train_step -- exactly the native trainer's step -- on data/corpus.txt (last 10 % held out,
as ByteCorpus.split(0.1)). Per layer, at the end:
  - train_routed: routed fraction of the last 20 training steps (Gumbel noise on; what train_step
    reports and what test_lm.py asserted on),
  - eval_routed:  routed fraction on the whole validation split with training=False (no noise: what
    inference and token-by-token decoding see; sigmoid(l/t) > 0.5 iff l > 0, so t plays no part),
  - noisy_routed: the same validation tokens with noise on (the final model in training mode), so
    the gap between noisy_routed and eval_routed is the noise's bias alone, on identical tokens,
  - mean_p: mean sigmoid(l) on validation (what the aux loss pulls to the target), and its
    histogram in ten bins of width 0.1,
  - expected_noisy: mean over validation tokens of P(l + g > 0) = 1 - exp(-e^l) for g ~ Gumbel(0, 1)
    (the noisy fraction predicted from the logits alone),
and the validation cross-entropy in bits per byte next to the corpus's unigram entropy, and the
wall time. --trace N also prints those validation numbers every N steps on a slice of the split.

How to run (CPU, one thread, a few minutes per run; keep it niced on a shared machine):
    cd native/reference
    nice -n 10 ../../.venv/bin/python experiments/router_fraction.py --preset recommended   # ~2 min
    nice -n 10 ../../.venv/bin/python experiments/router_fraction.py --preset recommended_small --seed 3
    nice -n 10 ../../.venv/bin/python experiments/router_fraction.py --lr 0.003 --trace 25   # defaults
Every Settings field is a flag (--sparsity-coef, --entropy-coef, --aux-warmup, ...); presets are
starting points that flags override.
Each run prints a human summary and one line "RESULT {json}"; `router_fraction.py --table
FILE.jsonl...` turns such lines (one per line, "RESULT " stripped) into router_fraction.md's rows.
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402

from hspmn_lm import HSPMNLM, LMConfig, aux_target_schedule, lr_schedule, train_step  # noqa: E402
from hspmn_ref import BlockConfig, bf16_round  # noqa: E402

CORPUS = os.path.join(HERE, "..", "..", "..", "data", "corpus.txt")
TAIL = 20  # training steps averaged for train_routed, as test_lm.py does


@dataclasses.dataclass
class Settings:
    dim: int = 128
    layers: int = 2
    heads: int = 2
    kv_heads: int = 1
    mlp_ratio: int = 4
    seq: int = 256
    batch: int = 8
    steps: int = 400
    warmup: int = 40          # lr warm-up
    aux_warmup: int = -1      # aux target 0.8 -> sparsity_k over this many steps; -1: same as warmup
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    max_norm: float = 1.0
    sparsity_k: float = 0.2
    sparsity_coef: float = 0.1
    entropy_coef: float = 0.01
    seed: int = 0
    noise_seed: int = 7


PRESETS = {
    # the block defaults (MODEL.md) at the target size
    "defaults": Settings(),
    # test_lm.py's tiny run (lambda_s 1.0, D 32, S 64)
    "test_lm": Settings(dim=32, heads=4, kv_heads=2, mlp_ratio=2, seq=64, steps=200, warmup=20, sparsity_coef=1.0),
    # router_fraction.md's recommendation: target size, and the cheaper size that passed 6 seeds of 6
    "recommended": Settings(lr=0.01, sparsity_coef=30.0, entropy_coef=1.0),
    "recommended_small": Settings(dim=64, seq=128, lr=0.01, sparsity_coef=30.0, entropy_coef=1.0),
}


def load_corpus():
    data = torch.tensor(list(open(CORPUS, "rb").read()), dtype=torch.int64)
    cut = int(len(data) * 0.9)
    train, val = data[:cut], data[cut:]
    # the validation split's unigram entropy (4.713 bits; the training split's is 4.612): the bar
    # the issue's 4.71 refers to, since validation bits/byte is what is compared with it
    freq = torch.bincount(val, minlength=256).double()
    freq = freq[freq > 0] / freq.sum()
    return train, val, float(-(freq * freq.log2()).sum())


def val_windows(val, S, limit=None):
    n = (len(val) - 1) // S
    if limit is not None:
        n = min(n, limit)
    return torch.stack([val[i * S:i * S + S + 1] for i in range(n)])


def measure(model, windows, noise_seed, chunk=16):
    """Validation numbers of the current (bf16) weights; see the module docstring."""
    L = model.cfg.num_layers
    ce_sum, n_tok = 0.0, 0
    routed = [0.0] * L
    noisy = [0.0] * L
    expected = [0.0] * L
    probs = [[] for _ in range(L)]
    byte_routed = torch.zeros(256, dtype=torch.float64)  # layer 0, evaluation: routed count per input byte
    byte_count = torch.zeros(256, dtype=torch.float64)
    with torch.no_grad():
        for c0 in range(0, len(windows), chunk):
            w = windows[c0:c0 + chunk]
            tok, tgt = w[:, :-1], w[:, 1:]
            ev = model(tok, tgt, training=False)
            # noise keyed by a step far from any training step: a fresh draw, same tokens
            nz = model(tok, tgt, training=True, seed=noise_seed, step=10 ** 6 + c0)
            N = tok.numel()
            ce_sum += float(ev.ce) * N
            n_tok += N
            for i in range(L):
                routed[i] += float(ev.blocks[i].counts.sum())
                noisy[i] += float(nz.blocks[i].counts.sum())
                lg = ev.blocks[i].logits
                expected[i] += float((1 - torch.exp(-torch.exp(lg))).sum())
                probs[i].append(ev.blocks[i].probs.reshape(-1))
            # layer 0 reads only the embedding of the current byte, so its decision is a byte lookup
            sel = (torch.sigmoid(ev.blocks[0].scores) > 0.5).reshape(-1).to(torch.float64)
            byte_routed.index_add_(0, tok.reshape(-1), sel)
            byte_count.index_add_(0, tok.reshape(-1), torch.ones_like(sel))
    p = [torch.cat(x) for x in probs]
    routed_bytes = [b for b in range(256) if byte_count[b] > 0 and byte_routed[b] > 0.5 * byte_count[b]]
    return {
        "layer0_bytes": "".join(chr(b) if 32 < b < 127 else f"\\x{b:02x}" for b in routed_bytes),
        "layer0_bytes_val_freq": float(byte_count[routed_bytes].sum() / n_tok),
        "val_bpb": ce_sum / n_tok / math.log(2),
        "eval_routed": [r / n_tok for r in routed],
        "noisy_routed": [r / n_tok for r in noisy],
        "expected_noisy": [r / n_tok for r in expected],
        "mean_p": [float(x.mean()) for x in p],
        "p_hist": [[round(float(v), 3) for v in torch.histc(x, bins=10, min=0, max=1) / len(x)] for x in p],
        "p_over_half": [float((x > 0.5).double().mean()) for x in p],
    }


def run(s: Settings, trace: int = 0, log=print):
    torch.set_num_threads(1)
    train, val, unigram = load_corpus()
    aux_warmup = s.warmup if s.aux_warmup < 0 else s.aux_warmup
    blk = BlockConfig(dim=s.dim, num_heads=s.heads, num_kv_heads=s.kv_heads, mlp_ratio=s.mlp_ratio,
                      routing="threshold", sparsity_k=s.sparsity_k, router_sparsity_coef=s.sparsity_coef,
                      router_entropy_coef=s.entropy_coef)
    model = HSPMNLM(LMConfig(256, s.layers, blk)).init_parameters(torch.Generator().manual_seed(s.seed))
    master = {k: p.detach().clone() for k, p in model.named_parameters()}
    m = {k: torch.zeros_like(p) for k, p in master.items()}
    v = {k: torch.zeros_like(p) for k, p in master.items()}
    gen = torch.Generator().manual_seed(s.seed + 1)
    trace_windows = val_windows(val, s.seq, limit=8)
    history = []
    t0 = time.time()
    for step in range(s.steps):
        starts = torch.randint(0, len(train) - s.seq - 1, (s.batch,), generator=gen)
        win = torch.stack([train[i:i + s.seq + 1] for i in starts.tolist()])
        stats = train_step(model, master, m, v, [(win[:, :-1], win[:, 1:])], step, seed=s.noise_seed,
                           lr=lr_schedule(step, s.warmup, s.steps, s.lr, s.min_lr_ratio),
                           weight_decay=s.weight_decay, max_norm=s.max_norm,
                           aux_target=aux_target_schedule(step, aux_warmup, s.sparsity_k))
        history.append(stats)
        if trace and ((step + 1) % trace == 0 or step == 0):
            with torch.no_grad():
                for k, p in model.named_parameters():
                    p.copy_(bf16_round(master[k]))
            r = measure(model, trace_windows, s.noise_seed)
            log(f"  step {step + 1:4d} ce {stats['ce']:.3f} nats train_routed {fmt(stats['routed_fraction'])} "
                f"train_p {fmt(stats['router_prob'])} | val bpb {r['val_bpb']:.3f} eval_routed "
                f"{fmt(r['eval_routed'])} mean_p {fmt(r['mean_p'])} ({time.time() - t0:.0f} s)")
    train_secs = time.time() - t0
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(bf16_round(master[k]))
    res = measure(model, val_windows(val, s.seq), s.noise_seed)
    tail = history[-TAIL:]
    L = s.layers
    res["train_routed"] = [sum(h["routed_fraction"][i] for h in tail) / len(tail) for i in range(L)]
    res["train_p"] = [sum(h["router_prob"][i] for h in tail) / len(tail) for i in range(L)]
    res["train_ce_bits"] = sum(h["ce"] for h in tail) / len(tail) / math.log(2)
    res["temperature"] = [float(torch.exp(master[f"blocks.{i}.router.log_temp"]).clamp(0.1, 2.0)) for i in range(L)]
    res["router_w_norm"] = [float(master[f"blocks.{i}.router.w"].norm()) for i in range(L)]
    res["router_b"] = [float(master[f"blocks.{i}.router.b"]) for i in range(L)]
    res["unigram_bits"] = unigram
    res["train_secs"] = train_secs
    res["ok"] = bool(res["val_bpb"] < unigram - 0.5
                     and all(abs(x - s.sparsity_k) <= 0.05 for x in res["eval_routed"]))
    res["settings"] = dataclasses.asdict(s)
    return res


def fmt(xs):
    return "[" + ", ".join(f"{x:.3f}" for x in xs) + "]"


def summary(r):
    lines = [f"val {r['val_bpb']:.3f} bits/byte (unigram {r['unigram_bits']:.3f}), train ce "
             f"{r['train_ce_bits']:.3f} bits, {r['train_secs']:.0f} s, ok={r['ok']}",
             f"train_routed {fmt(r['train_routed'])} train_p {fmt(r['train_p'])}",
             f"eval_routed {fmt(r['eval_routed'])} noisy_routed {fmt(r['noisy_routed'])} expected_noisy "
             f"{fmt(r['expected_noisy'])} mean_p {fmt(r['mean_p'])}",
             f"temperature {fmt(r['temperature'])} |w| {fmt(r['router_w_norm'])} b {fmt(r['router_b'])}"]
    lines.append(f"layer 0 routes bytes '{r['layer0_bytes']}' ({r['layer0_bytes_val_freq']:.3f} of validation)")
    lines += [f"p histogram layer {i}: {h}" for i, h in enumerate(r["p_hist"])]
    return "\n".join("  " + x for x in lines)


def table(paths):
    """Markdown rows of RESULT lines (one JSON object per line, as `grep RESULT | sed` leaves them)."""
    print("| D/L/S/B | steps (warm-up, aux warm-up) | lr | lambda_s | lambda_e | seed | val bits/byte | train routed "
          "| eval routed | noisy routed (val) | mean p (val) | p > 0.9 | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        for line in open(path):
            r = json.loads(line)
            s = r["settings"]
            aw = s["warmup"] if s["aux_warmup"] < 0 else s["aux_warmup"]
            hi = [h[-1] for h in r["p_hist"]]
            print(f"| {s['dim']}/{s['layers']}/{s['seq']}/{s['batch']} | {s['steps']} ({s['warmup']}, {aw}) | "
                  f"{s['lr']:g} | {s['sparsity_coef']:g} | {s['entropy_coef']:g} | {s['seed']} | {r['val_bpb']:.3f} | "
                  f"{fmt(r['train_routed'])} | {fmt(r['eval_routed'])} | {fmt(r['noisy_routed'])} | "
                  f"{fmt(r['mean_p'])} | {fmt(hi)} | {r['train_secs']:.0f} |")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--table":
        table(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), help="start from these settings; flags override")
    ap.add_argument("--trace", type=int, default=0, help="print validation numbers every N steps")
    for f in dataclasses.fields(Settings):
        ap.add_argument("--" + f.name.replace("_", "-"), type=f.type if f.type in (int, float) else
                        {"int": int, "float": float}[f.type], default=None)
    a = ap.parse_args()
    s = dataclasses.replace(PRESETS[a.preset]) if a.preset else Settings()
    for f in dataclasses.fields(Settings):
        val = getattr(a, f.name)
        if val is not None:
            setattr(s, f.name, val)
    print("settings", json.dumps(dataclasses.asdict(s)), flush=True)
    r = run(s, a.trace, log=lambda x: print(x, flush=True))
    print(summary(r))
    print("RESULT " + json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
