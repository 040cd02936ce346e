"""The tzoo side of the sort task: random sets as data, the ``TaskModule`` (loss and metrics), and
``TASK``, the object the ``tzoo.tasks`` entry point names.

A batch is ``(numbers, sorted)``, both (B, N) long tensors of values in ``[0, num_values)``:
``numbers`` in random order, ``sorted`` the same numbers in increasing order. Training draws fresh
sets every step; validation is a fixed set drawn from its own seed. Logs ``train/loss``,
``val/loss``, ``val/token_acc`` and ``val/seq_acc`` (greedy decoding: per position, whole sequence).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from tzoo.tasks.base import TaskModule
from tzoo.tasks.config import OptimConfig, from_dict, signature_default
from tzoo.tasks.registry import Task
from tzoo_sort.model import SetSorter, SortConfig

__all__ = ["TASK", "SortData", "SortModule", "random_sets"]


def random_sets(count: int, set_size: int, num_values: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``count`` sets of ``set_size`` distinct numbers below ``num_values`` -> (numbers, sorted), (count, N) each."""
    numbers = torch.rand(count, num_values, generator=generator).argsort(dim=1)[:, :set_size]  # (count, N), random order
    return numbers, numbers.sort(dim=1).values


class _FreshSets(IterableDataset):
    """``batches`` batches of new random sets per epoch (the generator carries on between epochs)."""

    def __init__(self, data: SortData) -> None:
        self.data, self.generator = data, torch.Generator().manual_seed(data.seed)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        d = self.data
        return (random_sets(d.batch_size, d.set_size, d.num_values, self.generator) for _ in range(d.train_batches))

    def __len__(self) -> int:
        return self.data.train_batches


class SortData(pl.LightningDataModule):
    """Sets of ``set_size`` distinct numbers from ``[0, num_values)``; links ``num_values`` into the model."""

    model_links = ("num_values",)  # the tzoo CLI sets the model's net.num_values from this

    def __init__(
        self, *, num_values: int = 32, set_size: int = 8, batch_size: int = 128, train_batches: int = 200, val_size: int = 1024, seed: int = 0
    ) -> None:
        super().__init__()
        if num_values < 2:
            raise ValueError(f"num_values must be >= 2 (numbers are drawn from [0, num_values)), got {num_values}")
        if not 1 <= set_size <= num_values:
            raise ValueError(f"set_size={set_size} must be between 1 and num_values={num_values} (a set holds distinct numbers)")
        for name, value in (("batch_size", batch_size), ("train_batches", train_batches), ("val_size", val_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.num_values, self.set_size, self.batch_size = num_values, set_size, batch_size
        self.train_batches, self.val_size, self.seed = train_batches, val_size, seed

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_FreshSets(self), batch_size=None)  # the dataset yields whole batches

    def val_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed + 1_000_003)  # apart from the training stream
        sets = TensorDataset(*random_sets(self.val_size, self.set_size, self.num_values, generator))
        return DataLoader(sets, batch_size=max(self.batch_size, 256))

    test_dataloader = val_dataloader


class SortModule(TaskModule):
    """TaskModule gives the optimizer and schedule, the checkpoint stamp, the check that a checkpoint's
    ``num_values`` is the data's, and ``compile``; a task adds its loss and metrics."""

    task_name = "sort"
    card_metric = "val/seq_acc"  # the run card's result

    def __init__(
        self,
        net: SortConfig = SortConfig(),
        optim: OptimConfig = OptimConfig(lr=3e-3, weight_decay=0.0, warmup_steps=50),
        *,
        compile: bool = False,
    ) -> None:
        super().__init__(optim=optim, compile=compile)
        net = from_dict(SortConfig, net, where="net", base=signature_default(type(self), "net"))
        self.save_hyperparameters()
        self.model = SetSorter(net)
        self._val: list[Tensor] = []

    def _loss(self, numbers: Tensor, ordered: Tensor) -> Tensor:
        return F.cross_entropy(self.model(numbers, ordered).flatten(0, 1), ordered.flatten())  # logits (B * N, V)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(*batch)
        self.log_train_metrics({"train/loss": loss}, prog_bar=("train/loss",))
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        numbers, ordered = batch
        right = self.model.sort(numbers) == ordered  # (B, N)
        # per batch, summed over its sets: loss, right tokens (per set), right sequences, sets
        sums = [self._loss(numbers, ordered) * len(numbers), right.float().mean(1).sum(), right.all(1).float().sum()]
        self._val.append(torch.stack([*sums, torch.tensor(float(len(numbers)), device=numbers.device)]))

    def on_validation_epoch_end(self) -> None:
        if self._val:
            loss, tokens, sequences, count = torch.stack(self._val).sum(0)
            self._val.clear()
            self.log("val/loss", loss / count, sync_dist=True)
            self.log("val/token_acc", tokens / count, sync_dist=True)
            self.log("val/seq_acc", sequences / count, prog_bar=True, sync_dist=True)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.model.sort(batch[0] if isinstance(batch, (tuple, list)) else batch)

    def count_nodes(self, batch: tuple[Tensor, Tensor]) -> int:
        """Set nodes into the encoder plus output nodes into the decoder (the run card's nodes/s)."""
        return batch[0].numel() + batch[1].numel()


# the default config ships inside the package, so `tzoo fit --task sort` works from a wheel
TASK = Task(
    name="sort",
    module=SortModule,
    datamodule=SortData,
    config=Path(__file__).with_name("sort.yaml"),
    description="sort a set of numbers: one node per number, no positions; encoder + decoder",
)
