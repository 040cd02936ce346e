"""VisionClassifier through the tzoo CLI: fit on digits, test and predict from the checkpoint,
attention figures, checkpoints that don't fit the data."""

import csv
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from tzoo.core import TransformerConfig
from tzoo.tasks.cli import main
from tzoo.tasks.config import OptimConfig
from tzoo.tasks.loading import load_module
from tzoo.tasks.vision.data import ImageDataModule
from tzoo.tasks.vision.model import ViTConfig
from tzoo.tasks.vision.module import VisionClassifier

TINY_MODEL = dict(attention_images=2, net="{patch_size: 2, transformer: {dim: 16, depth: 1, num_heads: 2}}", optim="{warmup_steps: 2}")


def tiny(num_classes=10, image_size=(8, 8), in_channels=1, *, optim=None, **kwargs):
    """A one-layer VisionClassifier built by hand (``kwargs``: task options, or ViTConfig fields)."""
    fields = {k: kwargs.pop(k) for k in list(kwargs) if k in ViTConfig.__dataclass_fields__}
    net = ViTConfig(num_classes, image_size, in_channels, patch_size=2, transformer=TransformerConfig(dim=16, depth=1, num_heads=2), **fields)
    return VisionClassifier(net, optim or OptimConfig(weight_decay=0.05, betas=(0.9, 0.999)), **kwargs)


def _config(path, root, dataset_args):
    model = "\n".join(f"    {k}: {v}" for k, v in TINY_MODEL.items())
    data = "\n".join(f"    {k}: {v}" for k, v in dataset_args.items())
    path.write_text(
        textwrap.dedent(
            f"""\
            seed_everything: 0
            trainer:
              max_steps: 6
              val_check_interval: 3
              limit_val_batches: 2
              limit_test_batches: 2
              limit_predict_batches: 2
              default_root_dir: {root}
              enable_progress_bar: false
              enable_model_summary: false
              log_every_n_steps: 1
            model:
              class_path: tzoo.tasks.vision.module.VisionClassifier
              init_args:
            """
        )
        + model
        + "\ndata:\n  class_path: tzoo.tasks.vision.data.ImageDataModule\n  init_args:\n"
        + data
        + "\n"
    )
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A digits run of a few steps through `tzoo fit`: (config, run directory, last checkpoint)."""
    tmp = tmp_path_factory.mktemp("digits")
    config = _config(tmp / "digits.yaml", tmp / "runs", {"dataset": "digits", "batch_size": 32})
    main(["fit", "--config", str(config)])
    (ckpt,) = (tmp / "runs").rglob("last.ckpt")
    return config, ckpt.parent.parent, ckpt


def test_fit_logs_metrics_and_attention_figures(fitted):
    _, run, _ = fitted
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/loss", "val/acc", "val/acc_top5"} <= set(header)
    figures = sorted((run / "attention").glob("step_*.png"))
    assert [f.name for f in figures] == ["step_000003.png", "step_000006.png"]
    assert (run / "hparams.yaml").read_text().count("num_classes: 10") == 1


def test_test_and_predict_from_the_checkpoint(fitted, capsys):
    config, run, ckpt = fitted
    main(["test", "--config", str(config), "--ckpt_path", str(ckpt)])
    out = capsys.readouterr().out
    assert "test/acc" in out and "test/acc_top5" in out
    main(["predict", "--config", str(config), "--ckpt_path", str(ckpt)])
    (written,) = (run.parent).rglob("predictions.csv")
    rows = list(csv.DictReader(written.open()))
    assert len(rows) == 64 and {r["class_name"] for r in rows} <= set("0123456789")
    assert all(0 < float(r["probability"]) <= 1 for r in rows)


def test_load_module_predicts_like_the_trained_model(fitted):
    _, _, ckpt = fitted
    module = load_module(ckpt, task="vision")
    assert module.class_names == tuple("0123456789")
    data = ImageDataModule("digits")
    x, _ = next(iter(data.test_dataloader()))
    out = module.predict_step((x[:5], None), 0)
    assert out["class"].shape == (5,) and torch.allclose(out["prob"].sum(-1), torch.ones(5))


def test_predict_a_folder_of_image_files(fitted, tmp_path):
    config, _, ckpt = fitted
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(pics / f"{i}.png")
    main(["predict", "--config", str(config), "--ckpt_path", str(ckpt), f"--data.init_args.predict_dir={pics}", f"--trainer.default_root_dir={tmp_path / 'runs'}"])
    (written,) = (tmp_path / "runs").rglob("predictions.csv")
    assert [r["item"] for r in csv.DictReader(written.open())] == [str(pics / f"{i}.png") for i in range(3)]


def test_a_checkpoint_for_another_number_of_classes_is_refused(fitted, tmp_path, capsys):
    _, _, ckpt = fitted
    root = tmp_path / "three"
    for name in ("a", "b", "c"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 30 * i, dtype=np.uint8)).save(root / name / f"{i}.png")
    # 3 classes: the number of classes is checked first, before the weights are loaded
    config = _config(tmp_path / "three.yaml", tmp_path / "runs", {"dataset": "folder", "data_dir": root, "image_size": 8})
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--config", str(config), "--ckpt_path", str(ckpt), "--trainer.logger=false"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "tzoo: error: the checkpoint was trained for num_classes=10, but this model (built for the data) has num_classes=3:"
    )


def test_data_that_does_not_fit_the_model(tmp_path):
    import lightning.pytorch as pl

    model = tiny(in_channels=3)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"the model has in_channels=3 but the data \(digits\) has in_channels=1"):
        trainer.validate(model, datamodule=ImageDataModule("digits"), verbose=False)


def test_soft_targets_under_mixup_and_label_smoothing():
    torch.manual_seed(0)
    model = tiny(label_smoothing=0.1)
    data = ImageDataModule("digits", batch_size=16, mixup_alpha=1.0)
    x, y = next(iter(data.train_dataloader()))
    loss = model._loss(model(x), y)
    assert y.shape == (16, 10) and torch.isfinite(loss) and loss > 0
    loss.backward()


def test_num_classes_must_be_given_outside_the_cli():
    with pytest.raises(ValueError, match=r"net.num_classes and net.in_channels are not set: the tzoo CLI links them from the data"):
        VisionClassifier()
    with pytest.raises(ValueError, match=r"net has no field 'size' \(valid fields: num_classes, image_size, in_channels, .*transformer\)"):
        VisionClassifier({"num_classes": 10, "in_channels": 1, "size": "huge"})


def test_patch_dropout_keeps_a_random_share_of_patches_in_training_only():
    from tzoo.tasks.vision.model import ViT

    def net(**kw):
        return ViTConfig(10, 28, 1, patch_size=4, transformer=TransformerConfig(dim=32, depth=2, num_heads=2), **kw)

    torch.manual_seed(0)
    vit = ViT(net(patch_dropout=0.5))
    images = torch.randn(3, 1, 28, 28)
    full, _ = vit.tokenizer(images)  # (3, 1 + 49, 32)
    kept, mask = vit.train()._embed(images)
    assert mask is None  # no local attention: nothing to mask
    assert kept.shape == (3, 1 + 24, 32)  # round(49 x 0.5) = 24 patches, and the class node
    assert torch.equal(kept[:, 0], full[:, 0])  # the class node always stays
    for b in range(3):  # every kept node is one of the image's own patch nodes, each at most once
        match = (kept[b, 1:, None] == full[b, None, 1:]).all(-1)  # (24, 49)
        assert match.sum(1).eq(1).all() and match.sum(0).le(1).all()
    assert not torch.equal(vit._embed(images)[0][0], kept[0])  # a new draw every call
    assert vit(images).shape == (3, 10)
    assert vit.eval()._embed(images)[0].shape == full.shape  # evaluation sees every patch
    assert vit.flops_per_image(28) < ViT(net()).flops_per_image(28)
    with pytest.raises(ValueError, match=r"net.patch_dropout must be in \[0, 1\).*got 1.0"):
        net(patch_dropout=1.0)


def test_flip_test_time_augmentation_averages_an_image_and_its_mirror():
    torch.manual_seed(0)
    model = tiny(tta_hflip=True).eval()
    images = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        logits = model._eval_logits(images)
        assert torch.allclose(logits, (model(images) + model(images.flip(-1))) / 2, atol=1e-6)
        # an image and its mirror get the same prediction; without the option they do not
        assert torch.allclose(logits, model._eval_logits(images.flip(-1)), atol=1e-6)
        model.tta_hflip = False
        assert not torch.allclose(model._eval_logits(images), model._eval_logits(images.flip(-1)), atol=1e-3)
        model.tta_hflip = True
        out = model.predict_step((images, torch.zeros(4, dtype=torch.long)), 0)
    assert torch.allclose(out["prob"], logits.softmax(-1)) and torch.equal(out["class"], logits.argmax(-1))


def test_explicit_model_arguments_win_over_the_checkpoints_at_test_time(fitted, monkeypatch):
    from tzoo.tasks.cli import explicit_model_args

    config, _, ckpt = fitted
    seen = []
    original = VisionClassifier.test_step
    monkeypatch.setattr(VisionClassifier, "test_step", lambda self, *a: seen.append(self.tta_hflip) or original(self, *a))
    main(["test", "--config", str(config), "--ckpt_path", str(ckpt)])
    main(["test", "--config", str(config), "--ckpt_path", str(ckpt), "--model.init_args.tta_hflip=true"])
    assert seen[0] is False and seen[-1] is True  # the checkpoint says False; the command line, True
    assert explicit_model_args(["--model.init_args.beam_size=8", "--model.dim", "32", "--model.init_args.a.b=1", "--data.x=1"]) == {"beam_size", "dim", "a.b"}


def test_a_checkpoint_with_an_older_tzoos_flat_arguments_loads_through_the_migration(fitted, tmp_path):
    """Before net/optim, VisionClassifier took size, dim, patch_size, lr ... flat: such a checkpoint
    still loads (VisionClassifier.upgrade_hparams) and gives the same model."""
    _, _, ckpt = fitted
    checkpoint = torch.load(ckpt, weights_only=True)
    hp = checkpoint["hyper_parameters"]
    net, optim = hp.pop("net"), hp.pop("optim")
    stack = net.pop("transformer")
    flat = {**hp, **{k: v for k, v in net.items() if k not in ("head_dropout", "local_radius")}, **optim, "size": "tiny"}
    flat.update({k: stack[k] for k in ("dim", "depth", "num_heads", "mlp_ratio", "dropout", "attn_dropout", "drop_path", "layer_scale")})
    checkpoint["hyper_parameters"] = flat
    old = tmp_path / "flat.ckpt"
    torch.save(checkpoint, old)
    assert "dim" in torch.load(old, weights_only=True)["hyper_parameters"]
    module, new = load_module(old, task="vision"), load_module(ckpt, task="vision")
    assert module.hparams["net"] == new.hparams["net"] and module.optim == new.optim
    images = torch.randn(3, 1, 16, 16) if net["image_size"] in (16, [16, 16], (16, 16)) else torch.randn(3, 1, 8, 8)
    assert torch.equal(module(images), new(images)) and module.class_names == new.class_names
    # a hand-written flat dict of the old defaults: DeiT-Ti with dim overridden, the old optimizer defaults
    upgraded = VisionClassifier.upgrade_hparams({"num_classes": 10, "in_channels": 1, "size": "small", "dim": None, "depth": 2, "lr": 2e-3})
    assert upgraded["net"]["transformer"] == {"dim": 384, "depth": 2, "num_heads": 6, "drop_path": 0.1}
    assert upgraded["optim"] == {"weight_decay": 0.05, "betas": (0.9, 0.999), "lr": 2e-3}


def test_prediction_rows_name_the_classes():
    model = tiny(num_classes=3)
    model.class_names = ("cat", "dog", "owl")
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])
    rows = model.prediction_rows([{"class": probs.argmax(-1), "prob": probs}], None)
    assert rows == [{"item": 0, "class": 1, "class_name": "dog", "probability": "0.7000"}, {"item": 1, "class": 0, "class_name": "cat", "probability": "0.5000"}]
    assert model.predict_file == "predictions.csv"
