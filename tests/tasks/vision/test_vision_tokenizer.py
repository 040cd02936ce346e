"""PatchTokenizer: shapes, the patch grid, positions (sin-cos regenerated, learned interpolated),
the ViT around it, and bad input."""

import pytest
import torch

from tzoo.core import TransformerConfig, sincos_2d
from tzoo.tasks.vision.model import SIZES, ViT, ViTConfig, vit_tiny
from tzoo.tasks.vision.tokenizer import PatchTokenizer, grid_size, patchify, unpatchify


def test_shapes_with_class_token_and_registers_on_a_non_square_image():
    tok = PatchTokenizer(32, patch_size=4, in_channels=3, num_registers=2)
    nodes, grid = tok(torch.randn(2, 3, 32, 24))
    assert grid == (8, 6) and tok.num_prefix == 3
    assert nodes.shape == (2, 3 + 8 * 6, 32)
    plain = PatchTokenizer(32, patch_size=(2, 4), class_token=False)
    nodes, grid = plain(torch.randn(1, 3, 8, 8))
    assert grid == (4, 2) and nodes.shape == (1, 8, 32) and plain.num_prefix == 0


def test_overlapping_patches_with_a_stride():
    tok = PatchTokenizer(16, patch_size=4, stride=2, in_channels=1, class_token=False)
    nodes, grid = tok(torch.randn(1, 1, 8, 10))
    assert grid == (3, 4) == grid_size((8, 10), 4, 2) and nodes.shape == (1, 12, 16)


def test_nodes_are_a_linear_map_of_each_patch_plus_its_sincos_position():
    torch.manual_seed(0)
    tok = PatchTokenizer(16, patch_size=2, in_channels=3, class_token=False)
    images = torch.randn(2, 3, 6, 4)
    nodes, grid = tok(images)
    # reference: flatten each patch (row-major grid), apply the conv kernel as a matrix
    weight = tok.proj.weight.reshape(16, -1)  # (D, C*p*p)
    expected = patchify(images, 2) @ weight.T + tok.proj.bias + sincos_2d(*grid, 16)
    assert torch.allclose(nodes, expected, atol=1e-5)


def test_patch_grid_reassembles_into_the_image():
    images = torch.randn(2, 3, 12, 8)
    patches = patchify(images, (4, 2))  # (B, N, C*ph*pw)
    assert patches.shape == (2, 3 * 4, 3 * 4 * 2)
    # the node at (row r, col c) is the image block at rows 4r.., columns 2c..
    r, c = 1, 2
    assert torch.equal(patches[:, r * 4 + c], images[:, :, 4 * r : 4 * r + 4, 2 * c : 2 * c + 2].reshape(2, -1))
    assert torch.equal(unpatchify(patches, (3, 4), (4, 2), 3), images)
    with pytest.raises(ValueError, match=r"do not fit a 2x2 grid of 3-channel 4x2 patches: expected \(B, 4, 24\)"):
        unpatchify(patches, (2, 2), (4, 2), 3)


def test_sincos_positions_are_regenerated_for_another_image_size():
    tok = PatchTokenizer(16, patch_size=2, in_channels=1, class_token=False)
    torch.nn.init.zeros_(tok.proj.weight), torch.nn.init.zeros_(tok.proj.bias)
    nodes, grid = tok(torch.randn(1, 1, 10, 6))
    assert grid == (5, 3) and torch.allclose(nodes[0], sincos_2d(5, 3, 16))


def test_learned_positions_interpolate_to_another_grid():
    tok = PatchTokenizer(8, patch_size=2, in_channels=1, image_size=(8, 8), position="learned", class_token=False)
    assert tok.learned_positions((4, 4)) is tok.pos  # the trained grid: the table itself
    with torch.no_grad():
        tok.pos.copy_(torch.arange(4.0).repeat_interleave(4)[None, :, None].expand(1, 16, 8))  # value = row
    bigger = tok.learned_positions((8, 6))
    assert bigger.shape == (1, 48, 8)
    rows = bigger[0, :, 0].reshape(8, 6)
    assert torch.allclose(rows, rows[:, :1].expand(8, 6), atol=1e-5)  # still constant along a row
    assert (rows[1:, 0] >= rows[:-1, 0] - 1e-5).all()  # and rising down the columns
    smaller = tok.learned_positions((2, 2))
    assert smaller.shape == (1, 4, 8)
    model = ViT(ViTConfig(3, 8, 1, patch_size=2, position="learned", transformer=TransformerConfig(dim=8, depth=1, num_heads=2)))
    assert model(torch.randn(2, 1, 16, 12)).shape == (2, 3)  # inference at another size


def test_named_sizes_and_pooling():
    assert set(SIZES) == {"tiny", "small", "base"}
    assert [(s().dim, s().depth, s().num_heads) for s in SIZES.values()] == [(192, 12, 3), (384, 12, 6), (768, 12, 12)]
    model = ViT(ViTConfig(10, 16, 3, pool="mean", num_registers=1, transformer=vit_tiny(depth=1)))
    assert model.encoder.config.dim == 192 and model.encoder.config.num_heads == 3
    features = model.forward_features(torch.randn(2, 3, 16, 16))
    assert features.shape == (2, 1 + 16, 192)  # a register in front, no class token under mean pooling
    pooled = model.forward_head(features, pre_logits=True)
    assert torch.allclose(pooled, features[:, 1:].mean(1)) and model.forward_head(features).shape == (2, 10)


@pytest.mark.parametrize(
    "kwargs, stack",
    [
        ({}, {}),
        ({"num_registers": 2, "position": "learned"}, {"layer_scale": 0.1}),
        ({"pool": "mean"}, {}),
        ({"local_radius": 1, "num_registers": 1}, {}),
        # the core's options: the last layer's class-node shortcut must give what every node through every layer gives
        ({}, {"window": 3}),
        ({}, {"top_k": 3}),
        ({}, {"num_memory": 2}),
        ({}, {"num_kv_heads": 1}),
        ({}, {"position": "alibi"}),
        ({}, {"position": "rope"}),
        ({}, {"norm_first": False, "norm": "rmsnorm", "feed_forward": "swiglu"}),
    ],
)
def test_forward_equals_head_of_features(kwargs, stack):
    torch.manual_seed(0)
    net = ViTConfig(7, 12, 2, patch_size=4, stride=2, transformer=TransformerConfig(dim=16, depth=2, num_heads=4, **stack), **kwargs)
    model = ViT(net).eval()
    images = torch.randn(3, 2, 12, 12)
    assert torch.allclose(model(images), model.forward_head(model.forward_features(images)), atol=1e-5)


def test_drop_path_layer_scale_and_dropout_reach_the_blocks():
    stack = TransformerConfig(dim=8, depth=3, num_heads=2, drop_path=0.2, layer_scale=1e-4, dropout=0.1)
    model = ViT(ViTConfig(5, in_channels=1, patch_size=2, transformer=stack))
    block = model.encoder.blocks[-1]
    kinds = {type(m).__name__ for m in block.attn_out}
    assert kinds == {"Dropout", "LayerScale", "DropPath"}
    assert block.attn_out[-1].p == pytest.approx(0.2)  # the last block drops the most
    x = torch.randn(4, 1, 8, 8)
    model.train()
    loss = model(x).square().mean()
    loss.backward()
    assert model.tokenizer.proj.weight.grad is not None


def test_image_size_that_does_not_tile():
    tok = PatchTokenizer(16, patch_size=4)
    with pytest.raises(ValueError, match=r"image height 30 does not tile into patches of 4 with stride 4: valid heights are a multiple of 4 \(e.g. 28 or 32\)"):
        tok(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"image width 9 does not tile into patches of 4 with stride 2: valid widths are 4 \+ a multiple of 2 \(e.g. 8 or 10\)"):
        grid_size((8, 9), 4, 2)
    with pytest.raises(ValueError, match=r"image height 2 does not tile"):
        grid_size((2, 8), 4)


def test_wrong_number_of_channels():
    tok = PatchTokenizer(16, patch_size=4, in_channels=3)
    with pytest.raises(ValueError, match=r"images have 1 channels but the model takes 3 \(in_channels=3\)"):
        tok(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"images must be \(B, C, H, W\), got a tensor of shape \(3, 8, 8\)"):
        tok(torch.randn(3, 8, 8))


def test_bad_settings():
    with pytest.raises(ValueError, match=r"learned positions need the training image_size"):
        PatchTokenizer(16, position="learned")
    with pytest.raises(ValueError, match=r"position='rope' is not one of \('sincos', 'learned'\)"):
        PatchTokenizer(16, position="rope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"patch_size must be a positive int or a \(height, width\) pair of them, got 0"):
        PatchTokenizer(16, patch_size=0)
    with pytest.raises(ValueError, match=r"net.pool='max' is not one of \('cls', 'mean'\)"):
        ViTConfig(10, pool="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"net.position='rope' is not one of \('sincos', 'learned'\); relative positions are net.transformer.position"):
        ViTConfig(10, position="rope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"net.patch_size must be a positive int or a \(height, width\) pair of them, got 0"):
        ViTConfig(10, patch_size=0)


def test_conv_stem_gives_the_same_grid_and_nodes_as_the_patch_projection():
    torch.manual_seed(0)
    images = torch.randn(2, 1, 28, 20)
    patch = PatchTokenizer(32, patch_size=4, in_channels=1, class_token=True)
    conv = PatchTokenizer(32, patch_size=4, in_channels=1, class_token=True, stem="conv")
    (xp, gp), (xc, gc) = patch(images), conv(images)
    assert gp == gc == (7, 5) and xp.shape == xc.shape == (2, 1 + 35, 32)
    # each node sees only its own patch's receptive field: changing pixels of patch (0, 0) leaves far nodes alone
    moved = images.clone()
    moved[:, :, :4, :4] += 1.0
    conv.eval()
    far = conv(moved)[0][:, 1 + 2 * 5 + 3:] - conv(images)[0][:, 1 + 2 * 5 + 3:]
    assert far.abs().max() < 1e-6


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(patch_size=6, stem="conv"), r"stem='conv' needs a square power-of-two patch size.*\(6, 6\)"),
    (dict(patch_size=4, stride=2, stem="conv"), r"stride \(2, 2\) must equal patch_size \(4, 4\)"),
    (dict(patch_size=4, stem="conv3"), r"stem='conv3' is not one of \('patch', 'conv'\)"),
])
def test_conv_stem_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PatchTokenizer(32, in_channels=1, **kwargs)
