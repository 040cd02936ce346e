"""Blocks and stacks: norm placement, branches, encoder padding, decoder cache and cross-attention."""

import pytest
import torch
from torch import nn

from tzoo.core import MLP, DropPath, Decoder, Encoder, MultiHeadAttention, SwiGLU, TransformerBlock, TransformerConfig

D = 32


def test_norm_first_and_norm_last_blocks():
    torch.manual_seed(0)
    attn, ff = MultiHeadAttention(D, 4), MLP(D, 64)
    x = torch.randn(2, 5, D)
    pre = TransformerBlock(attn, ff, norm_first=True).eval()
    h = x + attn(pre.attn_norm(x))
    assert torch.allclose(pre(x), h + ff(pre.ff_norm(h)), atol=1e-6)
    post = TransformerBlock(attn, ff, norm_first=False).eval()
    h = post.attn_norm(x + attn(x))
    assert torch.allclose(post(x), post.ff_norm(h + ff(h)), atol=1e-6)


def test_layer_scale_starts_small_and_drop_path_drops_whole_samples():
    torch.manual_seed(0)
    block = TransformerBlock(MultiHeadAttention(D, 4), SwiGLU(D, 48), layer_scale=1e-6, norm=nn.RMSNorm).eval()
    x = torch.randn(2, 5, D)
    assert torch.allclose(block(x), x, atol=1e-4)
    drop = DropPath(0.5).train()
    out = drop(torch.ones(1000, 3, 4))
    per_sample = out.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()  # a sample is kept or dropped as a whole
    assert 350 < int((per_sample[:, 0] == 0).sum()) < 650


def test_encoder_ignores_padded_nodes():
    torch.manual_seed(0)
    enc = Encoder(TransformerConfig(dim=D, depth=2, num_heads=4, norm="rmsnorm", feed_forward="swiglu")).eval()
    x = torch.randn(1, 6, D)
    kpm = torch.tensor([[True] * 4 + [False] * 2])
    changed = x.clone()
    changed[:, 4:] = 100.0  # whatever sits in padding must not matter
    assert torch.allclose(enc(x, key_padding_mask=kpm)[:, :4], enc(changed, key_padding_mask=kpm)[:, :4], atol=1e-5)
    assert torch.allclose(enc(x, key_padding_mask=kpm)[:, :4], enc(x[:, :4]), atol=1e-5)


@pytest.mark.parametrize("position", ["none", "rope", "alibi"])
def test_decoder_with_cross_attention_incremental_equals_full(position):
    torch.manual_seed(0)
    cfg = TransformerConfig(dim=D, depth=2, num_heads=4, num_kv_heads=2, position=position, num_memory=2)
    dec = Decoder(cfg, cross_attention=True, context_dim=24).eval()
    x, context = torch.randn(2, 7, D), torch.randn(2, 5, 24)
    context_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    full = dec(x, context, context_padding_mask=context_mask)
    cache, cross = dec.make_cache(max_len=7), dec.make_cache()
    steps = [dec(x[:, t : t + 1], context, context_padding_mask=context_mask, cache=cache, cross_cache=cross) for t in range(7)]
    assert (torch.cat(steps, dim=1) - full).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="pass the encoder output as context="):
        dec(x)


def test_config_rejects_unknown_choices():
    with pytest.raises(ValueError, match=r"position='sinus' is not one of \('none', 'rope', 'alibi'\)"):
        TransformerConfig(position="sinus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"dim=30 must be divisible by num_heads=4"):
        TransformerConfig(dim=30, num_heads=4)


def test_init_gpt2_scales_residual_projections_and_rejects_bad_depth():
    from tzoo.core import init_gpt2

    torch.manual_seed(0)
    dec = Decoder(TransformerConfig(dim=256, depth=8, num_heads=4))
    init_gpt2(dec, 8)
    out_std = dec.blocks[0].attn.out_proj.weight.std().item()
    qkv_std = dec.blocks[0].attn.qkv_proj.weight.std().item()
    assert abs(qkv_std - 0.02) < 0.002
    assert abs(out_std - 0.02 / 4) < 0.001  # 0.02 / sqrt(2 * 8)
    with pytest.raises(ValueError, match=r"depth must be >= 1.*got 0"):
        init_gpt2(dec, 0)


def test_encoder_forward_layers_keeps_the_named_blocks_outputs_normed():
    torch.manual_seed(0)
    enc = Encoder(TransformerConfig(dim=16, depth=3, num_heads=2, dropout=0.0)).eval()
    x, pad = torch.randn(2, 5, 16), torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    out, kept = enc.forward_layers(x, [2, 1], key_padding_mask=pad)
    assert torch.equal(out, enc(x, key_padding_mask=pad))
    h1 = enc.blocks[0](x, key_padding_mask=pad)
    h2 = enc.blocks[1](h1, key_padding_mask=pad)
    assert len(kept) == 2 and torch.equal(kept[0], enc.norm(h1)) and torch.equal(kept[1], enc.norm(h2))
    with pytest.raises(ValueError, match=r"layers=\[3\] must be block counts in 1..2 \(this Encoder has 3 blocks\)"):
        enc.forward_layers(x, [3])
    conditioned, _ = enc.forward_layers(x, [1], key_padding_mask=pad, condition=lambda h: 2 * h)
    h = enc.blocks[1](h1 + 2 * enc.norm(h1), key_padding_mask=pad)
    assert torch.allclose(conditioned, enc.norm(enc.blocks[2](h, key_padding_mask=pad)), atol=1e-6)
