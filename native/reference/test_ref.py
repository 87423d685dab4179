"""Self-test of the reference: python native/reference/test_ref.py (exits non-zero on failure).

The reference is the judge of every backend, so its own gradients are checked against finite
differences, and the choices of native/README.md (Philox, ties, entropy form, clamp) are pinned.
"""

import math
import sys

import torch
import torch.nn.functional as F
from torch.func import functional_call

from check_harness import Tests
from hspmn_ref import (DROPOUT_TAG_ATTN, DROPOUT_TAG_REFLEX, BlockConfig, HSPMNBlock, aux_loss, bf16_round,
                       causal_conv, dropout_keep, dropout_mask, dropout_masks, dropout_scale, dropout_threshold,
                       gumbel_noise, route_select, router_temperature, sqdk_attention, topk_count)
from philox import philox4x32_10

test = Tests()


def tiny_block(routing, log_temp, seed=0, **kw):
    args = dict(dim=8, num_heads=2, num_kv_heads=1, mlp_ratio=2, conv_kernel=3, routing=routing,
                sparsity_k=0.3, router_sparsity_coef=0.5, router_entropy_coef=0.2)
    args.update(kw)
    cfg = BlockConfig(**args)
    gen = torch.Generator().manual_seed(seed)
    block = HSPMNBlock(cfg)
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.endswith(".norm"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            elif name == "router.log_temp":
                p.fill_(log_temp)
            elif name == "router.b":
                p.fill_(-0.3)
            else:
                fan_in = p.shape[0] if p.dim() == 1 else p.shape[1]
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 1.3 / math.sqrt(fan_in))
    return block, gen


def gradcheck_block(routing, log_temp, noise):
    """Finite differences against autograd for x and every parameter, routing and sg() held fixed.

    The gate y = 1 + sigmoid(n) - sg(sigmoid(n)) has value 1, so it is differentiated as the
    function with sg(.) a constant: gate_sg pins that constant while the inputs are perturbed.
    """
    block, gen = tiny_block(routing, log_temp)
    B, S, D = 2, 7, block.cfg.dim
    x = torch.randn(B, S, D, generator=gen, dtype=torch.float64)
    g = gumbel_noise(5, 2, 1, B, S) if noise else None
    with torch.no_grad():
        ref = block(x, training=True, noise=g)
    assert (ref.counts > 0).all(), f"test setup: a sequence routed nothing {ref.counts}"
    held = torch.sigmoid(ref.scores)
    names = [n for n, _ in block.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in block.parameters()]

    def f(x_, *ps):
        res = functional_call(block, dict(zip(names, ps)),
                              args=(x_,), kwargs=dict(training=True, noise=g, indices=ref.indices,
                                                      counts=ref.counts, aux_target=0.45, gate_sg=held))
        return res.out, res.aux

    ok = torch.autograd.gradcheck(f, (x.requires_grad_(True), *params), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert ok
    return int(ref.counts.sum()), B * S


@test
def gradcheck_topk_noise():
    sel, tot = gradcheck_block("topk", 0.3, noise=True)
    print(f"  gradcheck topk, noise, log_temp 0.3: passed ({sel}/{tot} selected, x + 13 parameters)")


@test
def gradcheck_threshold():
    sel, tot = gradcheck_block("threshold", -0.4, noise=False)
    print(f"  gradcheck threshold, log_temp -0.4: passed ({sel}/{tot} selected)")


@test
def gradcheck_clamped():
    sel, tot = gradcheck_block("threshold", 0.9, noise=True)
    print(f"  gradcheck threshold, noise, log_temp 0.9 (clamped): passed ({sel}/{tot} selected)")


@test
def straight_through_gate_is_one_forward():
    block, gen = tiny_block("topk", 0.2)
    x = torch.randn(2, 9, 8, generator=gen, dtype=torch.float64)
    res = block(x)
    # out = r + 1*o on selected tokens: recompute with routing pinned and the gate's constant at 0,
    # i.e. y = 1 + sigmoid(n): the difference must be exactly sigmoid(n)*o, proving y was 1.
    s = torch.sigmoid(res.scores)
    res2 = block(x, indices=res.indices, counts=res.counts, gate_sg=torch.zeros_like(s))
    res3 = block(x, indices=res.indices, counts=res.counts, gate_sg=s - 1.0)  # y = 2
    o = res3.out - res.out
    expected = torch.gather(s, 1, res.indices)[:, :, None] * torch.gather(o, 1, res.indices[:, :, None].expand(-1, -1, 8))
    got = torch.gather(res2.out - res.out, 1, res.indices[:, :, None].expand(-1, -1, 8))
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


@test
def log_temp_gradient_zero_at_and_outside_clamp():
    for lt, inside in ((math.log(2.0), False), (math.log(0.1), None), (0.9, False), (-3.0, False),
                       (0.3, True), (-2.0, True)):
        p = torch.tensor([lt], dtype=torch.float64, requires_grad=True)
        t = router_temperature(p)
        t.sum().backward()
        if inside is None:  # exp(log(0.1)) may round either side of 0.1: strict comparison decides
            inside = 0.1 < math.exp(lt) < 2.0
        want = math.exp(lt) if inside else 0.0
        assert p.grad.item() == want, f"log_temp {lt}: grad {p.grad.item()} want {want}"
        assert 0.1 <= t.item() <= 2.0
    assert math.exp(math.log(2.0)) == 2.0, "test needs exp(log 2) == 2 exactly to probe the bound"


@test
def scores_use_noise_only_in_training():
    block, gen = tiny_block("topk", 0.3)
    x = torch.randn(2, 9, 8, generator=gen, dtype=torch.float64)
    g = gumbel_noise(11, 4, 2, 2, 9)
    t = math.exp(0.3)
    train = block(x, training=True, noise=g)
    infer = block(x, training=False, noise=g)
    assert torch.allclose(train.scores, (train.logits + g.double()) / t, rtol=1e-15, atol=0)
    assert torch.allclose(infer.scores, infer.logits / t, rtol=1e-15, atol=0)
    assert torch.equal(train.probs, torch.sigmoid(train.logits)) and torch.equal(train.logits, infer.logits)


@test
def entropy_form_equals_naive():
    l = torch.linspace(-30, 30, 601, dtype=torch.float64)
    p = torch.sigmoid(l)
    naive = -p * torch.log(p) - (1 - p) * torch.log(1 - p)
    stable = p * F.softplus(-l) + (1 - p) * F.softplus(l)
    finite = torch.isfinite(naive)
    assert finite.sum() > 500
    assert torch.allclose(stable[finite], naive[finite], rtol=1e-9, atol=1e-12)
    extreme = torch.tensor([-800.0, -50.0, 50.0, 800.0], dtype=torch.float64, requires_grad=True)
    aux = aux_loss(extreme[None], 0.2, 0.1, 0.01)
    aux.backward()
    assert torch.isfinite(aux).all() and torch.isfinite(extreme.grad).all()


@test
def threshold_mode_is_causal():
    block, gen = tiny_block("threshold", 0.1, dim=16, num_heads=4, num_kv_heads=2, conv_kernel=4)
    S = 12
    x = torch.randn(2, S, 16, generator=gen, dtype=torch.float64)
    base = block(x)
    assert 0 < int(base.counts.min()) and int(base.counts.max()) < S, f"setup: counts {base.counts}"
    for t in range(S - 1):
        x2 = x.clone()
        x2[:, t + 1:] = torch.randn(2, S - t - 1, 16, generator=gen, dtype=torch.float64) * 3
        res = block(x2)
        assert torch.equal(res.out[:, :t + 1], base.out[:, :t + 1]), f"token > {t} changed an output <= {t}"
        sel = lambda r: [set(r.indices[b, :r.counts[b]].tolist()) & set(range(t + 1)) for b in range(2)]
        assert sel(res) == sel(base)


@test
def causal_conv_zero_history():
    h = torch.randn(1, 6, 3, dtype=torch.float64)
    conv = torch.randn(3, 4, dtype=torch.float64)
    c = causal_conv(h, conv)
    for t in range(6):
        want = sum(conv[:, j] * h[0, t - 3 + j] for j in range(4) if t - 3 + j >= 0)
        assert torch.allclose(c[0, t], want, rtol=1e-14, atol=1e-14)


@test
def gqa_head_mapping():
    gen = torch.Generator().manual_seed(3)
    B, S, H, Hkv, Dh = 2, 6, 6, 2, 4
    q = torch.randn(B, 3, H, Dh, generator=gen, dtype=torch.float64)
    k = torch.randn(B, S, Hkv, Dh, generator=gen, dtype=torch.float64)
    v = torch.randn(B, S, Hkv, Dh, generator=gen, dtype=torch.float64)
    pos = torch.tensor([[0, 3, 5], [2, 4, -1]])
    o = sqdk_attention(q, k, v, pos)
    for b in range(B):
        for i in range(3):
            p = int(pos[b, i])
            if p < 0:
                assert (o[b, i] == 0).all()
                continue
            for h in range(H):
                kv = h // (H // Hkv)  # heads 0-2 read kv 0, heads 3-5 read kv 1
                w = torch.softmax(k[b, :p + 1, kv] @ q[b, i, h] / math.sqrt(Dh), dim=0)
                assert torch.allclose(o[b, i, h], w @ v[b, :p + 1, kv], rtol=1e-12, atol=1e-14)
    # changing kv head 1 moves query heads 3..5 only
    v2 = v.clone()
    v2[:, :, 1] += 1.0
    d = (sqdk_attention(q, k, v2, pos) - o).abs().amax(dim=(0, 1, 3))
    assert (d[:3] == 0).all() and (d[3:] > 0).all(), d


@test
def philox_known_answers():
    m = 0xFFFFFFFF
    kats = [(((0, 0, 0, 0), (0, 0)), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
            (((m, m, m, m), (m, m)), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
            (((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0)),
             (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for (ctr, key), want in kats:
        got = tuple(int(w) for w in philox4x32_10(ctr, key))
        assert got == want, f"philox {ctr} {key}: {[hex(v) for v in got]}"


@test
def gumbel_noise_layout_and_distribution():
    seed, step, layer = 0x1234DEADBEEF, 7, 3
    g = gumbel_noise(seed, step, layer, 3, 5)
    assert g.dtype == torch.float32 and g.shape == (3, 5)
    bits = int(philox4x32_10((4, 2, layer, step), (seed & 0xFFFFFFFF, seed >> 32))[0])
    u = ((bits >> 8) + 0.5) * 2.0 ** -24
    assert g[2, 4].item() == torch.tensor(-math.log(-math.log(u)), dtype=torch.float32).item()
    big = gumbel_noise(1, 0, 0, 64, 4096).double()
    assert abs(big.mean().item() - 0.5772156649) < 0.01 and abs(big.var().item() - math.pi ** 2 / 6) < 0.03
    assert not torch.equal(gumbel_noise(1, 0, 0, 2, 8), gumbel_noise(1, 1, 0, 2, 8))
    assert not torch.equal(gumbel_noise(1, 0, 0, 2, 8), gumbel_noise(1, 0, 1, 2, 8))
    assert not torch.equal(gumbel_noise(1, 0, 0, 2, 8), gumbel_noise(1 << 32, 0, 0, 2, 8))
    # row_offset: rows B..2B-1 of a 2B-row draw are a B-row draw at offset B (data-parallel ranks)
    assert torch.equal(gumbel_noise(seed, step, layer, 6, 5)[3:], gumbel_noise(seed, step, layer, 3, 5, row_offset=3))
    assert torch.equal(gumbel_noise(seed, step, layer, 3, 5), gumbel_noise(seed, step, layer, 3, 5, row_offset=0))
    assert not torch.equal(gumbel_noise(seed, step, layer, 3, 5), gumbel_noise(seed, step, layer, 3, 5, row_offset=3))


@test
def route_select_ties_and_threshold():
    scores = torch.tensor([[1.0, 3.0, 2.0, 3.0, 2.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    idx, cnt = route_select(scores, "topk", 0.5)  # k = 3
    assert idx.tolist() == [[1, 2, 3], [0, 1, 2]] and cnt.tolist() == [3, 3]
    idx, cnt = route_select(torch.tensor([[0.1, -0.2, 0.0, 4.0], [-1.0, -1.0, -1.0, -1.0]]), "threshold", 0.2)
    assert idx.tolist() == [[0, 3, -1, -1], [-1, -1, -1, -1]] and cnt.tolist() == [2, 0]
    assert topk_count(20, 0.04) == 1 and topk_count(65, 0.2) == 13 and topk_count(7, 1.0) == 7


@test
def config_validation_names_the_field():
    bad = [(dict(dim=30, num_heads=4), "num_heads"), (dict(num_heads=16, num_kv_heads=3), "num_kv_heads"),
           (dict(sparsity_k=0.0), "sparsity_k"), (dict(sparsity_k=1.5), "sparsity_k"),
           (dict(dim=0), "dim"), (dict(conv_kernel=0), "conv_kernel"), (dict(routing="top"), "routing"),
           (dict(mlp_ratio=-1), "mlp_ratio"), (dict(rope_base=0.0), "rope_base")]
    for kw, field in bad:
        try:
            BlockConfig(**kw).validate()
        except ValueError as e:
            assert str(e).startswith(field + ":"), (kw, str(e))
        else:
            raise AssertionError(f"{kw} accepted")
    BlockConfig().validate()


@test
def state_dict_names_and_shapes():
    cfg = BlockConfig(dim=32, num_heads=4, num_kv_heads=2, mlp_ratio=3, conv_kernel=4)
    shapes = {k: tuple(v.shape) for k, v in HSPMNBlock(cfg).state_dict().items()}
    assert shapes == {"router.w": (32,), "router.b": (1,), "router.log_temp": (1,), "reflex.norm": (32,),
                      "reflex.conv": (32, 4), "reflex.gate": (96, 32), "reflex.up": (96, 32),
                      "reflex.down": (32, 96), "attn.norm": (32,), "attn.q": (32, 32), "attn.k": (16, 32),
                      "attn.v": (16, 32), "attn.o": (32, 32)}, shapes
    block = HSPMNBlock(cfg).init_parameters(torch.Generator().manual_seed(0))
    for p in block.parameters():
        assert torch.equal(p, bf16_round(p))


@test
def dropout_mask_layout_and_distribution():
    seed, step, layer, B, S, D = 0x1234DEADBEEF, 7, 3, 2, 5, 11
    keep = dropout_keep(seed, step, layer, DROPOUT_TAG_ATTN, B, S, D)
    # element (b, s, d) is word d & 3 of the call at counter (d >> 2, s, b, step), key (lo ^ layer, hi ^ tag)
    for b, s_, d in ((1, 4, 10), (0, 0, 0), (1, 2, 7)):
        words = philox4x32_10((d >> 2, s_, b, step), ((seed & 0xFFFFFFFF) ^ layer, (seed >> 32) ^ DROPOUT_TAG_ATTN))
        assert int(keep[b, s_, d]) == int(words[d & 3]), (b, s_, d)
    assert dropout_threshold(0.0) == 0 and dropout_threshold(0.5) == 1 << 31
    assert dropout_scale(0.2) == float(torch.tensor(1.25, dtype=torch.float32))
    assert dropout_masks(seed, step, layer, B, S, D, 0.0) is None
    p = 0.3
    big = dropout_mask(1, 0, 0, DROPOUT_TAG_REFLEX, 16, 256, 130, p)
    kept = (big != 0).double().mean().item()
    assert abs(kept - (1 - p)) < 0.01, kept
    assert set(torch.unique(big).tolist()) == {0.0, dropout_scale(p)}
    assert abs(big.mean().item() - 1.0) < 0.015  # inverted dropout keeps the expectation
    # distinct streams: the two branches, layers and steps draw different masks
    m, o = dropout_masks(1, 0, 0, 4, 32, 64, p)
    assert not torch.equal(m, o)
    assert not torch.equal(m, dropout_masks(1, 0, 1, 4, 32, 64, p)[0])
    assert not torch.equal(m, dropout_masks(1, 1, 0, 4, 32, 64, p)[0])
    # not the Gumbel stream: word 0 of the counter (0, 0, 0, 0) under the seed's own key differs
    g_bits = int(philox4x32_10((0, 0, 0, 0), (1, 0))[0])
    assert int(dropout_keep(1, 0, 0, DROPOUT_TAG_REFLEX, 1, 1, 1)[0, 0, 0]) != g_bits
    # row_offset: rows B..2B-1 of a 2B-row draw are a B-row draw at offset B, both masks
    two = dropout_masks(1, 0, 0, 8, 32, 64, p)
    half = dropout_masks(1, 0, 0, 4, 32, 64, p, row_offset=4)
    assert torch.equal(two[0][4:], half[0]) and torch.equal(two[1][4:], half[1])


def dropout_case(routing, log_temp, S, seed, step, layer, p):
    """A tiny block, its input x [2, S, D], and the Gumbel noise and dropout masks of (seed, step, layer)."""
    block, gen = tiny_block(routing, log_temp)
    B, D = 2, block.cfg.dim
    x = torch.randn(B, S, D, generator=gen, dtype=torch.float64)
    return block, x, gumbel_noise(seed, step, layer, B, S), dropout_masks(seed, step, layer, B, S, D, p)


@test
def dropout_applies_in_training_only():
    block, x, g, drop = dropout_case("threshold", 0.0, 9, 3, 1, 0, 0.4)
    B, S, D = x.shape
    with torch.no_grad():
        plain = block(x, training=True, noise=g)
        dropped = block(x, training=True, noise=g, dropout=drop)
        ones = block(x, training=True, noise=g, dropout=(torch.ones(B, S, D), torch.ones(B, S, D)))
        ev = block(x, training=False, dropout=drop)
        ev0 = block(x, training=False)
    assert torch.equal(plain.out, ones.out)
    assert torch.equal(plain.indices, dropped.indices)  # routing does not see the masks
    assert (plain.out - dropped.out).abs().max() > 1e-2
    assert torch.equal(ev.out, ev0.out)


@test
def gradcheck_dropout():
    block, x, g, drop = dropout_case("topk", 0.2, 7, 5, 2, 1, 0.35)
    with torch.no_grad():
        ref = block(x, training=True, noise=g, dropout=drop)
    held = torch.sigmoid(ref.scores)
    names = [n for n, _ in block.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in block.parameters()]

    def f(x_, *ps):
        res = functional_call(block, dict(zip(names, ps)),
                              args=(x_,), kwargs=dict(training=True, noise=g, indices=ref.indices, counts=ref.counts,
                                                      gate_sg=held, dropout=drop))
        return res.out, res.aux

    assert torch.autograd.gradcheck(f, (x.requires_grad_(True), *params), eps=1e-6, atol=1e-7, rtol=1e-5)


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(test.main())
