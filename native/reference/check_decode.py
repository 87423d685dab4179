"""Cached decoding (hspmn_decoder_*, through ctypes) against the full forward of the same library, on
either backend; prints each check with its bound, a summary line, and exits 1 when any check fails.

    .venv/bin/python native/reference/check_decode.py [--backend cpu|cuda] [--lib native/build/libhspmn.so]

Per case (threshold routing; odd sizes: D % 8 != 0, head dims 16, 18 and 64, conv kernels 2, 3, 4):
  prefill in chunks   slot 0 alone, then slots 2 and 0 in one call (lengths 0 and 16), then slots 3, 2
                      and 0 (lengths 0, 8, 24): prompts of 29, 13 and 5 tokens through 3 calls
  32 greedy steps     slots 2, 0, 3 in one call per step (T = 1), each feeding its own argmax
  reset and reuse     slot 2 reset, then slots 1 and 2 prefilled in one call and stepped 8 times;
                      slot 2's stale cache rows past its new length stay in memory and must not matter
With --path step (or graph) the T = 1 calls go through hspmn_decoder_step instead (sampling on the
backend: greedy in the 32 steps, temperature / top-k / top-p in the reuse steps, each checked against
hspmn_sample of the logits the step returns; graph: after hspmn_decoder_capture of sizes 2 and 4, so
the 3-slot steps run in a bucket of 4 with a padding row), and their routed flags are not read (the
append path checks those); the step's bad inputs (a full slot, an uncaptured size, capture on the
CPU) must fail with HSPMN_ERR_INVALID_ARGUMENT.
After every call, each slot's logits against hspmn_model_logits on the slot's whole sequence; every
decoded argmax against the full forward's; at the end of each sequence its `routed` flags against
hspmn_model_forward's per-layer routed fraction (counts, exact) and, token by token, against the
float64 reference hspmn_lm.py (exact), and the last logits against the reference.

Routing margins. A routing decision that flips between the two paths changes a token's output by
its whole attention term, so no logit bound could absorb it; like check_model.py, each sequence
(prompt and its greedy continuation, the latter computed with hspmn_model_logits first) is drawn
again until every token's |n| in the float64 reference is at least MARGIN_FIRST in layer 0 (its input
is the exact embedding) and MARGIN_DEEP in later layers (bf16 block outputs: check_model.py says why
5e-3). Then the decoder and the full forward route every token alike, and the reference agrees.

Bounds:
  logits, cpu        0 (bitwise): CpuBlock::decode runs the forward's float32 ops in the forward's
                     order (cpu_block_decode.cpp), and the head is the same lm_logits.
  logits, cuda       2e-3 relative: CudaBlock::decode runs the forward's kernels with the forward's
                     roundings (cuda_block.cu "cached decoding"; the conv over the cache is the
                     forward's arithmetic tap for tap, the attention sees the same keys in the same
                     tiles); only the cuBLASLt GEMMs see another M and may sum in another order
                     (float32 ulps, ~1e-7). Such a difference flips a bf16 rounding of an activation
                     in roughly 1e-3 of the elements, by one bf16 ulp (2^-8): ~1e-4 per rounding
                     stage, a few stages per layer. 2e-3 is several times that and still 5x below the
                     bf16-path error against float64 (GRAD_BOUND 1e-2 in check_model.py).
  greedy tokens      identical, unless the full forward's top-2 logit gap is smaller than the largest
                     |decoder - full| logit difference of that step (a tie within the bound above;
                     reported, never on the CPU where the difference is 0).
  routed             exact, per token against the reference and per layer against the forward's counts.
  logits vs float64  1e-2 (check_model.py's GRAD_BOUND for logits: a bf16 path).
"""

import ctypes as C
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_harness  # noqa: E402
import check_model  # noqa: E402
from check_model import NativeModel, bf16_bits  # noqa: E402
from hspmn_ctypes import BF16, F32, I32, Context, SamplingParams, bf16_bits_to_f32, rel  # noqa: E402

INVALID_ARGUMENT = 1  # hspmn_status

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))

LOGITS_BOUND = {"cpu": 0.0, "cuda": 2e-3}
REF_BOUND = 1e-2
SPLIT_RATIO = 1.5
MARGIN_FIRST = check_model.MARGIN_FIRST
MARGIN_DEEP = check_model.MARGIN_DEEP
SEARCH_TRIES = 48

MAX_SEQS = 4
STEPS = 32
REUSE_STEPS = 8
PROMPTS = {0: 29, 2: 13, 3: 5}           # first phase: slot -> prompt length
PREFILL = [                              # calls of the first phase: (slot, first token, T) per call
    [(0, 0, 16)],
    [(2, 0, 8), (0, 16, 8)],
    [(3, 0, 5), (2, 8, 5), (0, 24, 5)],
]
STEP_SLOTS = [2, 0, 3]                   # order of the slots in each greedy step's call
REUSE = {1: 9, 2: 9}                     # after slot 2's reset: slot -> prompt length (one call)
MAX_LEN = 64                             # >= 29 + 32 (slot 0's whole sequence)

# name, V, L, block fields (the rest hspmn_block_default_params), model seed
CASES = [
    # GQA 2:1, head dim 16, conv kernel 3 (D % 8 == 0: the vector conv kernels on CUDA)
    ("d64_gqa_k3", 97, 2, dict(dim=64, num_heads=4, num_kv_heads=2, routing="threshold", sparsity_k=0.3), 31),
    # D % 8 != 0 (scalar conv kernels), head dim 18 (the padded attention variant), conv kernel 4, F = 2D
    ("d36_dh18_k4", 61, 2, dict(dim=36, num_heads=2, num_kv_heads=1, conv_kernel=4, mlp_ratio=2,
                                routing="threshold", sparsity_k=0.3), 32),
    # head dim 64 (the exact attention variant), conv kernel 2 (a one-row conv cache), byte vocabulary
    ("d128_dh64_k2", 256, 2, dict(dim=128, num_heads=2, num_kv_heads=1, conv_kernel=2, routing="threshold",
                                  sparsity_k=0.3), 33),
]


class Tmp:
    """Tensors of one call, destroyed when it ends (searches make thousands)."""

    def __init__(self, ctx):
        self.ctx, self.lib, self.made = ctx, ctx.lib, []

    def __enter__(self):
        return self

    def tensor(self, dtype, shape, data=None):
        shape = list(shape)
        arr = (C.c_int64 * len(shape))(*shape)
        h = C.c_void_p()
        self.lib.ok(self.lib.tensor_create(self.ctx.h, dtype, self.ctx.memory, len(shape), arr, C.byref(h)),
                    "tensor_create")
        self.made.append(h)
        if data is not None:
            data = np.ascontiguousarray(data)
            self.lib.ok(self.lib.tensor_copy_in(h, data.ctypes.data, data.nbytes), "copy_in")
        return h

    def __exit__(self, *exc):
        for h in self.made:
            self.lib.ok(self.lib.tensor_destroy(h), "tensor_destroy")
        return False


def full_logits(native, V, seq):
    """hspmn_model_logits of one sequence: [V] f32 after its last token."""
    with Tmp(native.ctx) as t:
        tok = t.tensor(I32, (1, len(seq)), np.asarray(seq, dtype=np.int32)[None, :])
        out = t.tensor(F32, (1, V))
        native.lib.ok(native.lib.model_logits(native.h, tok, out), "model_logits")
        return native.ctx.read(out, F32, (1, V))[0]


def forward_routed_counts(native, seq):
    """Per layer: tokens hspmn_model_forward (evaluation, no noise) routes in one sequence."""
    S = len(seq)
    lib = native.lib
    fp = lib.model_forward_default_params()
    fp.training, fp.aux_target = 0, -1.0
    with Tmp(native.ctx) as t:
        tok = t.tensor(I32, (1, S), np.asarray(seq, dtype=np.int32)[None, :])
        tgt = t.tensor(I32, (1, S), np.zeros((1, S), dtype=np.int32))
        loss, stats = t.tensor(F32, (2,)), t.tensor(F32, (native.L, 2))
        lib.ok(lib.model_forward(native.h, C.byref(fp), tok, tgt, loss, stats), "model_forward")
        st = native.ctx.read(stats, F32, (native.L, 2))
    return [int(round(float(st[i, 1]) * S)) for i in range(native.L)]


def reference_routing(ref, seq):
    """float64 reference, no noise: per token and layer selected (n > 0), per layer min |n|, last logits."""
    with torch.no_grad():
        o = ref(torch.tensor([seq], dtype=torch.int64), None, training=False)
        sel = np.stack([(b.scores[0] > 0).numpy() for b in o.blocks], axis=1).astype(np.int32)  # [S, L]
        margins = [float(b.scores[0].abs().min()) for b in o.blocks]
        last = ref.logits(o.hidden[:, -1:, :])[0, 0].numpy()
    return sel, margins, last


def margins_ok(margins):
    return all(m >= (MARGIN_FIRST if i == 0 else MARGIN_DEEP) for i, m in enumerate(margins))


def greedy_sequence(native, ref, V, rng, prompt_len, steps):
    """A prompt and its greedy continuation by hspmn_model_logits, drawn until every token's routing
    margin holds (module docstring). Returns (prompt + continuation, margins, tries)."""
    for trial in range(SEARCH_TRIES):
        seq = [int(x) for x in rng.integers(0, V, size=prompt_len)]
        for _ in range(steps):
            seq.append(int(np.argmax(full_logits(native, V, seq))))
        _, margins, _ = reference_routing(ref, seq)
        if margins_ok(margins):
            return seq, margins, trial
    raise RuntimeError(f"no sequence of {prompt_len} + {steps} tokens with a routing margin in {SEARCH_TRIES} "
                       f"tries (last margins {margins})")


class NativeDecoder:
    def __init__(self, native, max_seqs, max_len):
        self.native, self.lib, self.ctx = native, native.lib, native.ctx
        h = C.c_void_p()
        self.lib.ok(self.lib.decoder_create(native.h, max_seqs, max_len, C.byref(h)), "decoder_create")
        self.h = h

    def append(self, slots, tokens, V):
        """slots: [n]; tokens: [n, T]. Returns logits [n, V] f32 and routed [n, T, L] i32."""
        tokens = np.asarray(tokens, dtype=np.int32)
        n, T = tokens.shape
        L = self.native.L
        with Tmp(self.ctx) as t:
            s = t.tensor(I32, (n,), np.asarray(slots, dtype=np.int32))
            tk = t.tensor(I32, (n, T), tokens)
            lg, rt = t.tensor(F32, (n, V)), t.tensor(I32, (n, T, L))
            self.lib.ok(self.lib.decoder_append(self.h, s, tk, lg, rt), "decoder_append")
            return self.ctx.read(lg, F32, (n, V)), self.ctx.read(rt, I32, (n, T, L))

    def _step(self, slots, tokens, params, next_out, logits):
        """One hspmn_decoder_step call: its status (params: greedy when None)."""
        n = len(slots)
        if params is None:
            params = [self.lib.sampling_default_params() for _ in range(n)]
        arr = (SamplingParams * n)(*params)
        s = np.ascontiguousarray(slots, dtype=np.int32)
        tk = np.ascontiguousarray(tokens, dtype=np.int32)
        return self.lib.decoder_step(self.h, n, s.ctypes.data, tk.ctypes.data, arr, next_out.ctypes.data, logits), arr

    def step(self, slots, tokens, V, params=None):
        """hspmn_decoder_step: slots [n], tokens [n]. Returns (logits [n, V] f32, next [n] i32, params)."""
        n = len(slots)
        nxt = np.full(n, -7, dtype=np.int32)
        with Tmp(self.ctx) as t:
            lg = t.tensor(F32, (n, V))
            status, arr = self._step(slots, tokens, params, nxt, lg)
            self.lib.ok(status, "decoder_step")
            return self.ctx.read(lg, F32, (n, V)), nxt, arr

    def step_status(self, slots, tokens):
        """The status of a greedy step that is expected to fail (nothing to read)."""
        return self._step(slots, tokens, None, np.zeros(len(slots), dtype=np.int32), None)[0]

    def capture(self, sizes):
        arr = (C.c_int32 * len(sizes))(*sizes)
        return self.lib.decoder_capture(self.h, arr, len(sizes))

    def reset(self, slot):
        self.lib.ok(self.lib.decoder_reset(self.h, slot), "decoder_reset")

    def length(self, slot):
        v = C.c_int64()
        self.lib.ok(self.lib.decoder_length(self.h, slot, C.byref(v)), "decoder_length")
        return v.value

    def destroy(self):
        if self.h:
            self.lib.ok(self.lib.decoder_destroy(self.h), "decoder_destroy")
            self.h = None


def sampled(ctx, logits, params):
    """hspmn_sample of [n, V] logits under params (a ctypes array): [n] i32."""
    n, V = logits.shape
    with Tmp(ctx) as t:
        lg = t.tensor(F32, (n, V), np.ascontiguousarray(logits, dtype=np.float32))
        out = t.tensor(I32, (n,))
        ctx.lib.ok(ctx.lib.sample(ctx.h, lg, params, out), "sample")
        return ctx.read(out, I32, (n,))


def run_case(lib, args, case, rows):
    backend, threads, path = args.backend, args.threads, args.path
    name, V, L, block, seed = case
    bound = LOGITS_BOUND[backend]
    c = check_harness.Case(name, rows)
    report, info, failures = c.check, c.info, c.failures
    cfg = check_harness.lm_config(lib, V, L, block)
    rng = np.random.default_rng(seed)
    ctx = Context(lib, backend, threads)
    native = dec = None
    try:
        native = NativeModel(ctx, V, L, block, seed)
        # Gains != 1 and a temperature != 1, as check_model.py. The router: b = 0 and w ~ N(0, 2^2),
        # so l = x . w has a spread of ~1 around 0 (about half the tokens routed, few near the
        # threshold); the initial b = ln(rho / (1 - rho)) with tiny w routes almost none at this size.
        for pname in native.names:
            shape = native.shapes[pname]
            if pname.endswith("norm"):
                native.set("model_set_param", pname, bf16_bits_to_f32(bf16_bits(rng.uniform(0.6, 1.4, shape))))
            elif pname.endswith("router.log_temp"):
                native.set("model_set_param", pname, np.full(shape, 0.2, np.float32))
            elif pname.endswith("router.w"):
                native.set("model_set_param", pname, bf16_bits_to_f32(bf16_bits(rng.normal(0.0, 2.0, shape))))
            elif pname.endswith("router.b"):
                native.set("model_set_param", pname, np.zeros(shape, np.float32))
        ref = check_model.reference_model(cfg, native)

        # ---- the sequences: prompts with greedy continuations (full forward), margins checked
        seqs, tries = {}, []
        for slot, plen in PROMPTS.items():
            seqs[slot], _, trial = greedy_sequence(native, ref, V, rng, plen, STEPS)
            tries.append(trial)
        reuse = {}
        for slot, plen in REUSE.items():
            reuse[slot], _, trial = greedy_sequence(native, ref, V, rng, plen, REUSE_STEPS)
            tries.append(trial)
        info("sequences redrawn for a routing margin (most for one)", max(tries))

        # The CUDA step path's attention (sqdk_attention_decode, head dims 32/64/128 with D % 32 == 0)
        # splits the keys, so its p are rounded to bf16 relative to another running maximum than the
        # Triton forward's (sqdk_attention_decode.cu): the two agree to bf16 accuracy, not to float32
        # order. There the step's logits are held to the float64 reference instead: no less accurate
        # than the full forward's at the same position (ratio of errors <= SPLIT_RATIO) and within
        # REF_BOUND of it, besides within REF_BOUND of the full forward.
        dh = block["dim"] // block["num_heads"]
        split_attention = (path != "append" and backend == "cuda" and block["dim"] % 32 == 0
                           and dh in (32, 64, 128))
        dec = NativeDecoder(native, MAX_SEQS, MAX_LEN)
        if path != "append":
            # bad inputs of the step path, on a decoder of their own: capture on the CPU, a size past
            # every captured bucket, size 0, a full slot
            bad = NativeDecoder(native, MAX_SEQS, 1)
            try:
                if backend == "cpu":
                    report("hspmn_decoder_capture on the CPU is INVALID_ARGUMENT",
                           0.0 if bad.capture([2]) == INVALID_ARGUMENT else math.inf, 0.0)
                elif block["dim"] % 32 != 0:
                    # the step kernels take widths that are multiples of 32; other shapes step eagerly
                    report("hspmn_decoder_capture of a D % 32 != 0 model is INVALID_ARGUMENT",
                           0.0 if bad.capture([2]) == INVALID_ARGUMENT else math.inf, 0.0)
                    path = "step"
                else:
                    lib.ok(bad.capture([2]), "decoder_capture [2]")
                    report("a step of 3 slots with only size 2 captured is INVALID_ARGUMENT",
                           0.0 if bad.step_status([0, 1, 2], [1, 1, 1]) == INVALID_ARGUMENT else math.inf, 0.0)
                    report("capture of size 0 is INVALID_ARGUMENT",
                           0.0 if bad.capture([0]) == INVALID_ARGUMENT else math.inf, 0.0)
                bad.append([0], [[1]], V)
                report("a step on a full slot is INVALID_ARGUMENT",
                       0.0 if bad.step_status([0], [1]) == INVALID_ARGUMENT else math.inf, 0.0)
            finally:
                bad.destroy()
            if path == "graph":
                lib.ok(dec.capture([2, 4]), "decoder_capture [2, 4]")
        split_worst = [0.0, 0.0]  # worst step error vs float64, worst ratio to the full forward's
        worst = {"prefill": 0.0, "steps": 0.0, "reuse": 0.0}
        sample_bad = [0, 0]  # rows whose step token differs from hspmn_sample / rows checked
        greedy_bad, ties = [], 0
        routed = {}     # slot -> list of [L] i32 per token of its current sequence
        finished = []   # (label, sequence, routed [S, L], last decoder logits)

        def append(phase, calls):
            """calls: (slot, sequence, prompt length, first, T) per slot, all T equal. Checks each
            slot's logits, and its argmax where the next token is a greedy one."""
            nonlocal ties
            slots = [c[0] for c in calls]
            toks = [c[1][c[3]:c[3] + c[4]] for c in calls]
            if path != "append" and all(c[4] == 1 for c in calls):
                params = None
                if phase == "reuse":
                    params = []
                    for j, slot in enumerate(slots):
                        p = lib.sampling_default_params()
                        p.temperature, p.top_k, p.top_p = 0.8, (0, 5, 0)[j % 3], (1.0, 1.0, 0.9)[j % 3]
                        p.seed, p.draw = 1000 + slot, 1 + calls[j][3]
                        params.append(p)
                logits, nxt, arr = dec.step(slots, [t[0] for t in toks], V, params)
                want_next = sampled(dec.ctx, logits, arr)
                sample_bad[0] += int(np.sum(nxt != want_next))
                sample_bad[1] += len(slots)
                rt = None
            else:
                logits, rt = dec.append(slots, toks, V)
            for j, (slot, seq, plen, first, T) in enumerate(calls):
                if rt is not None:
                    routed.setdefault(slot, []).extend(rt[j])
                want = full_logits(native, V, seq[:first + T])
                worst[phase] = max(worst[phase], rel(logits[j], want))
                if split_attention and rt is None:
                    _, _, ref_last = reference_routing(ref, seq[:first + T])
                    e_step, e_full = rel(logits[j], ref_last), rel(want, ref_last)
                    split_worst[0] = max(split_worst[0], e_step)
                    split_worst[1] = max(split_worst[1], e_step / max(e_full, 1e-6))
                if plen <= first + T < len(seq):
                    got_tok, want_tok = int(np.argmax(logits[j])), int(np.argmax(want))
                    if want_tok != seq[first + T]:
                        raise RuntimeError(f"{name}: the full forward is not repeatable at slot {slot}")
                    if got_tok != want_tok:
                        top2 = np.sort(want)[-2:]
                        if top2[1] - top2[0] <= float(np.max(np.abs(logits[j] - want))):
                            ties += 1
                        else:
                            greedy_bad.append((slot, first + T, got_tok, want_tok))
            return logits

        # ---- phase 1: chunked prefill of slots of different lengths, then greedy steps
        for call in PREFILL:
            append("prefill", [(slot, seqs[slot], PROMPTS[slot], first, T) for slot, first, T in call])
        for slot in PROMPTS:
            report(f"hspmn_decoder_length slot {slot} after prefill",
                   0.0 if dec.length(slot) == PROMPTS[slot] else math.inf, 0.0)
        last = {}
        for step in range(STEPS):
            lg = append("steps", [(slot, seqs[slot], PROMPTS[slot], PROMPTS[slot] + step, 1) for slot in STEP_SLOTS])
            for j, slot in enumerate(STEP_SLOTS):
                last[slot] = lg[j]
        # the last step's logits follow the last token: nothing to compare its argmax with
        for slot in STEP_SLOTS:
            finished.append((f"slot {slot}", seqs[slot], np.asarray(routed[slot]), last[slot]))

        # ---- phase 2: reset slot 2 (its stale rows stay), prefill slots 1 and 2 together, step both
        dec.reset(2)
        report("hspmn_decoder_length slot 2 after reset", 0.0 if dec.length(2) == 0 else math.inf, 0.0)
        routed[2] = []
        T = REUSE[1]
        assert REUSE[2] == T
        append("reuse", [(1, reuse[1], T, 0, T), (2, reuse[2], T, 0, T)])
        for step in range(REUSE_STEPS):
            lg = append("reuse", [(2, reuse[2], T, T + step, 1), (1, reuse[1], T, T + step, 1)])
            last[2], last[1] = lg[0], lg[1]
        for slot in (2, 1):
            finished.append((f"slot {slot} (reused)" if slot == 2 else f"slot {slot}", reuse[slot],
                             np.asarray(routed[slot]), last[slot]))

        for phase, err in worst.items():
            report(f"logits vs hspmn_model_logits, worst of {phase}", err,
                   REF_BOUND if split_attention and phase != "prefill" else bound)
        if split_attention:
            report("step logits vs float64 reference, worst", split_worst[0], REF_BOUND)
            report("step error / full forward's error vs float64, worst", split_worst[1], SPLIT_RATIO)
        if path != "append":
            report(f"step tokens = hspmn_sample of the step's logits (rows differing of {sample_bad[1]})",
                   float(sample_bad[0]), 0.0)
        report("greedy argmax = full forward's (mismatches)", float(len(greedy_bad)), 0.0)
        for bad in greedy_bad[:5]:
            info(f"greedy mismatch slot {bad[0]} at {bad[1]}: decoder {bad[2]} full {bad[3]}", 1.0)
        info("greedy ties within the logit difference", float(ties))

        total = selected = 0
        if path != "append":
            finished = [(label, seq, None, lg) for label, seq, _, lg in finished]
        for label, seq, rt, lg in finished:
            if rt is None:  # the step path returns no routed flags: the last logits only
                _, _, ref_last = reference_routing(ref, seq)
                report(f"{label}: last logits vs float64 reference", rel(lg, ref_last), REF_BOUND)
                continue
            S = len(seq)
            report(f"{label}: routed rows = tokens ({S})", 0.0 if rt.shape == (S, L) else math.inf, 0.0)
            sel, margins, ref_last = reference_routing(ref, seq)
            report(f"{label}: routed vs float64 reference, tokens x layers differing",
                   float(np.sum(rt != sel)), 0.0)
            counts = forward_routed_counts(native, seq)
            for i in range(L):
                report(f"{label}: routed count layer {i} vs hspmn_model_forward ({counts[i]})",
                       float(abs(int(rt[:, i].sum()) - counts[i])), 0.0)
            info(f"{label}: smallest routing margin", min(margins))
            report(f"{label}: last logits vs float64 reference", rel(lg, ref_last), REF_BOUND)
            total += rt.size
            selected += int(rt.sum())
        if path == "append":
            info("fraction of tokens x layers routed", selected / max(total, 1))
            report("both routing paths exercised (0 < routed < all)", 0.0 if 0 < selected < total else math.inf, 0.0)
    finally:
        if dec is not None:
            dec.destroy()
        if native is not None:
            native.destroy()
        ctx.close()
    return failures


def main():
    def options(ap):
        ap.add_argument("--path", choices=["append", "step", "graph"], default="append",
                        help="how the T = 1 calls run: hspmn_decoder_append, hspmn_decoder_step, "
                             "or the step after capture")
    return check_harness.main(__doc__, "check_decode", CASES, run_case, options, lambda args: f" --path {args.path}")


if __name__ == "__main__":
    sys.exit(main())
