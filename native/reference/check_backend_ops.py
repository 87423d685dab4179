"""The CPU backend's ops against the float64 PyTorch reference, case by case, for the one registry of
native/tests/backend_ops/registry.cpp (the same cases test_backend_ops runs every other backend on
against these CPU ops).

    .venv/bin/python native/reference/check_backend_ops.py --bin native/build/tests/test_backend_ops
        [--dir DIR] [--op SUBSTRING]

Runs `test_backend_ops --dump DIR` (the cases' inputs and the CPU outputs), computes each op with
hspmn_ref / hspmn_lm in float64 and judges every output by normalised MSE,
sum (cpu - ref)^2 / sum ref^2 <= bound^2, the bound of the output's precision from tolerances.json
(f32 for float32 results, bf16 for a bf16-rounded one; exact outputs must be equal). Exits 1 on any
failure. ctest runs it as backend_ops_cpu.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import hspmn_lm  # noqa: E402
import hspmn_ref  # noqa: E402

TOLERANCES = os.path.join(HERE, "tolerances.json")
D64 = torch.float64


def load_tolerances(path=TOLERANCES):
    with open(path) as f:
        return json.load(f)


def read(d, a):
    dtype = np.int32 if a["dtype"] == "i32" else np.float32
    v = np.fromfile(os.path.join(d, a["file"]), dtype=dtype).reshape(a["shape"])
    t = torch.from_numpy(v.copy())
    return t.to(torch.int64) if a["dtype"] == "i32" else t.to(D64)


def grads(fn, inputs, d_out):
    """Gradients of sum(fn(*inputs) * d_out) with respect to every input."""
    xs = [x.clone().requires_grad_(True) for x in inputs]
    y = fn(*xs)
    (y * d_out).sum().backward()
    return [x.grad for x in xs]


def rms_rstd(x, eps):
    return torch.rsqrt(x.pow(2).mean(-1) + hspmn_ref.f32(eps))


def rope_rows(p, I, backward):
    """The rope op's rows: keys [B*S] at r % S (C == 0), or [B, C] queries at pos, rows past counts 0."""
    B, S, C, heads, Dh = (int(p[k]) for k in ("B", "S", "C", "heads", "Dh"))
    if C:
        x = I["x"].view(B, C, heads, Dh)
        pos = I["pos"]
        valid = (torch.arange(C)[None, :] < I["counts"][:, None])
    else:
        x = I["x"].view(B, S, heads, Dh)
        pos = torch.arange(S).expand(B, S)
        valid = torch.ones(B, S, dtype=torch.bool)
    fn = lambda t: hspmn_ref.rope(t, pos, p["base"])  # noqa: E731
    if backward:  # the transpose of the rotation: d/dx of sum(rope(x) * dy) with dy the input
        y = grads(fn, [torch.zeros_like(x)], x)[0]
    else:
        y = fn(x)
    y = y * valid[:, :, None, None]
    return y.reshape(-1, heads * Dh)


def route_select(n, routing, k, C):
    B, S = n.shape
    pos = torch.arange(S).expand(B, S)
    if routing == 0:
        order = torch.sort(-n, dim=1, stable=True).indices[:, :k]
        idx = torch.sort(order, dim=1).values
        return idx, torch.full((B,), k, dtype=torch.int64)
    sel = n > 0
    counts = sel.sum(dim=1)
    key = torch.where(sel, pos, pos + S)
    idx = torch.sort(key, dim=1).values
    idx = torch.where(torch.arange(S)[None, :] < counts[:, None], idx, torch.full_like(idx, -1))
    return idx[:, :C], counts


def attention(p, I, decode):
    if decode:
        B, C, S = int(p["seqs"]), 1, int(p["max_len"])
        pos = torch.where(I["qcnt"] > 0, I["qpos"], torch.full_like(I["qpos"], -1)).view(B, 1)
    else:
        B, C, S = int(p["B"]), int(p["C"]), int(p["S"])
        pos = torch.where(torch.arange(C)[None, :] < I["counts"][:, None], I["pos"], torch.full_like(I["pos"], -1))
    H, Hkv, Dh = int(p["H"]), int(p["Hkv"]), int(p["Dh"])
    q = I["q"].view(B, C, H, Dh)
    k = I["k"].view(B, S, Hkv, Dh)
    v = I["v"].view(B, S, Hkv, Dh)
    fn = lambda q, k, v: hspmn_ref.sqdk_attention(q, k, v, pos)  # noqa: E731
    o = fn(q, k, v)
    # lse [B, H, C]: natural log-sum-exp of the scaled scores a query sees; 0 on padding rows
    kh = k.repeat_interleave(H // Hkv, dim=2)
    scores = torch.einsum("bchd,bshd->bhcs", q, kh) / math.sqrt(Dh)
    allowed = torch.arange(S)[None, None, :] <= pos.clamp(min=0)[:, :, None]
    lse = torch.logsumexp(scores.masked_fill(~allowed[:, None], float("-inf")), dim=-1)
    lse = lse * (pos >= 0)[:, None, :]
    out = {"o": o.reshape(B, C, H * Dh), "lse": lse}
    if "d_o" in I:
        dq, dk, dv = grads(fn, [q, k, v], I["d_o"].view(B, C, H, Dh))
        out.update(dq=dq.reshape(B, C, H * Dh), dk=dk.reshape(B, S, Hkv * Dh), dv=dv.reshape(B, S, Hkv * Dh))
    return out


def decode_step_pre(p, I):
    """One decode step's rows before the GEMMs: l = x.w + b, n = l / t, routed iff n > 0 (threshold), the
    reflex norm's h, the causal conv over [the slot's K-1 cached h, h], the attention norm's a, the cache
    shifted by one; qpos / qcnt per slot, row_cache = slot * max_len + pos (-1 for a padding row)."""
    n, seqs, L, K = (int(p[k]) for k in ("n", "max_seqs", "max_len", "K"))
    x, slot, pos = I["x"], I["slot"], I["pos"]
    t = hspmn_ref.router_temperature(I["log_temp"])
    score = hspmn_ref.router_logits(x, I["router_w"], I["router_b"]) / t
    h = hspmn_ref.rms_norm(x, I["reflex_norm_w"], p["eps"])
    a = hspmn_ref.rms_norm(x, I["attn_norm_w"], p["eps"])
    cache = I["conv_cache"].clone()
    c = torch.zeros_like(x)
    routed = (slot >= 0) & (score > 0)
    qpos = torch.full((seqs,), -1, dtype=torch.int64)
    qcnt = torch.zeros(seqs, dtype=torch.int64)
    row_cache = torch.where(slot >= 0, slot * L + pos, torch.full_like(slot, -1))
    for r in range(n):
        s = int(slot[r])
        if s < 0:
            continue
        qpos[s] = int(pos[r]) if routed[r] else -1
        qcnt[s] = int(routed[r])
        seq = torch.cat([cache[s, :K - 1], h[r:r + 1]])[None]  # [1, K, D]: the K inputs ending at this row
        c[r] = hspmn_ref.causal_conv(seq, I["conv_w"])[0, -1]
        if K > 1:
            cache[s, :K - 1] = seq[0, 1:]
    return {"c": c, "a": a, "conv_cache": cache, "routed": routed.to(torch.int64), "qpos": qpos, "qcnt": qcnt,
            "row_cache": row_cache}


def reference(op, p, I):
    """float64 results of one case, by output name."""
    if op in ("rms_norm_forward", "rms_norm_backward"):
        fn = lambda x, w: hspmn_ref.rms_norm(x, w, p["eps"])  # noqa: E731
        if op == "rms_norm_forward":
            return {"y": fn(I["x"], I["w"]), "rstd": rms_rstd(I["x"], p["eps"])}
        dx, dw = grads(fn, [I["x"], I["w"]], I["dy"])
        return {"dx": dx, "dw": dw}
    if op in ("rms_norm_pair_forward", "rms_norm_pair_backward"):
        # h = rms_norm(x, w_h), a = rms_norm(x, w_a): the block's two norms of one x (MODEL.md)
        fn = lambda x, wa, wh: (hspmn_ref.rms_norm(x, wa, p["eps"]), hspmn_ref.rms_norm(x, wh, p["eps"]))  # noqa: E731
        if op == "rms_norm_pair_forward":
            a, h = fn(I["x"], I["w_a"], I["w_h"])
            return {"h": h, "a": a, "rstd": rms_rstd(I["x"], p["eps"])}
        xs = [t.clone().requires_grad_(True) for t in (I["x"], I["w_a"], I["w_h"])]
        a, h = fn(*xs)
        ((a * I["dy_a"]).sum() + (h * I["dy_h"]).sum()).backward()
        return {"dx": I["dx0"] + xs[0].grad, "dw_a": xs[1].grad, "dw_h": xs[2].grad}
    if op in ("causal_conv_forward", "causal_conv_backward"):
        if op == "causal_conv_forward":
            return {"c": hspmn_ref.causal_conv(I["h"], I["w"])}
        dh, dw = grads(hspmn_ref.causal_conv, [I["h"], I["w"]], I["dc"])
        return {"dh": dh, "dw": dw}
    if op == "rms_norm_pair_conv_forward":
        # a whole-sequence pass's entry: the two norms of x, then the reflex conv of h (MODEL.md step 2)
        h = hspmn_ref.rms_norm(I["x"], I["w_h"], p["eps"])
        return {"h": h, "a": hspmn_ref.rms_norm(I["x"], I["w_a"], p["eps"]), "c": hspmn_ref.causal_conv(h, I["w_c"]),
                "rstd": rms_rstd(I["x"], p["eps"]).reshape(-1)}
    if op == "residual_out":
        # out = x + m, + o on the query rows (MODEL.md step 4 with y = 1 in value)
        B, S, C = (int(p[k]) for k in ("B", "S", "C"))
        out = I["m"] + I["x"]
        for b in range(B):
            for j in range(int(I["counts"][b])):
                out[b * S + int(I["indices"][b, j])] += I["o"][b * C + j]
        return {"out": out}
    if op in ("swiglu_forward", "swiglu_backward"):
        fn = lambda g, u: F.silu(g) * u  # noqa: E731
        if op == "swiglu_forward":
            return {"a": fn(I["g"], I["u"])}
        dg, du = grads(fn, [I["g"], I["u"]], I["da"])
        return {"dg": dg, "du": du}
    if op in ("rope_forward", "rope_backward"):
        return {"y": rope_rows(p, I, op == "rope_backward")}
    if op == "router_logits":
        return {"l": hspmn_ref.router_logits(I["x"], I["w"], I["b"])}
    if op == "gumbel_noise":
        g = hspmn_ref.gumbel_noise(int(p["seed"]), int(p["step"]), int(p["layer"]), int(p["B"]), int(p["S"]))
        return {"g": g.to(D64)}
    if op == "route_select":
        idx, counts = route_select(I["n"], int(p["routing"]), int(p["k"]), int(p["C"]))
        return {"indices": idx, "counts": counts}
    if op in ("aux_loss_forward", "aux_loss_backward"):
        fn = lambda l: hspmn_ref.aux_loss(l, p["target"], p["lambda_s"], p["lambda_e"])  # noqa: E731
        if op == "aux_loss_forward":
            return {"aux": fn(I["l"])}
        return {"dl": grads(fn, [I["l"]], torch.tensor([hspmn_ref.f32(p["d_aux"])], dtype=D64))[0]}
    if op in ("sqdk_attention_forward", "sqdk_attention_backward", "sqdk_attention_decode"):
        return attention(p, I, op == "sqdk_attention_decode")
    if op == "rope_step":
        n, seqs, H, Hkv, Dh = (int(p[k]) for k in ("n", "max_seqs", "H", "Hkv", "Dh"))
        pos = I["pos"].view(1, n)
        k = hspmn_ref.rope(I["kf"].view(1, n, Hkv, Dh), pos, p["base"]).reshape(n, Hkv * Dh)
        q = hspmn_ref.rope(I["qf"].view(1, n, H, Dh), pos, p["base"]).reshape(n, H * Dh)
        live = I["slot"] >= 0
        q_slots = torch.zeros(seqs, H * Dh, dtype=D64)
        for r in range(n):
            if live[r] and I["routed"][r]:
                q_slots[I["slot"][r]] = q[r]
        return {"k_rows": k * live[:, None], "q_slots": q_slots}
    if op == "decode_step_pre":
        return decode_step_pre(p, I)
    if op == "cross_entropy_fused":
        h, table, t = I["h"], I["table"], I["targets"]
        z = h @ table.T
        lse = torch.logsumexp(z, dim=1)
        g = torch.softmax(z, dim=1)
        g[torch.arange(len(t)), t] -= 1.0
        gs = hspmn_ref.f32(p["grad_scale"])
        return {"loss_sum": (lse - z.gather(1, t[:, None])[:, 0]).sum().reshape(1), "dh": gs * (g @ table),
                "d_table": gs * (g.T @ h)}
    if op == "adamw_update":
        master, m, v = I["master"].clone(), I["m"].clone(), I["v"].clone()
        f = hspmn_ref.f32
        hspmn_lm.adamw_update(master, I["grad"] * f(p["grad_scale"]), m, v, int(p["step"]), f(p["lr"]),
                              f(p["weight_decay"]), f(p["beta1"]), f(p["beta2"]), f(p["eps"]))
        return {"master": master, "m": m, "v": v, "value": master.to(torch.bfloat16).to(D64)}
    raise KeyError(f"no reference for op {op}")


def nmse(got, ref):
    got, ref = got.to(D64), ref.to(D64)
    if got.shape != ref.shape:
        return math.inf
    num = float(((got - ref) ** 2).sum())
    den = float((ref ** 2).sum())
    if math.isnan(num):
        return math.inf
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return num / den


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="test_backend_ops")
    ap.add_argument("--dir", help="keep the dump here (default: a temporary folder)")
    ap.add_argument("--op", default="", help="only cases whose name contains this")
    ap.add_argument("--tolerances", default=TOLERANCES)
    args = ap.parse_args()
    tol = load_tolerances(args.tolerances)
    bounds = {"exact": 0.0, "f32": tol["f32"] ** 2, "bf16": tol["bf16"] ** 2}
    torch.set_num_threads(min(4, os.cpu_count() or 1))

    with tempfile.TemporaryDirectory() as tmp:
        d = args.dir or tmp
        os.makedirs(d, exist_ok=True)
        cmd = [args.bin, "--dump", d] + (["--op", args.op] if args.op else [])
        subprocess.run(cmd, check=True)
        with open(os.path.join(d, "manifest.json")) as f:
            cases = json.load(f)["cases"]
        failures, rows = [], 0
        print(f"{'case':<58} {'output':<9} {'prec':<5} {'nmse':>10} {'bound':>10}")
        for c in cases:
            I = {a["name"]: read(d, a) for a in c["inputs"]}
            ref = reference(c["op"], c["params"], I)
            for a in c["outputs"]:
                got = read(d, a)
                if a["name"] not in ref:
                    failures.append(f"{c['name']}: no reference for output {a['name']}")
                    continue
                r = ref[a["name"]].detach()
                if a["dtype"] == "i32":
                    e = 0.0 if got.shape == r.shape and torch.equal(got, r.to(torch.int64)) else math.inf
                else:
                    e = nmse(got, r.reshape(got.shape) if r.numel() == got.numel() else r)
                bound = bounds[a["prec"]]
                ok = e <= bound
                rows += 1
                verdict = "ok" if ok else "FAIL"
                print(f"{c['name']:<58} {a['name']:<9} {a['prec']:<5} {e:10.3e} {bound:10.3e}  {verdict}")
                if not ok:
                    failures.append(f"{c['name']}: {a['name']} nmse {e:.3e} > {bound:.3e}")
        print(f"{len(cases)} cases, {rows} outputs of the CPU backend against the float64 reference, "
              f"{len(failures)} failures")
        for f_ in failures:
            print("FAIL", f_)
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
