"""Random sets of distinct numbers and their sorted order, generated on the fly.

A batch is ``(numbers, sorted)``, both (B, N) long tensors of values in ``[0, num_values)``:
``numbers`` in random order, ``sorted`` the same numbers in increasing order. Training draws fresh
sets every step; validation is a fixed set drawn from its own seed.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

__all__ = ["SortData", "random_sets"]


def random_sets(count: int, set_size: int, num_values: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``count`` sets of ``set_size`` distinct numbers below ``num_values`` -> (numbers, sorted), (count, N) each."""
    numbers = torch.rand(count, num_values, generator=generator).argsort(dim=1)[:, :set_size]  # (count, N), random order
    return numbers, numbers.sort(dim=1).values


class _FreshSets(IterableDataset):
    """``batches`` batches of new random sets per epoch (the generator carries on between epochs)."""

    def __init__(self, batches: int, batch_size: int, set_size: int, num_values: int, seed: int) -> None:
        super().__init__()
        self.batches, self.batch_size, self.set_size, self.num_values = batches, batch_size, set_size, num_values
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for _ in range(self.batches):
            yield random_sets(self.batch_size, self.set_size, self.num_values, self.generator)

    def __len__(self) -> int:
        return self.batches


class SortData(pl.LightningDataModule):
    """Sets of ``set_size`` distinct numbers from ``[0, num_values)``; links ``num_values`` into the model."""

    model_links = ("num_values",)

    def __init__(
        self,
        *,
        num_values: int = 32,
        set_size: int = 8,
        batch_size: int = 128,
        train_batches: int = 200,
        val_size: int = 1024,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_values < 2:
            raise ValueError(f"num_values must be >= 2 (numbers are drawn from [0, num_values)), got {num_values}")
        if not 1 <= set_size <= num_values:
            raise ValueError(
                f"set_size={set_size} must be between 1 and num_values={num_values} (a set holds distinct numbers)"
            )
        for name, value in (("batch_size", batch_size), ("train_batches", train_batches), ("val_size", val_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.num_values, self.set_size, self.batch_size = num_values, set_size, batch_size
        self.train_batches, self.val_size, self.seed = train_batches, val_size, seed

    def train_dataloader(self) -> DataLoader:
        sets = _FreshSets(self.train_batches, self.batch_size, self.set_size, self.num_values, self.seed)
        return DataLoader(sets, batch_size=None)  # the dataset yields whole batches

    def val_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed + 1_000_003)  # apart from the training stream
        numbers, ordered = random_sets(self.val_size, self.set_size, self.num_values, generator)
        return DataLoader(TensorDataset(numbers, ordered), batch_size=max(self.batch_size, 256))

    test_dataloader = val_dataloader
