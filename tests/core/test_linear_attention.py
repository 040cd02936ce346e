"""Linear attention: the parallel (chunked) form, the recurrent form and a naive quadratic reference agree;
the layer decodes with a fixed-size state; the options it cannot honour are refused, naming both."""

import re

import pytest
import torch

from tzoo.core import (
    ALiBi,
    Decoder,
    Encoder,
    KVCache,
    LinearAttention,
    LinearAttentionState,
    MultiHeadAttention,
    RotaryEmbedding,
    TransformerConfig,
    capture_attention,
    linear_attention,
    linear_attention_recurrent,
)
from tzoo.core.linear_attention import EPS, feature_map

TOL = 1e-5


def naive(fq, fk, v, *, causal, rq=None, rk=None, memory=None):
    """out_i = Σ_j (rq_i·rk_j) v_j / (Σ_j fq_i·fk_j + eps), every pair written out; memory pairs first."""
    rq, rk = (fq if rq is None else rq), (fk if rk is None else rk)
    g = fq.shape[1] // fk.shape[1]
    fk, rk, v = (t.repeat_interleave(g, dim=1) for t in (fk, rk, v))
    num, den = rq @ rk.transpose(-1, -2), fq @ fk.transpose(-1, -2)  # (B, H, N, M)
    if causal:
        num, den = num.tril(), den.tril()
    out_num, out_den = num @ v, den.sum(-1, keepdim=True)
    if memory is not None:
        mk, mv = (t.repeat_interleave(g, dim=1) for t in memory)  # (1, H, P, Dh)
        out_num = out_num + (rq @ mk.transpose(-1, -2)) @ mv
        out_den = out_den + (fq @ mk.transpose(-1, -2)).sum(-1, keepdim=True)
    return out_num / (out_den + EPS)


def inputs(n, *, heads=4, kv_heads=2, dh=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, heads, n, dh, generator=g, dtype=dtype)
    k, v = torch.randn(2, kv_heads, n, dh, generator=g, dtype=dtype), torch.randn(2, kv_heads, n, dh, generator=g, dtype=dtype)
    return feature_map(q), feature_map(k), v


@pytest.mark.parametrize("n", [1, 40, 64, 150], ids=["one", "one-chunk", "exact-chunk", "ragged-chunks"])
@pytest.mark.parametrize("rope", [False, True], ids=["plain", "rope"])
def test_parallel_recurrent_and_naive_forms_agree(n, rope):
    """Causal, GQA (4 query heads on 2 key/value heads), memory sums, RoPE-rotated numerator features."""
    fq, fk, v = inputs(n)
    rq = rk = None
    if rope:
        rot = RotaryEmbedding(8)
        rq, rk = rot.rotate(fq, 0), rot.rotate(fk, 0)
    mk, mv = feature_map(torch.randn(1, 2, 3, 8, dtype=torch.float64)), torch.randn(1, 2, 3, 8, dtype=torch.float64)
    memory = (mk.transpose(-1, -2) @ mv, mk.sum(2))
    ref = naive(fq, fk, v, causal=True, rq=rq, rk=rk, memory=(mk, mv))
    parallel, p_state = linear_attention(fq, fk, v, causal=True, rq=rq, rk=rk, memory=memory)
    recurrent, r_state = linear_attention_recurrent(fq, fk, v, rq=rq, rk=rk, memory=memory)
    torch.testing.assert_close(parallel, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(recurrent, ref, atol=1e-10, rtol=0)
    for a, b in zip(p_state, r_state):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_a_chunk_after_a_state_equals_one_pass_and_fp32_within_1e5():
    fq, fk, v = (t.float() for t in inputs(130))
    whole, _ = linear_attention(fq, fk, v, causal=True)
    first, state = linear_attention(fq[:, :, :70], fk[:, :, :70], v[:, :, :70], causal=True)
    rest, _ = linear_attention(fq[:, :, 70:], fk[:, :, 70:], v[:, :, 70:], causal=True, state=state)
    steps, _ = linear_attention_recurrent(fq[:, :, 70:], fk[:, :, 70:], v[:, :, 70:], state=state)
    torch.testing.assert_close(torch.cat([first, rest], dim=2), whole, atol=TOL, rtol=0)
    torch.testing.assert_close(steps, rest, atol=TOL, rtol=0)
    torch.testing.assert_close(whole, naive(fq.double(), fk.double(), v.double(), causal=True).float(), atol=TOL, rtol=0)


def test_non_causal_form_equals_naive():
    fq, fk, v = inputs(50)
    out, _ = linear_attention(fq, fk, v, causal=False)
    torch.testing.assert_close(out, naive(fq, fk, v, causal=False), atol=1e-10, rtol=0)


def linear_stack(cls=Decoder, **kw):
    torch.manual_seed(0)
    stack = cls(TransformerConfig(dim=16, depth=2, num_heads=4, attention="linear", **kw)).eval()
    for p in stack.parameters():  # weights of trained scale
        torch.nn.init.normal_(p, std=0.3)
    return stack


@pytest.mark.parametrize("kw", [dict(), dict(position="rope", num_kv_heads=2, num_memory=3)], ids=["plain", "rope-gqa-memory"])
def test_decoding_with_the_state_equals_the_full_forward(kw):
    """A 70-node prefill (two chunks), then single nodes (the recurrent form) and a chunk of 4; the
    state keeps its size, (B, Hkv, Dh, Dh) and (B, Hkv, Dh), however many nodes went in."""
    decoder = linear_stack(**kw)
    assert all(isinstance(b.attn, LinearAttention) for b in decoder.blocks)
    caches = decoder.make_cache(1000)
    assert all(type(c) is LinearAttentionState for c in caches)
    torch.manual_seed(1)
    x = torch.randn(2, 90, 16)
    full = decoder(x)
    pieces, t = [decoder(x[:, :70], cache=caches)], 70
    for n in [1] * 8 + [4] + [1] * 8:
        pieces.append(decoder(x[:, t : t + n], cache=caches))
        t += n
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=TOL, rtol=0)
    kv_heads = kw.get("num_kv_heads", 4)
    assert all(c.length == 90 and c.kv.shape == (2, kv_heads, 4, 4) and c.k_sum.shape == (2, kv_heads, 4) for c in caches)


def test_padding_and_the_cross_path():
    """Padded keys count for nothing; the cross-attention path on (first node, all nodes) equals the
    first row of non-causal self-attention (the ViT class-node shortcut relies on it)."""
    layer = linear_stack(Encoder, num_memory=2).blocks[0].attn
    torch.manual_seed(1)
    x = torch.randn(2, 9, 16)
    padding = torch.ones(2, 9, dtype=torch.bool)
    padding[1, 6:] = False
    out = layer(x, key_padding_mask=padding)
    alone = layer(x[1:, :6])
    torch.testing.assert_close(out[1:, :6], alone, atol=TOL, rtol=0)
    torch.testing.assert_close(layer(x[:, :1], x, key_padding_mask=padding), out[:, :1], atol=TOL, rtol=0)


def test_captured_weights_are_the_normalised_feature_products():
    layer = linear_stack(Encoder).blocks[0].attn
    x = torch.randn(1, 6, 16)
    with capture_attention(layer) as maps:
        layer(x, is_causal=True)
    (weights,) = maps[next(iter(maps))]
    assert weights.shape == (1, 4, 6, 6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 4, 6), atol=1e-5, rtol=0)
    assert (weights.triu(1) == 0).all()


@pytest.mark.parametrize(
    "option, given",
    [
        (dict(top_k=4), "top_k=4"),
        (dict(window=8), "window=8"),
        (dict(position="alibi"), "position='alibi'"),
        (dict(attn_dropout=0.1), "attn_dropout=0.1"),
    ],
)
def test_options_linear_attention_cannot_honour_are_refused_at_config_time(option, given):
    with pytest.raises(ValueError, match=rf"attention='linear' conflicts with {re.escape(given)}: .*or attention='softmax'"):
        TransformerConfig(dim=16, num_heads=4, attention="linear", **option)


def test_an_unknown_attention_kind_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"attention='performer' is not one of \('softmax', 'linear'\)"):
        TransformerConfig(attention="performer")


@pytest.mark.parametrize("mask", [torch.zeros(5, 5), torch.ones(5, 5, dtype=torch.bool)], ids=["float", "bool"])
def test_a_mask_is_refused_by_linear_attention(mask):
    layer = LinearAttention(16, 4)
    with pytest.raises(ValueError, match=r"linear attention cannot apply mask=: .*key_padding_mask= .*attention='softmax'"):
        layer(torch.randn(1, 5, 16), mask=mask)


def test_alibi_is_refused_by_the_linear_layer():
    with pytest.raises(ValueError, match=r"linear attention cannot use ALiBi: it adds a bias to the attention scores"):
        LinearAttention(16, 4, pos=ALiBi(4))


def test_caches_of_the_wrong_kind_are_refused():
    with pytest.raises(ValueError, match=r"linear attention keeps a LinearAttentionState .*not a KVCache: make the caches with decoder.make_cache"):
        LinearAttention(16, 4)(torch.randn(1, 2, 16), is_causal=True, cache=KVCache(8))
    with pytest.raises(ValueError, match=r"a LinearAttentionState is the cache of linear attention, but this layer is softmax attention"):
        MultiHeadAttention(16, 4)(torch.randn(1, 2, 16), is_causal=True, cache=LinearAttentionState())
    with pytest.raises(ValueError, match=r"a LinearAttentionState decodes causally: call with is_causal=True"):
        LinearAttention(16, 4)(torch.randn(1, 2, 16), cache=LinearAttentionState())
