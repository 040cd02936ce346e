"""SortModule: the Lightning side of the sort task (loss, exact-sequence accuracy, run-card hooks).

Logs ``train/loss``, ``val/loss``, ``val/token_acc`` (greedy decoding, per output position) and
``val/seq_acc`` (greedy decoding, the whole sorted sequence right).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tzoo.tasks.base import TaskModule
from tzoo_sort.model import SetSorter

__all__ = ["SortModule"]


class SortModule(TaskModule):
    task_name = "sort"
    card_metric = "val/seq_acc"

    def __init__(
        self,
        num_values: int | None = None,
        *,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        lr: float = 3e-3,
        min_lr: float | None = None,
        weight_decay: float = 0.0,
        warmup_steps: int = 50,
    ) -> None:
        """``num_values`` is linked from the data by the ``tzoo`` CLI; pass it when building by hand."""
        super().__init__(lr=lr, min_lr=min_lr, weight_decay=weight_decay, warmup_steps=warmup_steps)
        if num_values is None:
            raise ValueError("num_values is not set: the tzoo CLI links it from the data; pass num_values=<SortData.num_values>")
        self.save_hyperparameters()
        self.model = SetSorter(num_values, dim=dim, depth=depth, num_heads=num_heads)
        self._val: list[Tensor] = []

    def forward(self, numbers: Tensor) -> Tensor:
        return self.model.sort(numbers)

    def _loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        numbers, ordered = batch  # (B, N) each
        logits = self.model(numbers, ordered)  # (B, N, V)
        return F.cross_entropy(logits.flatten(0, 1), ordered.flatten())

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log_train_metrics({"train/loss": loss}, prog_bar=("train/loss",))
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        numbers, ordered = batch
        predicted = self.model.sort(numbers)
        right = predicted == ordered  # (B, N)
        # per batch: loss * B, right tokens, right sequences, sets
        self._val.append(torch.stack([self._loss(batch) * len(numbers), right.float().mean(1).sum(), right.all(1).float().sum(),
                                      torch.tensor(float(len(numbers)), device=numbers.device)]))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        loss, tokens, sequences, count = torch.stack(self._val).sum(0)
        self._val.clear()
        self.log("val/loss", loss / count, sync_dist=True)
        self.log("val/token_acc", tokens / count, sync_dist=True)
        self.log("val/seq_acc", sequences / count, prog_bar=True, sync_dist=True)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        numbers = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.model.sort(numbers)

    def count_nodes(self, batch: tuple[Tensor, Tensor]) -> int:
        """Set nodes into the encoder plus output nodes into the decoder."""
        return batch[0].numel() + batch[1].numel()
