"""RollingKVCache: a windowed layer decodes with the last window - 1 keys only, and equals the full forward."""

import pytest
import torch

import tzoo.core.attention as attention_module
from tzoo.core import Decoder, KVCache, MultiHeadAttention, RollingKVCache, TransformerConfig

TOL = 1e-5


@pytest.mark.parametrize("window", [1, 2, 5])
def test_append_returns_the_window_in_order_with_bounded_storage(window):
    """Chunks of 1, 3, a whole buffer and more: every call returns the last window - 1 earlier keys
    then the new ones, and the storage never grows past 2 * window nodes."""
    cache = RollingKVCache(window)
    seen = torch.empty(1, 1, 0, 2)
    for n in [1, 1, 3, 1, 2 * window + 3, 1, 1, 1, 4, 1, 1, 1, 1, 1, 1, 1, 1, 2]:
        k = torch.arange(seen.shape[2], seen.shape[2] + n, dtype=torch.float).view(1, 1, n, 1).expand(1, 1, n, 2)
        got_k, got_v = cache.append(k, -k)
        expected = torch.cat([seen[:, :, max(0, seen.shape[2] - (window - 1)) :], k], dim=2)
        assert torch.equal(got_k, expected) and torch.equal(got_v, -expected)
        seen = torch.cat([seen, k], dim=2)
        assert cache.length == seen.shape[2]
        assert cache.k.shape[2] == 2 * window and cache.retained == min(window - 1, seen.shape[2])


def stack(**kw) -> Decoder:
    torch.manual_seed(0)
    decoder = Decoder(TransformerConfig(dim=16, depth=2, num_heads=4, **kw)).eval()
    for p in decoder.parameters():  # weights of trained scale
        torch.nn.init.normal_(p, std=0.3)
    return decoder


@pytest.mark.parametrize(
    "kw",
    [dict(window=3), dict(window=3, position="rope", num_kv_heads=2), dict(window=4, position="alibi", num_memory=2), dict(window=20)],
    ids=["plain", "rope-gqa", "alibi-memory", "wider"],
)
def test_rolling_decoding_equals_the_full_forward(kw, monkeypatch):
    """A prefill long enough for the banded path, then single nodes and a chunk of 5, against one full
    forward (banded too) of all 190 nodes; the caches stay O(window)."""
    decoder = stack(**kw)
    caches = decoder.make_cache(1000)
    assert all(isinstance(c, RollingKVCache) for c in caches)
    banded = []
    original = attention_module.banded_attention
    monkeypatch.setattr(attention_module, "banded_attention", lambda *a, **k: banded.append(a[0].shape[2]) or original(*a, **k))
    torch.manual_seed(1)
    x = torch.randn(2, 190, 16)
    full = decoder(x)
    pieces, t = [decoder(x[:, :170], cache=caches)], 170
    for n in [1, 1, 5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]:
        pieces.append(decoder(x[:, t : t + n], cache=caches))
        t += n
    assert t == 190 and caches[0].length == 190
    assert banded == [190, 190, 170, 170]  # the full forward and the prefill, in both layers
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=TOL, rtol=0)
    assert all(c.k.shape[2] == 2 * kw["window"] for c in caches)


def test_rolling_cache_takes_the_full_padding_mask():
    """key_padding_mask (B, cached + N), as with a KVCache: the rolling cache uses the columns it keeps."""
    decoder = stack(window=3)
    layer = decoder.blocks[0].attn
    torch.manual_seed(1)
    x = torch.randn(2, 12, 16)
    padding = torch.ones(2, 12, dtype=torch.bool)
    padding[1, 9] = False
    full = layer(x, is_causal=True, key_padding_mask=padding)
    cache = RollingKVCache(3)
    steps = [layer(x[:, t : t + 1], is_causal=True, key_padding_mask=padding[:, : t + 1], cache=cache) for t in range(12)]
    real = padding[:, :, None].float()
    torch.testing.assert_close(torch.cat(steps, dim=1) * real, full * real, atol=TOL, rtol=0)


def test_make_cache_gives_each_layer_its_kind():
    assert all(type(c) is KVCache and c.max_len == 8 for c in stack().make_cache(8))
    assert all(type(c) is RollingKVCache and c.window == 3 for c in stack(window=3).make_cache(8))
    assert all(type(c) is KVCache and c.max_len is None for c in stack(window=3).make_cache())  # context caches


def test_a_full_cache_of_a_non_windowed_layer_is_refused():
    decoder = stack()
    caches = decoder.make_cache(4)
    decoder(torch.randn(1, 3, 16), cache=caches)
    with pytest.raises(ValueError, match=r"the KV cache holds 4 nodes; appending 2 to the 3 cached would overflow it .*larger max_len"):
        decoder(torch.randn(1, 2, 16), cache=caches)


@pytest.mark.parametrize("window", [0, -1, 1.5, None])
def test_rolling_cache_window_must_be_a_whole_number_at_least_one(window):
    with pytest.raises(ValueError, match=rf"RollingKVCache window must be an integer >= 1 .*got {window!r}"):
        RollingKVCache(window)


def test_a_rolling_cache_cannot_hold_a_cross_attention_context():
    cross = MultiHeadAttention(16, 4, context_dim=8)
    with pytest.raises(ValueError, match=r"a RollingKVCache keeps a self-attention window; a cross-attention context needs a KVCache"):
        cross(torch.randn(1, 2, 16), torch.randn(1, 3, 8), cache=RollingKVCache(4))
