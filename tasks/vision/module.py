"""LightningModule of the vision task: a ViT classifier trained with cross-entropy.

Logs ``train/loss``, ``train/images_per_s``, ``val/loss``, ``val/acc`` (top-1) and
``val/acc_top5`` (with >= 5 classes), and the same under ``test/``. At the end of each validation
it draws what the model attends to for a few fixed validation images into
``<log dir>/attention/step_<N>.png``. ``tzoo predict`` writes ``predictions.csv`` (file or index,
class, class name, probability) into the log dir.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from tzoo.tasks.base import TaskModule
from tzoo.tasks.config import OptimConfig, from_dict, signature_default
from tzoo.tasks.vision.model import SIZES, ViT, ViTConfig
from tzoo.tasks.vision.tokenizer import grid_size

__all__ = ["VisionClassifier"]

# an older tzoo's flat arguments, by where they live now
_FLAT_TRANSFORMER = ("mlp_ratio", "dropout", "attn_dropout", "drop_path", "layer_scale")
_FLAT_NET = ("num_classes", "image_size", "in_channels", "patch_size", "stride", "pool", "position", "num_registers", "stem", "patch_dropout")
_FLAT_OPTIM = ("lr", "min_lr", "weight_decay", "betas", "warmup_steps")


class VisionClassifier(TaskModule):
    task_name = "vision"
    card_metric = "val/acc"
    throughput_unit = "images"
    strict_links = ("num_classes", "in_channels")  # image_size may differ: positions follow the grid
    predict_file = "predictions.csv"

    def __init__(
        self,
        net: ViTConfig = ViTConfig(),
        optim: OptimConfig = OptimConfig(weight_decay=0.05, betas=(0.9, 0.999)),
        *,
        label_smoothing: float = 0.0,
        attention_images: int = 4,
        tta_hflip: bool = False,
        pretrained: str | None = None,
        compile: bool = False,
    ) -> None:
        """``net``: the model (``ViTConfig``: classes, image size and channels, linked from the data
        by the ``tzoo`` CLI; patches, pooling, positions, 2-D local attention, and the core's
        ``TransformerConfig`` as ``net.transformer``; named sizes: ``vit_tiny()``, ``vit_small()``,
        ``vit_base()``). ``optim``: optimizer and schedule. ``label_smoothing``: of the
        cross-entropy. ``attention_images``: how many validation images the attention figure shows
        (0: none). ``tta_hflip``: validation, test and predict average the logits of each image and
        its mirror image (test-time augmentation; for data whose classes survive a horizontal
        flip). ``pretrained``: a timm ViT state dict file (``tzoo.tasks.vision.timm_vit``) loaded
        when a fit starts afresh (not on resume): positions resized to this model's grid, a head for
        another number of classes left fresh; ``net`` must have the pretrained model's sizes
        (learned positions, class-token pooling; timm's LayerNorm eps is 1e-6). ``compile``:
        ``torch.compile`` the model for training (in place: checkpoints keep the plain keys)."""
        super().__init__(optim=optim, compile=compile)
        net = from_dict(ViTConfig, net, where="net", base=signature_default(type(self), "net"))
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.save_hyperparameters()
        self.model = ViT(net)
        num_classes = self.model.num_classes
        self.label_smoothing, self.attention_images, self.tta_hflip = label_smoothing, attention_images, tta_hflip
        self.pretrained = pretrained
        self.class_names: tuple[str, ...] | None = None
        top5 = num_classes >= 5
        self.val_acc = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc_top5 = MulticlassAccuracy(num_classes, top_k=5, average="micro") if top5 else None
        self.test_acc = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.test_acc_top5 = MulticlassAccuracy(num_classes, top_k=5, average="micro") if top5 else None

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint of an older tzoo took the model's and optimizer's arguments flat
        (``size``, ``dim``, ``patch_size``, ``lr`` ...); they are ``net`` / ``optim`` now."""
        if "net" in hparams or not {"size", "dim", "num_classes", "lr"} & set(hparams):
            return hparams
        flat = dict(hparams)
        sizes = {k: flat.pop(k, None) for k in ("dim", "depth", "num_heads")}
        size = flat.pop("size", "tiny")
        stack = SIZES[size]() if size in SIZES else SIZES["tiny"]()
        transformer = {"dim": stack.dim, "depth": stack.depth, "num_heads": stack.num_heads}
        transformer.update({k: v for k, v in sizes.items() if v is not None})
        transformer["drop_path"] = 0.1  # the old module's default
        transformer.update({k: flat.pop(k) for k in _FLAT_TRANSFORMER if k in flat})
        net = {k: flat.pop(k) for k in _FLAT_NET if k in flat}
        net["transformer"] = transformer
        optim = {"weight_decay": 0.05, "betas": (0.9, 0.999)}  # the old module's defaults
        optim.update({k: flat.pop(k) for k in _FLAT_OPTIM if k in flat})
        return {**flat, "net": net, "optim": optim}

    # --- set-up -------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.pretrained and self.trainer.ckpt_path is None and self.global_step == 0:
            self.load_pretrained(self.pretrained)
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is not None and self.class_names is None and hasattr(data, "classes"):
            self.class_names = tuple(data.classes)

    def load_pretrained(self, path: str) -> None:
        """timm ViT weights from ``path`` into the model (see ``pretrained``)."""
        from tzoo.tasks.vision.timm_vit import load_into, read_timm_state

        notes = load_into(self.model, read_timm_state(path), source=repr(path))
        rank_zero_info(f"loaded pretrained ViT weights from {path}" + (f" ({'; '.join(notes)})" if notes else ""))

    # --- steps --------------------------------------------------------------------------------

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        # target: class indices (B,) or, under MixUp / CutMix, probabilities (B, K)
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, target = batch
        loss = self._loss(self.model(images), target)
        self.log_train_metrics({"train/loss": loss}, prog_bar=("train/loss",))
        return loss

    def throughput_count(self, batch: tuple[Tensor, Tensor]) -> int:
        """Images in a training batch (the step timer's ``train/images_per_s``)."""
        return len(batch[0])

    def count_nodes(self, batch: tuple[Tensor, Tensor]) -> int:
        """Patch nodes (plus class/register nodes) in a training batch, for the run card's nodes/s."""
        tok, size = self.model.tokenizer, tuple(batch[0].shape[-2:])
        h, w = grid_size(size, tok.patch_size, tok.stride)
        return len(batch[0]) * (h * w + self.model.num_prefix)

    def _eval_logits(self, images: Tensor) -> Tensor:
        """Logits at evaluation: the model's, or with ``tta_hflip`` the mean over the image and its mirror."""
        if not self.tta_hflip:
            return self.model(images)
        return self.model(torch.cat([images, images.flip(-1)])).view(2, len(images), -1).mean(dim=0)

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        images, target = batch
        logits = self._eval_logits(images)
        self.log(f"{stage}/loss", self._loss(logits, target), batch_size=len(target), prog_bar=stage == "val", sync_dist=True)
        top1, top5 = (self.val_acc, self.val_acc_top5) if stage == "val" else (self.test_acc, self.test_acc_top5)
        top1(logits, target)
        self.log(f"{stage}/acc", top1, prog_bar=stage == "val")
        if top5 is not None:
            top5(logits, target)
            self.log(f"{stage}/acc_top5", top5)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """{"class": (B,) predicted class indices, "prob": (B, K) class probabilities}."""
        probs = self._eval_logits(batch[0]).softmax(dim=-1)
        return {"class": probs.argmax(dim=-1), "prob": probs}

    def prediction_rows(self, predictions: list[dict[str, Tensor]], data: Any) -> list[dict[str, Any]]:
        """One row per image: the file (or its index), the class, its name, its probability."""
        classes = torch.cat([p["class"] for p in predictions]).tolist()
        probs = torch.cat([p["prob"] for p in predictions])
        items = list(getattr(data, "predict_files", None) or range(len(classes)))
        names = self.class_names
        return [
            {"item": item, "class": cls, "class_name": names[cls] if names else "", "probability": f"{row[cls].item():.4f}"}
            for item, cls, row in zip(items, classes, probs)
        ]

    # --- pictures -----------------------------------------------------------------------------

    def on_validation_epoch_end(self) -> None:
        trainer = self.trainer
        if self.attention_images <= 0 or trainer.sanity_checking:
            return
        folder = self.output_dir()
        if folder is None:
            return
        data = getattr(trainer, "datamodule", None)
        if data is None or not hasattr(data, "example_images"):
            return
        from tzoo.tasks.vision.attention_maps import attention_figure

        images, labels = data.example_images(self.attention_images)
        path = folder / "attention" / f"step_{self.global_step:06d}.png"
        attention_figure(self.model, images.to(self.device), path, mean=data.mean, std=data.std, labels=labels, class_names=self.class_names)

    # --- checkpoints --------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.class_names is not None:
            checkpoint["class_names"] = list(self.class_names)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        # checked here, before Lightning loads the weights: otherwise a mismatch is a shape error
        # deep inside load_state_dict
        hparams = type(self).upgrade_hparams(dict(checkpoint.get("hyper_parameters", {})))
        trained = (hparams.get("net") or {}).get("num_classes")
        if trained is not None and trained != self.model.num_classes:
            raise ValueError(
                f"the checkpoint was trained for num_classes={trained}, but this model (built for the data) has "
                f"num_classes={self.model.num_classes}: use data with {trained} classes, or train a new model for this data"
            )
        if "class_names" in checkpoint:
            self.class_names = tuple(checkpoint["class_names"])
