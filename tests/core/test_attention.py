"""MultiHeadAttention against a naive reference written here (matmul, mask, softmax, matmul)."""

import math
import re

import pytest
import torch

from tzoo.core import ALiBi, KVCache, MultiHeadAttention, RotaryEmbedding, capture_attention

B, N, D, H = 2, 9, 32, 4
TOL = 1e-5


def naive_rope(x, positions):
    """Rotate channel pairs (i, i + Dh/2) by angle pos * base^(-2i/Dh), written with complex numbers."""
    half = x.shape[-1] // 2
    theta = 10000.0 ** (-torch.arange(half, dtype=torch.float64) * 2 / x.shape[-1])
    z = torch.complex(x[..., :half].double(), x[..., half:].double())
    z = z * torch.polar(torch.ones((), dtype=torch.float64), positions.double()[:, None] * theta[None, :])
    return torch.cat([z.real, z.imag], dim=-1).float()


def naive_attention(m, x, context=None, *, mask=None, kpm=None, causal=False, rope=False, alibi=False):
    """Everything spelled out: projections, per-entry mask rules, softmax, weighted sum."""
    src = x if context is None else context
    Bx, Nq, _ = x.shape
    Mk = src.shape[1]
    Hq, Hkv, Dh = m.num_heads, m.num_kv_heads, m.head_dim
    (wq, bq), (wk, bk), (wv, bv) = (m.projections()[name] for name in "qkv")
    q = (x @ wq.T + bq).view(Bx, Nq, Hq, Dh).permute(0, 2, 1, 3)
    k = (src @ wk.T + bk).view(Bx, Mk, Hkv, Dh).permute(0, 2, 1, 3)
    v = (src @ wv.T + bv).view(Bx, Mk, Hkv, Dh).permute(0, 2, 1, 3)
    if rope:
        q, k = naive_rope(q, torch.arange(Nq)), naive_rope(k, torch.arange(Mk))
    k = k.repeat_interleave(Hq // Hkv, dim=1)
    v = v.repeat_interleave(Hq // Hkv, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)
    allowed = torch.ones(Bx, Hq, Nq, Mk, dtype=torch.bool)
    for i in range(Nq):
        for j in range(Mk):
            if causal and j > i:
                allowed[..., i, j] = False
            if m.window is not None and abs(i - j) >= m.window:
                allowed[..., i, j] = False
            if alibi:
                for h in range(Hq):
                    scores[:, h, i, j] -= 2 ** (-8 * (h + 1) / Hq) * abs(i - j)
    if kpm is not None:
        allowed &= kpm[:, None, None, :]
    if mask is not None:  # broadcast as SDPA does, except that a 3-D mask is (B, N, M)
        mask = mask[:, None] if mask.dim() == 3 else mask
        if mask.dtype == torch.bool:
            allowed = allowed & mask
        else:
            scores = scores + mask
    if m.memory is not None:
        mk = m.memory[0].repeat_interleave(Hq // Hkv, dim=0)[None].expand(Bx, -1, -1, -1)
        mv = m.memory[1].repeat_interleave(Hq // Hkv, dim=0)[None].expand(Bx, -1, -1, -1)
        scores = torch.cat([q @ mk.transpose(-1, -2) / math.sqrt(Dh), scores], dim=-1)
        allowed = torch.cat([torch.ones(Bx, Hq, Nq, mk.shape[2], dtype=torch.bool), allowed], dim=-1)
        v = torch.cat([mv, v], dim=2)
    scores = scores.masked_fill(~allowed, float("-inf"))
    if m.top_k is not None:
        for idx in torch.cartesian_prod(*(torch.arange(s) for s in scores.shape[:3])):
            row = scores[tuple(idx)]
            kth = torch.sort(row, descending=True).values[min(m.top_k, row.numel()) - 1]
            row[row < kth] = float("-inf")
    weights = torch.softmax(scores, dim=-1)
    out = (weights @ v).permute(0, 2, 1, 3).reshape(Bx, Nq, Hq * Dh)
    return out @ m.out_proj.weight.T + m.out_proj.bias, weights


def make(**kw):
    torch.manual_seed(0)
    m = MultiHeadAttention(D, H, **kw).eval()
    for p in m.parameters():  # non-zero biases so a dropped bias term would show
        torch.nn.init.normal_(p, std=0.3)
    return m


def inputs():
    torch.manual_seed(1)
    return torch.randn(B, N, D)


def padding():
    kpm = torch.ones(B, N, dtype=torch.bool)
    kpm[1, 6:] = False
    return kpm


CASES = {
    "no_mask": (dict(), dict()),
    "causal": (dict(), dict(causal=True)),
    "key_padding": (dict(), dict(kpm=padding())),
    "bool_mask": (dict(), dict(mask=torch.rand(N, N, generator=torch.Generator().manual_seed(3)) > 0.4)),
    "window": (dict(window=3), dict()),
    "causal_window": (dict(window=3), dict(causal=True)),
    "top_k": (dict(top_k=3), dict()),
    "causal_top_k": (dict(top_k=2), dict(causal=True)),
    "gqa": (dict(num_kv_heads=2), dict(causal=True)),
    "mqa": (dict(num_kv_heads=1), dict(kpm=padding())),
    "rope": ("rope", dict(causal=True, rope=True)),
    "alibi": ("alibi", dict(causal=True, alibi=True)),
    "alibi_bidirectional": ("alibi", dict(alibi=True, kpm=padding())),
    "memory": (dict(num_memory=3), dict(causal=True)),
    "memory_padding_gqa": (dict(num_memory=2, num_kv_heads=2), dict(kpm=padding())),
}


def build(kw):
    if kw == "rope":
        return make(pos=RotaryEmbedding(D // H))
    if kw == "alibi":
        return make(pos=ALiBi(H))
    return make(**kw)


def call(m, x, ref_kw, context=None):
    bool_mask = ref_kw.get("mask")
    if bool_mask is not None:
        bool_mask = bool_mask.clone()
        bool_mask[:, 0] = True  # every query keeps one key, so no row is empty
    return m(x, context, mask=bool_mask, key_padding_mask=ref_kw.get("kpm"), is_causal=ref_kw.get("causal", False)), bool_mask


@pytest.mark.parametrize("case", list(CASES))
def test_matches_naive_reference(case):
    kw, ref_kw = CASES[case]
    m, x = build(kw), inputs()
    with capture_attention(m) as maps:
        out, bool_mask = call(m, x, ref_kw)
    ref_out, ref_weights = naive_attention(m, x, **{**ref_kw, "mask": bool_mask})
    assert (out - ref_out).abs().max().item() <= TOL
    (weights,) = maps[""]
    assert weights.shape == ref_weights.shape
    assert (weights - ref_weights).abs().max().item() <= TOL
    assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-6)


@pytest.mark.parametrize("context_dim", [D, 24])
def test_cross_attention_matches_naive_reference(context_dim):
    m = make(context_dim=context_dim, num_kv_heads=2)
    x = inputs()
    context = torch.randn(B, 5, context_dim)
    kpm = torch.tensor([[True] * 5, [True, True, True, False, False]])
    with capture_attention(m) as maps:
        out = m(x, context, key_padding_mask=kpm)
    ref_out, ref_w = naive_attention(m, x, context, kpm=kpm)
    assert (out - ref_out).abs().max().item() <= TOL
    assert (maps[""][0] - ref_w).abs().max().item() <= TOL
    assert ref_w[1, :, :, 3:].abs().max() == 0  # padded context nodes get no weight


def test_float_mask_is_additive():
    m, x = make(), inputs()
    bias = torch.randn(N, N)
    out = m(x, mask=bias)
    q, k, v = (torch.nn.functional.linear(x, *m.projections()[name]).view(B, N, H, -1).transpose(1, 2) for name in "qkv")
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // H) + bias, -1)
    ref = m.out_proj((w @ v).transpose(1, 2).reshape(B, N, D))
    assert (out - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("kw", [dict(), dict(pos="rope"), dict(pos="alibi"), dict(window=3), dict(num_memory=2, num_kv_heads=2)])
def test_causality_later_inputs_never_change_earlier_outputs(kw):
    pos = {"rope": RotaryEmbedding(D // H), "alibi": ALiBi(H)}.get(kw.pop("pos", None))
    m = make(pos=pos, **kw)
    x = inputs()
    out = m(x, is_causal=True)
    for t in range(N - 1):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randn_like(changed[:, t + 1 :]) * 5
        assert torch.allclose(m(changed, is_causal=True)[:, : t + 1], out[:, : t + 1], atol=1e-6)
        assert not torch.allclose(m(changed, is_causal=True)[:, t + 1 :], out[:, t + 1 :], atol=1e-3)


@pytest.mark.parametrize("kw", [dict(), dict(pos="rope"), dict(pos="alibi"), dict(num_memory=3), dict(pos="rope", num_memory=2, num_kv_heads=2), dict(window=4)])
@pytest.mark.parametrize("chunks", [[1] * N, [4, 1, 3, 1]])
def test_kv_cache_matches_full_causal_forward(kw, chunks):
    pos = {"rope": RotaryEmbedding(D // H), "alibi": ALiBi(H)}.get(kw.pop("pos", None))
    m = make(pos=pos, **kw)
    x = inputs()
    full = m(x, is_causal=True)
    cache = KVCache(max_len=N)
    outs, start = [], 0
    for n in chunks:  # a prefill of several nodes, then single steps
        outs.append(m(x[:, start : start + n], is_causal=True, cache=cache))
        start += n
    assert cache.length == N
    assert (torch.cat(outs, dim=1) - full).abs().max().item() <= TOL


def test_cross_attention_cache_computes_context_once():
    m = make(context_dim=D)
    x, context = inputs(), torch.randn(B, 5, D)
    cache = KVCache()
    first = m(x, context, cache=cache)
    assert cache.length == 5
    calls = []
    real_linear = torch.nn.functional.linear

    def counting_linear(inp, *args):
        calls.append(inp.shape)
        return real_linear(inp, *args)

    torch.nn.functional.linear = counting_linear
    try:
        second = m(x, context, cache=cache)
    finally:
        torch.nn.functional.linear = real_linear
    assert (B, 5, D) not in calls  # the context was not projected again
    assert torch.equal(first, second)


def test_cache_overflow_is_a_clear_error():
    m = make()
    cache = KVCache(max_len=4)
    with pytest.raises(ValueError, match=r"holds 4 nodes.*appending 5"):
        m(inputs()[:, :5], is_causal=True, cache=cache)


def test_kv_cache_reorder_keeps_the_chosen_rows_and_appends_after_them():
    cache, context = KVCache(max_len=6), KVCache()
    k, v = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 4, 5)
    cache.append(k, v), context.append(k, v)
    rows = torch.tensor([2, 0, 0, 1])  # a beam grows and repeats rows
    cache.reorder(rows), context.reorder(rows)
    for c in (cache, context):
        ck, cv = c.cached()
        assert torch.equal(ck, k[rows]) and torch.equal(cv, v[rows])
    k2, v2 = torch.randn(4, 2, 2, 5), torch.randn(4, 2, 2, 5)
    ck, cv = cache.append(k2, v2)  # the free room is still there after a reorder
    assert torch.equal(ck, torch.cat([k[rows], k2], 2)) and torch.equal(cv, torch.cat([v[rows], v2], 2))


def test_rope_scores_depend_only_on_relative_offset():
    rope = RotaryEmbedding(16)
    q, k = torch.randn(1, 1, 6, 16), torch.randn(1, 1, 6, 16)
    q0, k0 = rope.rotate(q, offset=0), rope.rotate(k, offset=0)
    q7, k7 = rope.rotate(q, offset=37), rope.rotate(k, offset=37)
    assert torch.allclose(q0 @ k0.transpose(-1, -2), q7 @ k7.transpose(-1, -2), atol=1e-4)
    assert not torch.allclose(q0, q7)


def test_capture_only_chosen_layers_and_output_unchanged():
    from tzoo.core import Encoder, TransformerConfig

    torch.manual_seed(0)
    enc = Encoder(TransformerConfig(dim=D, depth=3, num_heads=H)).eval()
    x = inputs()
    plain = enc(x)
    with capture_attention(enc, layers=["blocks.2.attn"]) as maps:
        captured = enc(x)
    assert list(maps) == ["blocks.2.attn"] and maps["blocks.2.attn"][0].shape == (B, H, N, N)
    assert torch.equal(plain, captured)
    assert enc.blocks[2].attn.captured is None  # released after the context
    with pytest.raises(ValueError, match="no attention layer named.*blocks.0.attn"):
        with capture_attention(enc, layers=["nope"]):
            pass


def test_gradients_flow_on_every_path():
    for kw in [dict(), dict(top_k=2), dict(num_memory=2)]:
        m = make(**kw).train()
        x = inputs().requires_grad_()
        m(x, is_causal=True).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        if m.memory is not None:
            assert m.memory.grad is not None


# --- bad input ----------------------------------------------------------------------------------


def test_dim_not_divisible_by_heads():
    with pytest.raises(ValueError, match=r"dim=30 must be divisible by num_heads=4"):
        MultiHeadAttention(30, 4)


def test_heads_not_divisible_by_kv_heads():
    with pytest.raises(ValueError, match=r"num_heads=4 must be divisible by num_kv_heads=3"):
        MultiHeadAttention(32, 4, num_kv_heads=3)


@pytest.mark.parametrize("arg", ["window", "top_k"])
def test_window_or_k_below_one(arg):
    with pytest.raises(ValueError, match=rf"{arg} must be >= 1.*got {arg}=0"):
        MultiHeadAttention(32, 4, **{arg: 0})


# --- masks of every shape SDPA broadcasts ---------------------------------------------------------

BROADCAST_SHAPES = [(N, N), (B, 1, 1, N), (1, 1, N, N), (B, H, N, N), (1, H, 1, N), (B, 1, N, N), (B, N, N), (1, N, N), (1, N)]
MASK_SETUPS = {
    "plain": (dict(), dict()),
    "causal_padding": (dict(), dict(causal=True, kpm=padding())),
    "memory_padding_gqa": (dict(num_memory=2, num_kv_heads=2), dict(causal=True, kpm=padding())),
    "top_k_padding": (dict(top_k=3), dict(kpm=padding())),
}


def broadcast_mask(shape, kind):
    g = torch.Generator().manual_seed(4)
    if kind == "float":
        return torch.randn(shape, generator=g)
    mask = torch.rand(shape, generator=g) > 0.4
    mask[..., 0] = True  # every query keeps a key (the first node is real and causally visible)
    return mask


@pytest.mark.parametrize("setup", list(MASK_SETUPS))
@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("shape", BROADCAST_SHAPES, ids=str)
def test_broadcastable_masks_match_naive_reference(shape, kind, setup):
    kw, ref_kw = MASK_SETUPS[setup]
    m, x, mask = make(**kw), inputs(), broadcast_mask(shape, kind)
    with capture_attention(m) as maps:
        out = m(x, mask=mask, key_padding_mask=ref_kw.get("kpm"), is_causal=ref_kw.get("causal", False))
    ref_out, ref_weights = naive_attention(m, x, mask=mask, **ref_kw)
    assert (out - ref_out).abs().max().item() <= TOL
    assert (maps[""][0] - ref_weights).abs().max().item() <= TOL


@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("shape", [s for s in BROADCAST_SHAPES if len(s) != 3], ids=str)
def test_broadcastable_masks_reach_sdpa_as_given(shape, kind):
    """Without other rules the core's result is SDPA's on the same mask."""
    m, x, mask = make(), inputs(), broadcast_mask(shape, kind)
    q, k, v = (torch.nn.functional.linear(x, *m.projections()[name]).view(B, N, H, -1).transpose(1, 2) for name in "qkv")
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    ref = m.out_proj(ref.transpose(1, 2).reshape(B, N, D))
    assert (m(x, mask=mask) - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("shape", [(B, 1, N, N + 1), (3, N, N), (B, 3, N, N), (1, 1, 1, N, N), (N,), (N, B)], ids=str)
def test_masks_that_do_not_broadcast_are_refused(shape):
    with pytest.raises(
        ValueError,
        match=rf"mask has shape {re.escape(str(shape))}, which does not broadcast to \(B, H, N, M\) = \(2, 4, 9, 9\): "
        r"it needs 2 to 4 axes, each 1 or the full size",
    ):
        make()(inputs(), mask=torch.ones(shape, dtype=torch.bool))


def test_mask_of_wrong_shape():
    m = make()
    with pytest.raises(ValueError, match=r"mask has shape \(9, 8\).*\(N, M\) = \(9, 9\)"):
        m(inputs(), mask=torch.ones(N, N - 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"key_padding_mask must be a bool tensor of shape \(B, M\) = \(2, 9\)"):
        m(inputs(), key_padding_mask=torch.ones(N, dtype=torch.bool))
