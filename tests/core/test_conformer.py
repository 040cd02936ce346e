"""Conformer blocks (``TransformerConfig(block='conformer')``): equal to torchaudio's ``Conformer`` with
the same weights, padding-independent, and their bad options refused."""

import pytest
import torch
from torch import nn

from tzoo.core import ConformerBlock, ConvModule, Decoder, Encoder, TransformerConfig

torchaudio_models = pytest.importorskip("torchaudio.models")

D, H, K = 144, 4, 15


def _conformer_cfg(**kw) -> TransformerConfig:
    return TransformerConfig(**{"dim": D, "depth": 2, "num_heads": H, "feed_forward": "silu", "block": "conformer", "conv_kernel": K, **kw})


def _trained_scale(module: nn.Module, seed: int = 0) -> None:
    """Weights and BatchNorm statistics of the spread a trained model has, not an initialisation's
    (norm gains around 1 with spread, biases non-zero, running means/variances far from 0/1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 1.5 / p[0].numel() ** 0.5)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(0.5 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))


def _copy_from_torchaudio(ours: ConformerBlock, theirs: nn.Module) -> None:
    ff = {"ff1": theirs.ffn1.sequential, "ff2": theirs.ffn2.sequential}
    conv = theirs.conv_module
    pairs = {
        "ff1_norm": ff["ff1"][0], "ff1.fc1": ff["ff1"][1], "ff1.fc2": ff["ff1"][4],
        "ff2_norm": ff["ff2"][0], "ff2.fc1": ff["ff2"][1], "ff2.fc2": ff["ff2"][4],
        "attn_norm": theirs.self_attn_layer_norm, "attn.out_proj": theirs.self_attn.out_proj,
        "conv_norm": conv.layer_norm, "conv.depthwise": conv.sequential[2], "conv.norm": conv.sequential[3],
        "out_norm": theirs.final_layer_norm,
    }  # fmt: skip
    with torch.no_grad():
        for ours_name, module in pairs.items():
            ours.get_submodule(ours_name).load_state_dict(module.state_dict())
        ours.attn.qkv_proj.weight.copy_(theirs.self_attn.in_proj_weight)  # q, k, v stacked as PyTorch stacks them
        ours.attn.qkv_proj.bias.copy_(theirs.self_attn.in_proj_bias)
        for mine, their in (("in_proj", conv.sequential[0]), ("out_proj", conv.sequential[5])):  # 1x1 convolutions
            getattr(ours.conv, mine).weight.copy_(their.weight.squeeze(-1))
            getattr(ours.conv, mine).bias.copy_(their.bias)


def _pair(depth: int = 2) -> tuple[Encoder, nn.Module]:
    theirs = torchaudio_models.Conformer(input_dim=D, num_heads=H, ffn_dim=4 * D, num_layers=depth, depthwise_conv_kernel_size=K)
    _trained_scale(theirs)
    ours = Encoder(_conformer_cfg(depth=depth))
    for block, layer in zip(ours.blocks, theirs.conformer_layers, strict=True):
        _copy_from_torchaudio(block, layer)
    return ours.eval(), theirs.eval()


def test_encoder_equals_torchaudio_conformer_with_the_same_weights():
    ours, theirs = _pair()
    x = torch.randn(3, 57, D)
    lengths = torch.full((3,), 57)
    expected, _ = theirs(x, lengths)
    got = ours(x)
    assert expected.abs().mean() > 0.3  # a real signal, not a collapsed one
    assert (got - expected).abs().max().item() <= 5e-5


def test_padded_nodes_change_nothing_unlike_torchaudios_convolution():
    """Each utterance alone (torchaudio, no padding) == ours in a padded batch; torchaudio's own
    batched output differs at the utterance's end: its convolution reads the padding."""
    ours, theirs = _pair()
    lengths = [57, 40, 23]
    x = torch.randn(3, 57, D)
    mask = torch.arange(57)[None] < torch.tensor(lengths)[:, None]
    batched = ours(x, key_padding_mask=mask)
    for i, n in enumerate(lengths):
        alone, _ = theirs(x[i : i + 1, :n], torch.tensor([n]))
        assert (batched[i, :n] - alone[0]).abs().max().item() <= 5e-5
    theirs_batched, _ = theirs(x, torch.tensor(lengths))
    alone, _ = theirs(x[1:2, :40], torch.tensor([40]))
    assert (theirs_batched[1, :40] - alone[0]).abs().max().item() > 1e-3


def test_layernorm_conformer_is_batch_independent_in_training():
    torch.manual_seed(0)
    enc = Encoder(_conformer_cfg(conv_norm="layernorm")).train()  # no dropout: training == inference here
    x = torch.randn(2, 30, D)
    mask = torch.tensor([[True] * 30, [True] * 18 + [False] * 12])
    batched = enc(x, key_padding_mask=mask)
    assert (batched[1, :18] - enc(x[1:2, :18])[0]).abs().max().item() <= 1e-5


def test_block_is_the_papers_order():
    torch.manual_seed(0)
    enc = Encoder(_conformer_cfg(depth=1)).eval()
    b, x = enc.blocks[0], torch.randn(1, 9, D)
    h = x + 0.5 * b.ff1(b.ff1_norm(x))
    h = h + b.attn(b.attn_norm(h))
    h = h + b.conv(b.conv_norm(h))
    h = h + 0.5 * b.ff2(b.ff2_norm(h))
    assert torch.allclose(enc(x), b.out_norm(h), atol=1e-6)
    assert isinstance(enc.norm, nn.Identity)  # the blocks end with their own norm


@pytest.mark.parametrize(
    ("options", "error", "names"),
    [
        ({"conv_kernel": 4}, "conv_kernel must be an odd integer >= 1", "conv_kernel=4"),
        ({"conv_kernel": 0}, "conv_kernel must be an odd integer >= 1", "conv_kernel=0"),
        ({"conv_norm": "groupnorm"}, "not one of ('batchnorm', 'layernorm')", "conv_norm='groupnorm'"),
        ({"block": "perceiver"}, "not one of ('transformer', 'conformer')", "block='perceiver'"),
        ({"norm_first": False}, "use norm_first=True or block='transformer'", "norm_first=False"),
        ({"layer_scale": 1e-5}, "use layer_scale=None or block='transformer'", "layer_scale=1e-05"),
    ],
)
def test_bad_conformer_options_are_refused_by_name(options, error, names):
    with pytest.raises(ValueError) as info:
        _conformer_cfg(**options)
    assert error in str(info.value) and names in str(info.value)


def test_a_decoder_refuses_conformer_blocks():
    with pytest.raises(ValueError, match=r"block='conformer' is an encoder block.*use block='transformer' for the decoder"):
        Decoder(_conformer_cfg(), cross_attention=True)


def test_conv_module_refuses_an_even_kernel():
    with pytest.raises(ValueError, match="conv_kernel=8"):
        ConvModule(D, 8)
