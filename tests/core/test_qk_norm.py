"""QK-normalisation (per-head RMSNorm of queries and keys) and the squared-ReLU feed-forward."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tzoo.core import Decoder, TransformerConfig
from tzoo.core.attention import MultiHeadAttention
from tzoo.core.blocks import MLP
from tzoo.core.positional import RotaryEmbedding


def _captured_qk(attn: MultiHeadAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, _ = attn._project_self(x, 0)
    return q, k


def test_qk_norm_gives_each_head_unit_rms_times_its_gain():
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, num_kv_heads=2, qk_norm=nn.RMSNorm)
    with torch.no_grad():
        attn.q_norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
        attn.k_norm.weight.copy_(torch.linspace(2.0, 0.5, 8))
    x = torch.randn(2, 5, 32) * 3
    q, k = _captured_qk(attn, x)  # (B, H, N, Dh), (B, Hkv, N, Dh)
    assert q.shape == (2, 4, 5, 8) and k.shape == (2, 2, 5, 8)
    # dividing out the gain leaves every (head, node) vector with RMS 1
    assert torch.allclose((q / attn.q_norm.weight).pow(2).mean(-1).sqrt(), torch.ones(2, 4, 5), atol=1e-4)
    assert torch.allclose((k / attn.k_norm.weight).pow(2).mean(-1).sqrt(), torch.ones(2, 2, 5), atol=1e-4)
    # against a naive per-head reference from the raw projection
    raw = attn.qkv_proj(x).view(2, 5, 8, 8).transpose(1, 2)
    ref_q = raw[:, :4] / raw[:, :4].pow(2).mean(-1, keepdim=True).add(torch.finfo(torch.float32).eps).sqrt() * attn.q_norm.weight
    assert torch.allclose(q, ref_q, atol=1e-5)


def test_qk_norm_acts_before_rope():
    torch.manual_seed(0)
    rope = RotaryEmbedding(8)
    attn = MultiHeadAttention(32, 4, qk_norm=nn.RMSNorm, pos=rope)
    x = torch.randn(1, 6, 32)
    q, _ = _captured_qk(attn, x)
    raw = attn.qkv_proj(x).view(1, 6, 12, 8).transpose(1, 2)[:, :4]
    expected = rope.rotate(F.rms_norm(raw, (8,), attn.q_norm.weight), 0)
    assert torch.allclose(q, expected, atol=1e-5)
    # a rotation keeps the norm: each rotated head still has RMS 1 (gain 1 at init)
    assert torch.allclose(q.pow(2).mean(-1).sqrt(), torch.ones(1, 4, 6), atol=1e-4)


@pytest.mark.parametrize("position", ["rope", "none", "alibi"])
def test_qk_norm_decoding_with_the_kv_cache_equals_the_full_forward(position):
    torch.manual_seed(0)
    cfg = TransformerConfig(dim=32, depth=2, num_heads=4, num_kv_heads=2, position=position, qk_norm=True)
    decoder = Decoder(cfg).eval()
    x = torch.randn(2, 9, 32)
    full = decoder(x)
    cache = decoder.make_cache(16)
    steps = [decoder(x[:, :4], cache=cache)] + [decoder(x[:, i : i + 1], cache=cache) for i in range(4, 9)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_qk_norm_in_cross_attention_and_off_by_default():
    torch.manual_seed(0)
    on = Decoder(TransformerConfig(dim=16, depth=1, num_heads=2, qk_norm=True), cross_attention=True, context_dim=16)
    assert on.blocks[0].cross_attn.q_norm is not None and on.blocks[0].cross_attn.k_norm is not None
    assert on(torch.randn(1, 3, 16), torch.randn(1, 4, 16)).shape == (1, 3, 16)
    off = Decoder(TransformerConfig(dim=16, depth=1, num_heads=2))
    assert off.blocks[0].attn.q_norm is None and "q_norm" not in "".join(dict(off.named_parameters()))


def test_squared_relu_feed_forward():
    mlp = MLP(4, 8, activation="squared_relu")
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    assert torch.equal(mlp._act(x), torch.tensor([0.0, 0.0, 0.0, 0.25, 9.0]))
    decoder = Decoder(TransformerConfig(dim=16, depth=1, num_heads=2, feed_forward="squared_relu"))
    assert decoder.blocks[0].feed_forward.activation == "squared_relu"


def test_bad_qk_norm_and_feed_forward_values():
    with pytest.raises(ValueError, match=r"qk_norm must be True or False, got qk_norm='yes'"):
        TransformerConfig(qk_norm="yes")
    with pytest.raises(ValueError, match=r"attention='linear' conflicts with qk_norm=True.*qk_norm=False"):
        TransformerConfig(attention="linear", qk_norm=True)
    with pytest.raises(ValueError, match=r"feed_forward='relu3' is not one of .*'squared_relu'"):
        TransformerConfig(feed_forward="relu3")
