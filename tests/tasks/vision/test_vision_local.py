"""2-D local attention (ViTConfig.local_radius): the mask over the patch grid against neighbours
counted by hand, the class token global, a radius covering the grid equal to global attention,
patch dropout following the kept patches, and a run through `tzoo fit` on digits."""

import dataclasses
from pathlib import Path

import pytest
import torch

from tzoo.core import TransformerConfig, capture_attention
from tzoo.tasks.cli import main
from tzoo.tasks.vision.model import ViT, ViTConfig, local_mask

ROOT = Path(__file__).resolve().parents[3]


def neighbours(mask: torch.Tensor, node: int, num_prefix: int, w: int) -> set[tuple[int, int]]:
    """The (row, column) of every patch node ``node`` may attend to."""
    return {divmod(j - num_prefix, w) for j in range(num_prefix, mask.shape[1]) if mask[node, j]}


def test_a_patch_sees_exactly_its_grid_neighbours_and_the_class_token_sees_everything():
    h, w, P = 4, 5, 2  # a 4x5 grid behind the class token and one register
    mask = local_mask((h, w), 1, P)
    assert mask.shape == (P + h * w, P + h * w) and mask.dtype == torch.bool
    patch = lambda r, c: P + r * w + c  # noqa: E731 - the node of the patch at (r, c), row-major after the prefix
    # written out by hand: corners see a 2x2 block, an edge patch 2x3, an inner patch 3x3
    assert neighbours(mask, patch(0, 0), P, w) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert neighbours(mask, patch(3, 4), P, w) == {(2, 3), (2, 4), (3, 3), (3, 4)}
    assert neighbours(mask, patch(0, 4), P, w) == {(0, 3), (0, 4), (1, 3), (1, 4)}
    assert neighbours(mask, patch(3, 0), P, w) == {(2, 0), (2, 1), (3, 0), (3, 1)}
    assert neighbours(mask, patch(0, 2), P, w) == {(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)}
    assert neighbours(mask, patch(2, 2), P, w) == {(r, c) for r in (1, 2, 3) for c in (1, 2, 3)}
    # the class token and the register see every node, and every node sees them
    assert mask[:P].all() and mask[:, :P].all()
    # radius 2 around (2, 2): rows 0..3 (the grid ends), columns 0..4
    assert neighbours(local_mask((h, w), 2, P), patch(2, 2), P, w) == {(r, c) for r in range(4) for c in range(5)}
    # radius 0: a patch sees itself only (and the global nodes)
    assert neighbours(local_mask((h, w), 0, P), patch(1, 3), P, w) == {(1, 3)}
    assert local_mask((h, w), 0, P)[patch(1, 3), :P].all()


def _vit(**kwargs) -> ViT:
    torch.manual_seed(0)
    stack = TransformerConfig(dim=16, depth=2, num_heads=2)
    return ViT(ViTConfig(5, 12, 1, patch_size=4, stride=2, num_registers=1, transformer=stack, **kwargs))


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_a_radius_covering_the_grid_equals_global_attention(pool):
    plain = _vit(pool=pool).eval()
    local = _vit(pool=pool, local_radius=4).eval()  # the grid is 5x5: radius 4 reaches every patch
    local.load_state_dict(plain.state_dict())
    images = torch.randn(3, 1, 12, 12)
    with torch.no_grad():
        assert local.local_mask((5, 5), images.device).all()
        assert torch.allclose(local(images), plain(images), atol=1e-6)
        assert torch.allclose(local.forward_features(images), plain.forward_features(images), atol=1e-6)


def test_a_small_radius_changes_the_output_and_the_attention_follows_the_mask():
    plain = _vit().eval()
    local = _vit(local_radius=1).eval()
    local.load_state_dict(plain.state_dict())
    images = torch.randn(2, 1, 12, 12)
    with torch.no_grad(), capture_attention(local, "encoder.blocks.0.attn") as captured:
        features = local.forward_features(images)
    out = local.forward_head(features)
    assert (features - plain.forward_features(images)).abs().max() > 1e-2  # the patches see less
    assert torch.allclose(out, local(images), atol=1e-5)  # the class-node shortcut: the class token is global
    weights = captured["encoder.blocks.0.attn"][0]  # (B, H, P + N, P + N)
    mask = local.local_mask((5, 5), images.device)
    assert (weights[..., ~mask] == 0).all() and (weights[..., mask] > 0).all()
    assert local.local_mask((5, 5), images.device) is mask  # made once per grid
    assert local.local_mask((3, 3), images.device).shape == (2 + 9, 2 + 9)  # another image size, another grid


def test_under_patch_dropout_the_mask_follows_the_kept_patches():
    model = _vit(local_radius=1, patch_dropout=0.5).train()
    images = torch.randn(4, 1, 12, 12)
    torch.manual_seed(1)
    x, mask = model._embed(images)
    torch.manual_seed(1)
    _, kept = model._drop_patches(model.tokenizer(images)[0])  # the same draw: (B, M) kept patch indices
    full = model.local_mask((5, 5), images.device)
    M = model.kept_patches(25)
    assert x.shape == (4, 2 + M, 16) and mask.shape == (4, 2 + M, 2 + M)
    for b in range(4):
        nodes = torch.cat([torch.arange(2), kept[b] + 2])  # prefix, then the kept patches in grid order
        assert torch.equal(mask[b], full[nodes][:, nodes])
    assert mask[:, :2].all() and mask[:, :, :2].all()
    loss = model(images).square().mean()  # trains through the (B, N, N) mask
    loss.backward()
    assert torch.isfinite(loss)


def test_bad_radius():
    with pytest.raises(ValueError, match=r"net.local_radius must be an integer >= 0 .* or None \(global attention\), got -1"):
        ViTConfig(10, local_radius=-1)
    cfg = dataclasses.replace(ViTConfig(10, in_channels=1), local_radius=None)
    assert ViT(dataclasses.replace(cfg, transformer=TransformerConfig(dim=8, depth=1, num_heads=2))).local_mask((2, 2), torch.device("cpu")) is None


@pytest.mark.slow
def test_fit_with_local_attention_on_digits(tmp_path, monkeypatch):
    monkeypatch.setenv("TZOO_CACHE", str(tmp_path / "cache"))
    main([
        "fit", "--config", str(ROOT / "configs" / "vision" / "digits.yaml"), "--model.init_args.net.local_radius=1",
        "--model.init_args.net.transformer.dim=16", "--model.init_args.net.transformer.depth=1", "--model.init_args.attention_images=1",
        "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1", "--trainer.check_val_every_n_epoch=1",
        "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
    ])  # fmt: skip
    (ckpt,) = tmp_path.rglob("last.ckpt")
    checkpoint = torch.load(ckpt, weights_only=True)
    assert checkpoint["hyper_parameters"]["net"]["local_radius"] == 1 and checkpoint["global_step"] == 2
    assert list(tmp_path.rglob("attention/step_*.png"))


def test_local_attention_with_linear_attention_is_refused_at_config_time():
    import pytest

    from tzoo.core import TransformerConfig
    from tzoo.tasks.vision.model import ViTConfig

    with pytest.raises(ValueError, match=r"net.local_radius=1 conflicts with net.transformer.attention='linear' in the vision task: .*takes no mask"):
        ViTConfig(local_radius=1, transformer=TransformerConfig(dim=16, depth=1, num_heads=2, attention="linear"))
