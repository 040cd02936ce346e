"""Nothing lost, nothing silently wrong: what the core refuses, and how it says so.

Every refusal is checked for its type and for a message that names the offending argument or
value and what would be valid.
"""

import math
import re

import pytest
import torch

from tzoo.core import (
    ALiBi,
    MLP,
    Decoder,
    Encoder,
    KVCache,
    LearnedPositionalEmbedding,
    MultiHeadAttention,
    RotaryEmbedding,
    SinCos2DPositionalEncoding,
    SinusoidalPositionalEncoding,
    SwiGLU,
    TransformerBlock,
    TransformerConfig,
    capture_attention,
    sincos_1d,
)

D, H = 32, 4


def config(**kw):
    return TransformerConfig(**{"dim": D, "depth": 3, "num_heads": H, **kw})


def nodes(b=2, n=5, d=D, seed=0):
    return torch.randn(b, n, d, generator=torch.Generator().manual_seed(seed))


# --- 1. a decoder without cross-attention does not drop an encoder output ---------------------


def test_decoder_without_cross_attention_refuses_context():
    dec = Decoder(config()).eval()
    with pytest.raises(
        ValueError,
        match=r"^context given, but this Decoder has no cross-attention, so it would be ignored: .*"
        r"Decoder\(cfg, cross_attention=True, context_dim=<the encoder's width>\)",
    ):
        dec(nodes(), nodes(n=3))
    with pytest.raises(ValueError, match=r"^context_padding_mask given, but this Decoder has no cross-attention"):
        dec(nodes(), context_padding_mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"^cross_cache given, but this Decoder has no cross-attention"):
        dec(nodes(), cross_cache=dec.make_cache())


def test_block_without_cross_attention_refuses_context():
    block = TransformerBlock(MultiHeadAttention(D, H), MLP(D, 64)).eval()
    with pytest.raises(ValueError, match=r"context was given but this block has no cross-attention.*cross_attn=MultiHeadAttention"):
        block(nodes(), nodes(n=3))


# --- 2. one KV cache shared by every layer ------------------------------------------------------


def test_one_kv_cache_object_shared_by_layers_is_refused():
    dec = Decoder(config()).eval()
    shared = [KVCache(8)] * 3
    with pytest.raises(
        ValueError,
        match=r"cache\[0\] and cache\[1\] are the same KVCache object, used by layers 0 and 1: .*"
        r"decoder\.make_cache\(max_len\) or \[KVCache\(max_len\) for _ in range\(depth\)\]",
    ):
        dec(nodes(), cache=shared)
    assert shared[0].length == 0  # refused before any layer wrote into it
    caches = dec.make_cache(8)
    with pytest.raises(ValueError, match=r"used by layers 0 and 2"):
        dec(nodes(), cache=[caches[0], caches[1], caches[0]])


def test_cache_and_cross_cache_must_not_share_objects():
    dec = Decoder(config(), cross_attention=True).eval()
    cache = dec.make_cache(8)
    with pytest.raises(ValueError, match=r"cache\[1\] and cross_cache\[1\] are the same KVCache object"):
        dec(nodes(), nodes(n=3), cache=cache, cross_cache=[KVCache(), cache[1], KVCache()])


def test_cache_list_must_have_one_cache_per_layer():
    dec = Decoder(config()).eval()
    with pytest.raises(ValueError, match=r"cache must hold one KVCache per layer \(3 for this Decoder\), got 2 caches"):
        dec(nodes(), cache=dec.make_cache(8)[:2])
    with pytest.raises(ValueError, match=r"got a single KVCache: make it with decoder\.make_cache\(max_len\)"):
        dec(nodes(), cache=KVCache(8))


def test_separate_caches_still_decode_like_the_full_forward():
    torch.manual_seed(0)
    dec = Decoder(config()).eval()
    x = nodes(n=6)
    cache = [KVCache(6) for _ in range(3)]
    steps = torch.cat([dec(x[:, t : t + 1], cache=cache) for t in range(6)], dim=1)
    assert (steps - dec(x)).abs().max().item() <= 1e-5


# --- 3. positional encodings with a base that fills their tables with NaN ------------------


@pytest.mark.parametrize("base", [0.0, -10000.0, math.nan, math.inf, 1.0])
def test_rope_base_must_be_finite_and_above_one(base):
    with pytest.raises(ValueError, match=rf"RoPE needs a finite base > 1 \(10000 is usual\), got base={base!r}"):
        RotaryEmbedding(8, base=base)
    with pytest.raises(ValueError, match=rf"rope_base must be a finite number > 1 \(10000 is usual\), got rope_base={base!r}"):
        TransformerConfig(position="rope", rope_base=base)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: sincos_1d(torch.arange(4), 8, base=math.nan), r"sin-cos encoding needs a finite base > 1.*got base=nan"),
        (lambda: SinusoidalPositionalEncoding(8, base=0.0), r"sin-cos encoding needs a finite base > 1.*got base=0.0"),
        (lambda: SinCos2DPositionalEncoding(8, base=-1.0), r"SinCos2DPositionalEncoding needs a finite base > 1.*got base=-1.0"),
        (lambda: SinCos2DPositionalEncoding(6), r"2-D sin-cos encodings need a positive width divisible by 4, got dim=6"),
        (lambda: SinusoidalPositionalEncoding(8, max_len=0), r"SinusoidalPositionalEncoding needs an integer max_len >= 1, got max_len=0"),
        (lambda: SinusoidalPositionalEncoding(0), r"sin-cos encodings need a positive, even width, got dim=0"),
        (lambda: LearnedPositionalEmbedding(0, 8), r"LearnedPositionalEmbedding needs an integer max_len >= 1, got max_len=0"),
        (lambda: LearnedPositionalEmbedding(8, 0), r"LearnedPositionalEmbedding needs an integer dim >= 1, got dim=0"),
        (lambda: RotaryEmbedding(0), r"RoPE needs a positive, even head width, got head_dim=0"),
        (lambda: RotaryEmbedding(8, max_len=0), r"RoPE needs an integer max_len >= 1, got max_len=0"),
        (lambda: ALiBi(0), r"ALiBi needs an integer num_heads >= 1, got num_heads=0"),
    ],
)
def test_positional_arguments_are_checked(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_negative_offsets_are_refused():
    with pytest.raises(ValueError, match=r"offset must be >= 0 \(the position of the first node\), got offset=-2"):
        SinusoidalPositionalEncoding(8, max_len=10)(torch.zeros(1, 3, 8), offset=-2)
    with pytest.raises(ValueError, match=r"offset must be >= 0.*got offset=-1"):
        RotaryEmbedding(8).rotate(torch.zeros(1, 1, 3, 8), offset=-1)


def test_relative_position_must_fit_the_attention():
    with pytest.raises(ValueError, match=r"RotaryEmbedding\(head_dim=16\) cannot rotate heads of width 8: build it with head_dim = dim / num_heads = 8"):
        MultiHeadAttention(D, H, pos=RotaryEmbedding(16))
    with pytest.raises(ValueError, match=r"ALiBi\(num_heads=8\) has one slope per head but the attention has num_heads=4: build it with ALiBi\(4\)"):
        MultiHeadAttention(D, H, pos=ALiBi(8))
    with pytest.raises(TypeError, match=r"pos must be a RelativePosition module .* or None, got 'rope'"):
        MultiHeadAttention(D, H, pos="rope")


# --- 4. every TransformerConfig field is checked ------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "valid"),
    [
        ("dim", 0, "an integer >= 1"),
        ("dim", 32.0, "an integer >= 1"),
        ("depth", 0, "an integer >= 1"),
        ("num_heads", 0, "an integer >= 1"),
        ("num_heads", -4, "an integer >= 1"),
        ("num_kv_heads", 0, r"an integer >= 1 or None \(as many as num_heads\)"),
        ("mlp_ratio", 0, r"a finite number > 0 \(the feed-forward's hidden width / dim, e.g. 4\)"),
        ("mlp_ratio", -2.0, "a finite number > 0"),
        ("mlp_ratio", math.nan, "a finite number > 0"),
        ("mlp_ratio", math.inf, "a finite number > 0"),
        ("dropout", 1.0, r"a probability in \[0, 1\)"),
        ("dropout", -0.1, r"a probability in \[0, 1\)"),
        ("attn_dropout", math.nan, r"a probability in \[0, 1\)"),
        ("drop_path", 1.5, r"a probability in \[0, 1\)"),
        ("layer_scale", 0.0, r"a finite number > 0 \(the initial per-channel scale, e.g. 1e-5\) or None"),
        ("layer_scale", math.nan, "a finite number > 0"),
        ("window", 0, r"an integer >= 1 or None \(no window\)"),
        ("top_k", 0, r"an integer >= 1 or None \(keep every score\)"),
        ("num_memory", -1, "an integer >= 0"),
        ("rope_base", -1.0, "a finite number > 1"),
        ("norm_first", "yes", "True or False"),
        ("bias", 1, "True or False"),
    ],
)
def test_config_fields_name_the_value_and_what_is_valid(field, value, valid):
    with pytest.raises(ValueError, match=rf"^{field} must be {valid}.*, got {field}={re.escape(repr(value))}$"):
        config(**{field: value})


def test_config_conflicts_name_both_fields():
    with pytest.raises(ValueError, match=r"dim=30 must be divisible by num_heads=4: .*valid num_heads for this dim: \[1, 2, 3, 5, 6, 10, 15, 30\]"):
        TransformerConfig(dim=30, num_heads=4)
    with pytest.raises(ValueError, match=r"num_kv_heads=3 conflicts with num_heads=4.*valid: \[1, 2, 4\]"):
        config(num_kv_heads=3)
    with pytest.raises(ValueError, match=r"feed_forward='gelu' conflicts with mlp_ratio=0.01 at dim=32: its hidden width mlp_ratio \* dim rounds to 0"):
        config(mlp_ratio=0.01)


@pytest.mark.parametrize("cls", [MLP, SwiGLU])
def test_feed_forward_widths_are_checked(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__} needs an integer hidden_dim >= 1, got hidden_dim=0"):
        cls(D, 0)
    with pytest.raises(ValueError, match=rf"{cls.__name__} dropout must be in \[0, 1\), got dropout=1.0"):
        cls(D, 64, dropout=1.0)


def test_attention_sizes_are_checked():
    with pytest.raises(ValueError, match=r"dim must be >= 1 \(the width of the nodes\), got dim=0"):
        MultiHeadAttention(0, 4)
    with pytest.raises(ValueError, match=r"context_dim must be >= 1 .*got context_dim=0"):
        MultiHeadAttention(D, H, context_dim=0)


# --- 5. attention capture: nesting, one layer name ------------------------------------------


def test_nested_captures_of_one_layer_both_record():
    torch.manual_seed(0)
    enc = Encoder(config(depth=2)).eval()
    x = nodes()
    with capture_attention(enc) as outer:
        enc(x)
        with capture_attention(enc, layers=["blocks.1.attn"]) as inner:
            enc(x)
        enc(x)
    assert [len(outer[name]) for name in ("blocks.0.attn", "blocks.1.attn")] == [3, 3]
    assert len(inner["blocks.1.attn"]) == 1
    assert torch.equal(inner["blocks.1.attn"][0], outer["blocks.1.attn"][1])
    assert all(block.attn.captured is None for block in enc.blocks)  # released after both


def test_capture_takes_a_single_layer_name():
    enc = Encoder(config(depth=2)).eval()
    with capture_attention(enc, layers="blocks.1.attn") as maps:
        enc(nodes())
    assert list(maps) == ["blocks.1.attn"] and maps["blocks.1.attn"][0].shape == (2, H, 5, 5)


def test_capture_of_an_unknown_layer_lists_the_valid_names():
    enc = Encoder(config(depth=2))
    with pytest.raises(ValueError, match=r"no attention layer named 'blocks\.2\.attn'; attention layers: \['blocks\.0\.attn', 'blocks\.1\.attn'\]"):
        with capture_attention(enc, layers="blocks.2.attn"):
            pass


# --- 6. shapes and dtypes into the public forwards --------------------------------------------


def test_encoder_input_of_another_width():
    enc = Encoder(config(dim=64))
    with pytest.raises(ValueError, match=r"^x has shape \(2, 5, 32\) but this Encoder's width is dim=64: expected \(B, N, 64\)$"):
        enc(nodes())
    with pytest.raises(ValueError, match=r"x has shape \(5, 64\) but this Encoder's width is dim=64: expected \(B, N, 64\) \(for a single sequence add the batch axis: x\[None\]\)"):
        enc(torch.randn(5, 64))


@pytest.mark.parametrize("stack", [Encoder, Decoder])
def test_integer_nodes_are_a_type_error(stack):
    with pytest.raises(TypeError, match=r"^x must be a floating tensor, got torch.int64 \(expected node embeddings \(B, N, 32\); token ids"):
        stack(config())(torch.zeros(2, 5, dtype=torch.long))


def test_decoder_inputs_of_another_width():
    dec = Decoder(config(), cross_attention=True, context_dim=24)
    with pytest.raises(ValueError, match=r"x has shape \(2, 5, 16\) but this Decoder's width is dim=32: expected \(B, N, 32\)"):
        dec(nodes(d=16), nodes(d=24))
    with pytest.raises(ValueError, match=r"context has shape \(2, 3, 32\) but this Decoder's cross-attention takes context_dim=24: expected \(B, M, 24\)"):
        dec(nodes(), nodes(n=3))
    with pytest.raises(
        TypeError, match=r"context_padding_mask must be a bool tensor of shape \(B, M\) = \(2, 3\) \(True = real node\), got torch.float32"
    ):
        dec(nodes(), nodes(n=3, d=24), context_padding_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"context_padding_mask must be a bool tensor of shape \(B, M\) = \(2, 3\).*got shape \(2, 5\)"):
        dec(nodes(), nodes(n=3, d=24), context_padding_mask=torch.ones(2, 5, dtype=torch.bool))


def test_attention_inputs_are_checked_up_front():
    m = MultiHeadAttention(D, H)
    with pytest.raises(ValueError, match=r"x has shape \(2, 5, 16\) but this attention's width is dim=32: expected \(B, N, 32\)"):
        m(nodes(d=16))
    with pytest.raises(TypeError, match=r"x must be a floating tensor, got torch.int32"):
        m(torch.zeros(2, 5, D, dtype=torch.int32))
    with pytest.raises(TypeError, match=r"x must be a tensor of shape \(B, N, 32\), got list"):
        m([[0.0] * D])
    cross = MultiHeadAttention(D, H, context_dim=24)
    with pytest.raises(ValueError, match=r"context has shape \(2, 3, 32\) but this attention takes context of width context_dim=24: expected \(B, M, 24\)"):
        cross(nodes(), nodes(n=3))
    with pytest.raises(ValueError, match=r"context has batch size 1 but x has 2"):
        cross(nodes(), nodes(b=1, n=3, d=24))
    with pytest.raises(ValueError, match=r"is_causal=True applies to self-attention.*pass a mask="):
        cross(nodes(), nodes(n=3, d=24), is_causal=True)


def test_padding_masks_are_checked():
    m = MultiHeadAttention(D, H)
    with pytest.raises(TypeError, match=r"key_padding_mask must be a bool tensor of shape \(B, M\) = \(2, 5\) \(True = real node\), got torch.int64.*\.bool\(\)"):
        m(nodes(), key_padding_mask=torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"key_padding_mask must be a bool tensor of shape \(B, N\) = \(2, 5\).*got shape \(5, 2\)"):
        Encoder(config())(nodes(), key_padding_mask=torch.ones(5, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"mask must be a bool tensor \(True = may attend\) or a floating one \(added to the scores\), got torch.int64"):
        m(nodes(), mask=torch.ones(5, 5, dtype=torch.long))


# --- 8. an attention built for another context width cannot self-attend -------------------------


def test_cross_only_attention_refuses_self_attention():
    m = MultiHeadAttention(D, H, context_dim=24)
    with pytest.raises(
        ValueError,
        match=r"built with context_dim=24 != dim=32, so it can only cross-attend: pass context= \(B, M, 24\), "
        r"or build it without context_dim for self-attention",
    ):
        m(nodes())
    assert m(nodes(), nodes(n=3, d=24)).shape == (2, 5, D)
