"""Attention pictures: maps over the patch grid from the core capture, rollout, the PNG."""

import pytest
import torch

from tzoo.core import TransformerConfig, capture_attention
from tzoo.tasks.vision.attention_maps import attention_figure, attention_maps, rollout
from tzoo.tasks.vision.model import ViT, ViTConfig


def vit(**kwargs):
    stack = TransformerConfig(dim=16, depth=2, num_heads=2, **kwargs.pop("transformer", {}))
    return ViT(ViTConfig(4, in_channels=1, patch_size=2, transformer=stack, **kwargs))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return vit(num_registers=1).eval()


def test_captured_attention_rows_sum_to_one_and_the_output_is_unchanged(model):
    images = torch.randn(3, 1, 8, 6)
    plain = model.forward_features(images)
    with capture_attention(model) as captured:
        features = model.forward_features(images)
        logits = model(images)
    assert torch.equal(features, plain)  # the fast path ran as usual
    assert torch.allclose(logits, model.forward_head(features), atol=1e-6)
    weights = captured["encoder.blocks.1.attn"][0]
    assert weights.shape == (3, 2, 2 + 12, 2 + 12)  # (B, H, N, N): class + register + 4x3 patches
    assert torch.allclose(weights.sum(-1), torch.ones(3, 2, 14), atol=1e-5)
    # forward's last layer computes the class node only: its attention row, the same as above
    class_row = captured["encoder.blocks.1.attn"][1]
    assert class_row.shape == (3, 2, 1, 14) and torch.allclose(class_row[:, :, 0], weights[:, :, 0], atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"pool": "cls"}, {"pool": "mean"}, {"transformer": {"num_memory": 2}}, {"local_radius": 1}])
def test_maps_have_the_grid_shape_and_sum_to_one(kwargs):
    torch.manual_seed(0)
    model = vit(**kwargs)
    maps, logits = attention_maps(model, torch.randn(3, 1, 8, 6))
    assert logits.shape == (3, 4) and model.training  # left in the mode it was in
    for grid in maps.values():
        assert grid.shape == (3, 4, 3)
        assert torch.allclose(grid.sum((1, 2)), torch.ones(3), atol=1e-5) and (grid >= 0).all()


def test_rollout_reference():
    a = torch.softmax(torch.randn(2, 5, 5), dim=-1)
    b = torch.softmax(torch.randn(2, 5, 5), dim=-1)
    eye = torch.eye(5)
    # with the residual as half of each layer; rows of 0.5 A + 0.5 I already sum to 1
    assert torch.allclose(rollout([a, b]), (0.5 * b + 0.5 * eye) @ (0.5 * a + 0.5 * eye), atol=1e-6)
    assert torch.allclose(rollout([a, b]).sum(-1), torch.ones(2, 5), atol=1e-5)


def test_figure_is_a_png(model, tmp_path):
    images = torch.randn(2, 1, 8, 8)
    path = attention_figure(model, images, tmp_path / "a" / "fig.png", mean=(0.3,), std=(0.4,), labels=torch.tensor([1, 2]), class_names=["a", "b", "c", "d"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
