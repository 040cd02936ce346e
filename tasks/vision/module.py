"""LightningModule of the vision task: a ViT classifier trained with cross-entropy.

Logs ``train/loss``, ``val/loss``, ``val/acc`` (top-1) and ``val/acc_top5`` (with >= 5 classes),
and the same under ``test/``. At the end of each validation it draws what the model attends to
for a few fixed validation images into ``<log dir>/attention/step_<N>.png``. ``tzoo predict``
writes ``predictions.csv`` (file or index, class, class name, probability) into the log dir.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from tzoo.tasks.base import TaskModule
from tzoo.tasks.vision.model import SIZES, ViT
from tzoo.tasks.vision.tokenizer import grid_size

__all__ = ["PredictionWriter", "VisionClassifier"]


class VisionClassifier(TaskModule):
    task_name = "vision"
    card_metric = "val/acc"

    def __init__(
        self,
        num_classes: int | None = None,
        image_size: int | tuple[int, int] | None = None,
        in_channels: int | None = None,
        *,
        size: Literal["tiny", "small", "base"] = "tiny",
        dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        patch_size: int | tuple[int, int] = 4,
        stride: int | tuple[int, int] | None = None,
        pool: Literal["cls", "mean"] = "cls",
        position: Literal["sincos", "learned"] = "sincos",
        num_registers: int = 0,
        stem: Literal["patch", "conv"] = "patch",
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path: float = 0.1,
        layer_scale: float | None = None,
        patch_dropout: float = 0.0,
        label_smoothing: float = 0.0,
        lr: float = 1e-3,
        min_lr: float | None = None,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 100,
        attention_images: int = 4,
        tta_hflip: bool = False,
        compile: bool = False,
    ) -> None:
        """``num_classes``, ``image_size`` and ``in_channels`` are linked from the data by the tzoo
        CLI; pass them when building by hand. ``size`` names a ViT size (tiny, small, base);
        ``dim`` / ``depth`` / ``num_heads`` override its values. ``attention_images``: how many
        validation images the attention figure shows (0: none). ``stem="conv"``: a convolutional
        stem instead of the patch projection (see ``tzoo.tasks.vision.tokenizer``). ``patch_dropout``:
        the share of patch nodes each training image drops (see ``ViT``). ``tta_hflip``: validation,
        test and predict average the logits of each image and its mirror image (test-time
        augmentation; for data whose classes survive a horizontal flip). ``compile``:
        ``torch.compile`` the model for training (in place: checkpoints keep the plain keys)."""
        super().__init__(lr=lr, min_lr=min_lr, weight_decay=weight_decay, betas=betas, warmup_steps=warmup_steps, compile=compile)
        if num_classes is None or in_channels is None:
            raise ValueError(
                "num_classes and in_channels are not set: the tzoo CLI links them from the data; when building "
                "VisionClassifier yourself pass num_classes=, in_channels= (and image_size=) of the dataset"
            )
        if size not in SIZES:
            raise ValueError(f"size={size!r} is not one of {tuple(SIZES)}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.save_hyperparameters()
        overrides = {k: v for k, v in dict(dim=dim, depth=depth, num_heads=num_heads).items() if v is not None}
        self.model: ViT = SIZES[size](
            num_classes,
            image_size=image_size,
            in_channels=in_channels,
            patch_size=patch_size,
            stride=stride,
            mlp_ratio=mlp_ratio,
            pool=pool,
            position=position,
            num_registers=num_registers,
            stem=stem,
            dropout=dropout,
            attn_dropout=attn_dropout,
            drop_path=drop_path,
            layer_scale=layer_scale,
            patch_dropout=patch_dropout,
            **overrides,
        )
        self.num_classes, self.in_channels, self.label_smoothing = num_classes, in_channels, label_smoothing
        self.attention_images, self.tta_hflip = attention_images, tta_hflip
        self.class_names: tuple[str, ...] | None = None
        top5 = num_classes >= 5
        self.val_acc = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc_top5 = MulticlassAccuracy(num_classes, top_k=5, average="micro") if top5 else None
        self.test_acc = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.test_acc_top5 = MulticlassAccuracy(num_classes, top_k=5, average="micro") if top5 else None
        self._step_start: float | None = None

    # --- set-up -------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        super().setup(stage)
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is None:
            return
        for name in ("num_classes", "in_channels"):
            if hasattr(data, name) and getattr(data, name) != getattr(self, name):
                raise ValueError(
                    f"the model has {name}={getattr(self, name)} but the data ({getattr(data, 'dataset', type(data).__name__)}) "
                    f"has {name}={getattr(data, name)}: use a checkpoint trained on this data, or data with "
                    f"{getattr(self, name)} {'classes' if name == 'num_classes' else 'channels'}"
                )
        if self.class_names is None and hasattr(data, "classes"):
            self.class_names = tuple(data.classes)

    # --- steps --------------------------------------------------------------------------------

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        # target: class indices (B,) or, under MixUp / CutMix, probabilities (B, K)
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_start = time.perf_counter()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, target = batch
        loss = self._loss(self.model(images), target)
        self.log_train_metrics({"train/loss": loss}, prog_bar=("train/loss",))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._step_start is not None:
            self.log_train_metrics({"train/images_per_s": len(batch[0]) / (time.perf_counter() - self._step_start)})

    def count_nodes(self, batch: tuple[Tensor, Tensor]) -> int:
        """Patch nodes (plus class/register nodes) in a training batch, for the run card's nodes/s."""
        tok, size = self.model.tokenizer, tuple(batch[0].shape[-2:])
        h, w = grid_size(size, tok.patch_size, tok.stride)
        self._card_image = (size, h * w + self.model.num_prefix)  # (H, W), nodes per image
        return len(batch[0]) * self._card_image[1]

    def flops_per_node(self) -> float | None:
        """Training FLOPs per node at the image size last counted (run card MFU)."""
        image = getattr(self, "_card_image", None)
        return None if image is None else self.model.flops_per_image(image[0]) / image[1]

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

    def configure_callbacks(self) -> list[pl.Callback]:
        return [PredictionWriter()]

    # --- pictures -----------------------------------------------------------------------------

    def on_validation_epoch_end(self) -> None:
        trainer = self.trainer
        if self.attention_images <= 0 or trainer.sanity_checking:
            return
        folder = self.run_dir()  # on every rank: log_dir is a collective under DDP
        if folder is None or not trainer.is_global_zero:
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
        stamp = checkpoint.get("tzoo", {})
        if stamp.get("task", self.task_name) != self.task_name:
            raise ValueError(
                f"this checkpoint was written by the {stamp.get('task')!r} task ({stamp.get('class_path')}), "
                f"not by the vision classifier ('vision')"
            )
        # checked here, before Lightning loads the weights: otherwise a mismatch is a shape error
        # deep inside load_state_dict
        trained = checkpoint.get("hyper_parameters", {}).get("num_classes")
        if trained is not None and trained != self.num_classes:
            raise ValueError(
                f"the checkpoint was trained for num_classes={trained}, but this model (built for the data) has "
                f"num_classes={self.num_classes}: use data with {trained} classes, or train a new model for this data"
            )
        if "class_names" in checkpoint:
            self.class_names = tuple(checkpoint["class_names"])


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` (item, class, class name, probability) into the log directory."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        if not trainer.is_global_zero or not predictions:
            return
        outputs = predictions[0] if isinstance(predictions[0], list) else predictions  # one dataloader or several
        classes = torch.cat([p["class"] for p in outputs]).tolist()
        probs = torch.cat([p["prob"] for p in outputs])
        data = getattr(trainer, "datamodule", None)
        files = list(getattr(data, "predict_files", None) or range(len(classes)))
        names = getattr(pl_module, "class_names", None)
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "predictions.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["item", "class", "class_name", "probability"])
            for item, cls, row in zip(files, classes, probs):
                writer.writerow([item, cls, names[cls] if names else "", f"{row[cls].item():.4f}"])
        print(f"wrote {len(classes)} predictions to {path}")
