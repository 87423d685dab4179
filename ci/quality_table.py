#!/usr/bin/env python3
"""Builds QUALITY.md's tables from the run folders ci/quality.sh wrote (Python 3 standard library only).

  quality_table.py study  --root DIR --section gpu|cpu [--markdown FILE] [--update QUALITY.md] [--svg-dir DIR]
  quality_table.py timing --root DIR --section timing-gpu|timing-cpu [--markdown FILE] [--json FILE] [--update QUALITY.md]

study reads DIR/runs/<name>/{run.json, eval.json, metrics.jsonl, report.html, sample.txt}; timing reads
DIR/timing/<name>/{run.json, metrics.jsonl}. --update replaces the text between
"<!-- quality:SECTION:begin -->" and "<!-- quality:SECTION:end -->" in the file; --svg-dir copies each
run's "Bits per byte" and "Routed fraction per layer" charts out of its report.html as standalone SVG.

Attention FLOPs per token (forward, multiply-add = 2 FLOPs), summed over layers l with f_l the layer's
routed fraction in evaluation mode, D the width, Hkv*Dh the key/value width, S the context:
    K and V projections, every token:         2 * D * 2*Hkv*Dh
    Q and O projections, routed tokens only:  f_l * 2 * 2*D*D
    QK^T and PV, routed tokens only:          f_l * 2 * 2*D * (S+1)/2   (a query at position p reads p+1 keys)
A training step costs about three times the forward. Dense attention is the same with f_l = 1.
"""
import argparse
import json
import math
import os
import re
import statistics
import sys

SKIP_STEPS = 10  # steps left out of the step-time median: the first ones load kernels and warm caches


def load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_metrics(path):
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass  # a line a killed run left unfinished
    except OSError:
        pass
    by_step = {}
    for r in rows:
        by_step[r.get("step")] = r  # a resumed run that overlapped: the later line wins
    return [by_step[k] for k in sorted(k for k in by_step if k is not None)]


def step_time(metrics, tokens_per_step):
    """Median tok/s and ms/step over the steps after the first SKIP_STEPS (all of them if fewer)."""
    timed = [m for m in metrics if m.get("step", 0) > SKIP_STEPS and m.get("tok_s")]
    if not timed:
        timed = [m for m in metrics if m.get("tok_s")]
    if not timed:
        return None, None, []
    tok_s = statistics.median(m["tok_s"] for m in timed)
    return tok_s, 1000.0 * tokens_per_step / tok_s, timed


def attention_flops(run, routed):
    d = run["dim"]
    kv_width = run["kv_heads"] * (d // run["heads"])
    s = run["context"]
    total = 0.0
    for f in routed:
        total += 2 * d * 2 * kv_width + f * (2 * 2 * d * d + 2 * 2 * d * (s + 1) / 2)
    return total


def fmt(x, digits=3):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fractions(v, digits=2):
    return "—" if not v else " ".join(f"{x:.{digits}f}" for x in v)


def collect(root, kind):
    base = os.path.join(root, kind)
    out = []
    if not os.path.isdir(base):
        return out
    for name in sorted(os.listdir(base)):
        d = os.path.join(base, name)
        run = load_json(os.path.join(d, "run.json"))
        if run is None:
            continue
        metrics = load_metrics(os.path.join(d, "metrics.jsonl"))
        tokens = run["batch"] * run["context"]
        tok_s, ms, timed = step_time(metrics, tokens)
        ev = load_json(os.path.join(d, "eval.json"))
        sample = None
        try:
            with open(os.path.join(d, "sample.txt"), "rb") as f:
                sample = f.read().decode("utf-8", "replace")
        except OSError:
            pass
        early = False
        try:
            with open(os.path.join(d, "train.log"), encoding="utf-8", errors="replace") as f:
                early = any(line.startswith("stopped early at step") for line in f)
        except OSError:
            pass
        out.append({"dir": d, "run": run, "metrics": metrics, "tok_s": tok_s, "ms": ms, "timed": timed,
                    "eval": ev, "sample": sample, "early": early,
                    "steps_done": metrics[-1]["step"] if metrics else 0})
    return out


# ---- SVG ----------------------------------------------------------------------------------------------

CHARTS = {"Bits per byte": "bpb", "Routed fraction per layer": "routed"}


def extract_svgs(report_html, prefix, svg_dir):
    """Writes the report's bits-per-byte and routed-fraction charts as standalone SVG; returns their paths."""
    try:
        with open(report_html, encoding="utf-8") as f:
            page = f.read()
    except OSError:
        return {}
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    css = "\n".join(l for l in (style.group(1).splitlines() if style else []) if l.startswith(".chart"))
    written = {}
    for svg in re.findall(r"<svg\b.*?</svg>", page, re.S):
        label = re.search(r'aria-label="([^"]*)"', svg)
        key = CHARTS.get(label.group(1)) if label else None
        if key is None:
            continue
        head_end = svg.index(">") + 1
        head = svg[:head_end]
        if "xmlns=" not in head:
            head = head.replace("<svg", '<svg xmlns="http://www.w3.org/2000/svg"', 1)
        body = svg[head_end:]
        # the page's .chart rules, so the file looks as the report does
        text = head + "\n<style>\n" + css + "\n</style>" + body + "\n"
        path = os.path.join(svg_dir, f"{prefix}-{key}.svg")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        written[key] = path
    return written


# ---- the study table --------------------------------------------------------------------------------

def grouped(root, kind):
    """The runs under root/kind and the same grouped by (context, batch, rho); ([], {}) with a message when none."""
    runs = collect(root, kind)
    if not runs:
        print(f"quality_table: no runs under {root}/{kind}", file=sys.stderr)
    groups = {}
    for r in runs:
        groups.setdefault((r["run"]["context"], r["run"]["batch"], float(r["run"]["rho"])), []).append(r)
    return runs, groups


def study(args):
    runs, groups = grouped(args.root, "runs")
    if not runs:
        return 1
    first = runs[0]["run"]
    lines = []
    dates = sorted(r["run"].get("date", "") for r in runs)
    lines.append(f"Measured on {first.get('device', '?')} ({first.get('backend')}), {dates[0][:10]}"
                 + (f" to {dates[-1][:10]}" if dates[-1][:10] != dates[0][:10] else "")
                 + f"; {first['layers']} layers, width {first['dim']}, {first['heads']} heads / {first['kv_heads']} kv heads, "
                 f"lr {first['lr']} (warm-up {first['warmup']}, cosine to x{first['min_lr_ratio']}), beta2 {first['beta2']}, "
                 f"dropout {first['dropout']}, threshold routing"
                 + (f", extra options `{first['extra_args']}`" if first.get("extra_args") else "")
                 + f"; {'/'.join(str(j) for j in sorted({r['run']['jobs'] for r in runs}))} run(s) at a time on the device "
                 "(each run.json says which; tok/s and ms/step are of a shared device when more than 1)."
                 )
    lines.append("")
    lines.append("| context | batch | rho | runs | scored step (best validation) | validation bits/byte: mean (min–max) | vs rho 1.0 | "
                 "eval routed fraction per layer | attention MFLOP/token (fwd) | train tok/s | ms/step |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    keys = sorted(groups, key=lambda k: (k[0], k[1], -k[2]))
    for k in keys:
        scored = [r for r in groups[k] if r["eval"]]
        bpb = [r["eval"]["bits_per_byte"] for r in scored]
        routed = None
        if scored:
            n = len(scored[0]["eval"]["routed_fraction"])
            routed = [statistics.fmean(r["eval"]["routed_fraction"][i] for r in scored) for i in range(n)]
        summary[k] = {"mean": statistics.fmean(bpb) if bpb else None, "routed": routed, "bpb": bpb, "scored": len(scored)}
    for k in keys:
        g, s = groups[k], summary[k]
        bpb, mean, routed = s["bpb"], s["mean"], s["routed"]
        base = summary.get((k[0], k[1], 1.0), {}).get("mean")
        rel = "—" if base is None or mean is None else "baseline" if k[2] == 1.0 else f"{100 * (mean / base - 1):+.2f} %"
        flops = attention_flops(g[0]["run"], routed) / 1e6 if routed else None
        tok = [r["tok_s"] for r in g if r["tok_s"]]
        ms = [r["ms"] for r in g if r["ms"]]
        steps = sorted({r["eval"]["step"] if r["eval"] else r["steps_done"] for r in g})
        partial = any(not r["run"].get("finished") for r in g)
        spread = f" ({min(bpb):.4f}–{max(bpb):.4f})" if len(bpb) > 1 else ""
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {s['scored']}/{len(g)} | {'/'.join(map(str, steps))}"
                     f"{' (partial)' if partial else ''} | {fmt(mean, 4)}{spread} | {rel} | {fractions(routed)} | "
                     f"{fmt(flops, 2)} | {fmt(statistics.fmean(tok) if tok else None, 0)} | "
                     f"{fmt(statistics.fmean(ms) if ms else None, 1)} |")

    lines.append("")
    lines.append("Goals (computed from the rows above):")
    lines.append("")
    for (ctx, batch, rho), s in sorted(summary.items()):
        if rho == 0.2 and s["mean"] is not None:
            base = summary.get((ctx, batch, 1.0), {}).get("mean")
            if base:
                rel = 100 * (s["mean"] / base - 1)
                lines.append(f"- context {ctx}: rho 0.2 vs rho 1.0 validation bits/byte {rel:+.2f} % "
                             f"(goal: within 2 %: {'met' if abs(rel) <= 2 else 'NOT met'})")
            if ctx == 256 and first["layers"] == 6 and first["dim"] == 384:
                lines.append(f"- baby-GPT shape, rho 0.2: {s['mean']:.4f} bits/byte (goal: below 2.12, nanoGPT's "
                             f"1.4697 nats/char: {'met' if s['mean'] < 2.12 else 'NOT met'})")
    worst = []
    for r in runs:
        if r["eval"]:
            rho = float(r["run"]["rho"])
            dev = max(abs(f - rho) for f in r["eval"]["routed_fraction"])
            worst.append((dev, r["run"]["name"]))
    if worst:
        bad = [n for d, n in worst if d > 0.03]
        dev, name = max(worst)
        lines.append(f"- evaluation-mode routed fraction within 0.03 of rho in every layer: {len(worst) - len(bad)} of "
                     f"{len(worst)} runs (largest deviation {dev:.3f}, {name})"
                     + (f"; not met by {', '.join(bad)}" if bad else ""))

    lines.append("")
    lines.append("Each run:")
    lines.append("")
    lines.append("| run | scored step (best validation) of steps trained/scheduled | validation bits/byte | eval routed fraction per layer | train tok/s | ms/step | wall s | "
                 "learning curves |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in runs:
        name = r["run"]["name"]
        svgs = {}
        if args.svg_dir:
            os.makedirs(args.svg_dir, exist_ok=True)
            svgs = extract_svgs(os.path.join(r["dir"], "report.html"), name, args.svg_dir)
        rel = os.path.dirname(os.path.abspath(args.update)) if args.update else os.getcwd()
        links = " ".join(f"[{k}]({os.path.relpath(p, rel)})" for k, p in sorted(svgs.items())) or "—"
        ev = r["eval"]
        step = ev["step"] if ev else r["steps_done"]
        state = " (partial)" if not r["run"].get("finished") else " (early stop)" if r["early"] else ""
        lines.append(f"| {name} | {step} of {r['steps_done']}/{r['run']['steps']}{state} | "
                     f"{fmt(ev['bits_per_byte'], 4) if ev else '—'} | {fractions(ev['routed_fraction']) if ev else '—'} | "
                     f"{fmt(r['tok_s'], 0)} | {fmt(r['ms'], 1)} | {r['run'].get('wall_s', '—')} | {links} |")
    if args.svg_dir:
        lines.append("")
        for r in runs:
            p = os.path.join(args.svg_dir, f"{r['run']['name']}-bpb.svg")
            if os.path.exists(p):
                rel = os.path.dirname(os.path.abspath(args.update)) if args.update else os.getcwd()
                lines.append(f"![{r['run']['name']}: bits per byte]({os.path.relpath(p, rel)})")
    lines.append("")
    lines.append("Samples (greedy, `hspmn sample --prompt '\\n' --max-new 300`):")
    lines.append("")
    for r in runs:
        if r["sample"] is not None:
            lines.append(f"<details><summary>{r['run']['name']}</summary>")
            lines.append("")
            lines.append("````text")
            lines.append(r["sample"].rstrip("\n").replace("````", "` ` ` `"))
            lines.append("````")
            lines.append("")
            lines.append("</details>")
    text = "\n".join(lines) + "\n"
    return emit(args, text, None)


# ---- the timing table ----------------------------------------------------------------------------------

def timing(args):
    runs, groups = grouped(args.root, "timing")
    if not runs:
        return 1
    by = {k: g[-1] for k, g in groups.items()}
    first = runs[0]["run"]
    lines = [f"Measured on {first.get('device', '?')} ({first.get('backend')}), {first.get('date', '')[:10]}; "
             f"{first['layers']} layers, width {first['dim']}, {first['heads']} heads / {first['kv_heads']} kv heads, "
             f"{first['steps']} steps each, one run at a time; ms/step is the median over steps {SKIP_STEPS + 1} on "
             f"(forward, backward and AdamW of one batch, as `hspmn train` reports each step).", "",
             "| context | batch | rho 1.0 ms/step | rho 0.2 ms/step | ratio (rho 1.0 / rho 0.2) | "
             "routed fraction of the rho 0.2 run (training, with noise), per layer |",
             "|---|---|---|---|---|---|"]
    result = []
    for ctx, batch in sorted({(k[0], k[1]) for k in by}):
        dense = by.get((ctx, batch, 1.0))
        sparse = by.get((ctx, batch, 0.2))
        md = dense["ms"] if dense else None
        ms = sparse["ms"] if sparse else None
        ratio = md / ms if md and ms else None
        routed = None
        if sparse and sparse["timed"]:
            n = len(sparse["timed"][0]["routed_fraction"])
            routed = [statistics.fmean(m["routed_fraction"][i] for m in sparse["timed"]) for i in range(n)]
        lines.append(f"| {ctx} | {batch} | {fmt(md, 2)} | {fmt(ms, 2)} | {fmt(ratio, 3)}"
                     f"{'' if ratio is None else (' (faster)' if ratio > 1 else ' (NOT faster)')} | {fractions(routed)} |")
        result.append({"context": ctx, "batch": batch, "ms_per_step_rho_1": md, "ms_per_step_rho_0_2": ms,
                       "ratio": ratio, "routed_fraction_rho_0_2": routed,
                       "device": first.get("device"), "backend": first.get("backend")})
    # what the study's runs would take at these step times, one at a time (for planning device calls)
    est = []
    for ctx, batch in sorted({(k[0], k[1]) for k in by}):
        ms = [by[k]["ms"] for k in by if k[:2] == (ctx, batch) and by[k]["ms"]]
        if ms:
            est.append(f"context {ctx}: {args.study_steps * statistics.fmean(ms) / 1000:.0f} s")
    if est:
        lines += ["", f"At these step times one {args.study_steps:,}-step run trains in about (mean of the two rho, "
                      f"alone on the device; evaluation, checkpoints and start-up not counted): " + "; ".join(est) + "."]
    text = "\n".join(lines) + "\n"
    return emit(args, text, result)


def emit(args, text, data):
    if args.markdown:
        os.makedirs(os.path.dirname(os.path.abspath(args.markdown)), exist_ok=True)
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text)
    if getattr(args, "json", None) and data is not None:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
    if args.update:
        begin = f"<!-- quality:{args.section}:begin -->"
        end = f"<!-- quality:{args.section}:end -->"
        with open(args.update, encoding="utf-8") as f:
            doc = f.read()
        i, j = doc.find(begin), doc.find(end)
        if i < 0 or j < i:
            print(f"quality_table: {args.update} has no {begin} ... {end} markers", file=sys.stderr)
            return 1
        doc = doc[:i + len(begin)] + "\n" + text + doc[j:]
        with open(args.update, "w", encoding="utf-8") as f:
            f.write(doc)
        print(f"quality_table: updated {args.update} ({args.section})")
    if not args.markdown and not args.update:
        sys.stdout.write(text)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["study", "timing"])
    p.add_argument("--root", required=True)
    p.add_argument("--section", required=True, help="marker name in --update's file (gpu, cpu, timing-gpu, timing-cpu)")
    p.add_argument("--markdown")
    p.add_argument("--json")
    p.add_argument("--update")
    p.add_argument("--svg-dir")
    p.add_argument("--study-steps", type=int, default=5000, help="timing: steps of a study run, for the estimate")
    args = p.parse_args()
    return study(args) if args.what == "study" else timing(args)


if __name__ == "__main__":
    sys.exit(main())
