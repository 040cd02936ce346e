"""timm ViT in and out: a timm VisionTransformer with weights of trained scale, imported into
tzoo's ViT, gives the same logits (also at another image size, through the resized position
table, against timm's own resizing); tzoo's export loads into timm with the same logits."""

from __future__ import annotations

import math

import pytest
import torch

timm = pytest.importorskip("timm")

from tzoo.tasks.vision.timm_vit import from_timm_state, load_timm_vit, to_timm_state  # noqa: E402


def _trained_scale(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))


def _timm_vit(img_size: int = 32) -> torch.nn.Module:
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=img_size, patch_size=8, num_classes=7, embed_dim=128, depth=2, num_heads=2, mlp_ratio=4.0
    ).eval()
    _trained_scale(model)
    return model


IMAGES = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_timm_vit_imports_with_the_same_logits_and_exports_back(tmp_path):
    reference = _timm_vit()
    torch.save(reference.state_dict(), tmp_path / "vit.pth")
    model = load_timm_vit(tmp_path / "vit.pth")
    assert model.cfg.transformer.num_heads == 2 and model.cfg.transformer.norm_eps == 1e-6
    with torch.no_grad():
        theirs, ours = reference(IMAGES), model(IMAGES)
    assert theirs.abs().mean() > 0.3  # trained scale
    assert (ours - theirs).abs().max() < 1e-5
    back = _timm_vit()
    back.load_state_dict(to_timm_state(model))
    with torch.no_grad():
        assert (back(IMAGES) - theirs).abs().max() < 1e-5


def test_the_norm_eps_matters_at_trained_scale(tmp_path):
    """Guards the test above: tzoo's default eps (1e-5) where timm has 1e-6 is visible here."""
    from dataclasses import replace

    from tzoo.tasks.vision.timm_vit import timm_config

    reference = _timm_vit()
    cfg = timm_config(reference.state_dict(), head_dim=64)
    cfg = replace(cfg, transformer=replace(cfg.transformer, norm_eps=1e-5))
    with torch.no_grad():
        gap = (from_timm_state(reference.state_dict(), cfg)(IMAGES) - reference(IMAGES)).abs().max()
    assert gap > 1e-5


def test_another_image_size_resizes_the_position_table():
    reference = _timm_vit(img_size=32)
    model = from_timm_state(reference.state_dict(), head_dim=64)
    big = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    resized = timm.layers.resample_abs_pos_embed(reference.pos_embed, (6, 6), num_prefix_tokens=1)
    reference_48 = timm.models.vision_transformer.VisionTransformer(
        img_size=48, patch_size=8, num_classes=7, embed_dim=128, depth=2, num_heads=2
    ).eval()
    reference_48.load_state_dict({**reference.state_dict(), "pos_embed": resized})
    with torch.no_grad():
        assert (model(big) - reference_48(big)).abs().max() < 1e-5


def test_bad_timm_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'.*gone\.pth' do not exist"):
        load_timm_vit(tmp_path / "gone.pth")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"not a timm ViT state dict with a class token: no 'cls_token'"):
        load_timm_vit(tmp_path / "other.pth")
    state = _timm_vit().state_dict()
    from tzoo.tasks.vision.timm_vit import timm_config

    cfg = timm_config(state)
    from dataclasses import replace

    small = replace(cfg, transformer=replace(cfg.transformer, dim=64, num_heads=1))
    with pytest.raises(ValueError, match=r"tokenizer\.cls is \[1, 1, 128\] in the timm weights but \[1, 1, 64\]"):
        from_timm_state(state, small)


def test_a_position_table_that_is_not_a_square_grid_cannot_be_resized():
    from tzoo.tasks.vision.timm_vit import load_into

    state = _timm_vit().state_dict()
    model = from_timm_state(state)
    pos = state["pos_embed"]  # (1, 1 + h*w, D): drop two patches, 1 + h*w - 2 is no square
    state = {**state, "pos_embed": pos[:, :-2]}
    with pytest.raises(ValueError, match=r"the position table holds \d+ patches, not a square grid, so it cannot be resized to this model's \d+x\d+ patches"):
        load_into(model, state)


def test_pretrained_timm_weights_load_into_a_fine_tuning_run(tmp_path):
    """``--model.init_args.pretrained FILE`` through the CLI: the encoder holds the timm weights
    when training starts (positions resized to the data's grid, a fresh head for its classes)."""
    from lightning.pytorch.callbacks import Callback

    from tzoo.tasks.cli import TzooCLI

    reference = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=8, in_chans=1, num_classes=3, embed_dim=64, depth=1, num_heads=1).eval()
    _trained_scale(reference)
    torch.save(reference.state_dict(), tmp_path / "vit.pth")
    args = [
        "--config", "configs/vision/digits.yaml", f"--data.init_args.data_dir={tmp_path}", "--data.init_args.image_size=16",
        "--model.init_args.net.patch_size=8", "--model.init_args.net.stride=8", "--model.init_args.net.position=learned",
        "--model.init_args.net.transformer.dim=64", "--model.init_args.net.transformer.depth=1",
        "--model.init_args.net.transformer.num_heads=1", "--model.init_args.net.transformer.norm_eps=1e-6",
        "--model.init_args.attention_images=0", f"--model.init_args.pretrained={tmp_path / 'vit.pth'}",
        "--trainer.max_steps=1", "--trainer.limit_val_batches=0", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
    ]  # fmt: skip
    seen = {}

    class Peek(Callback):
        def on_train_start(self, trainer, pl_module):
            seen["qkv"] = pl_module.model.encoder.blocks[0].attn.qkv_proj.weight.detach().clone()

    cli = TzooCLI(args=args, run=False)
    cli.trainer.callbacks.append(Peek())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert torch.equal(seen["qkv"], reference.blocks[0].attn.qkv.weight)
    assert cli.model.model.tokenizer.pos.shape[1] == 4  # 16 px at patch 8: a 2x2 grid (timm's is 4x4)
