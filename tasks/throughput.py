"""``train/<throughput_unit>_per_s``: how much a training step got through per second, logged on the
steps the loggers write.

A callback rather than the module's own ``on_train_batch_end``: Lightning calls every callback's
``on_train_batch_end`` (checkpoint callbacks last) before the module's, so the value is in place when
a ``ModelCheckpoint`` saves there, and ``runs.PendingRows`` stores it with the step's other rows."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

__all__ = ["StepThroughput"]


class StepThroughput(Callback):
    """The module's ``throughput_count(batch)`` (in its ``throughput_unit``; None: not logged) over
    the seconds from ``on_train_batch_start`` to ``on_train_batch_end``."""

    def __init__(self) -> None:
        self._start: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        unit = pl_module.throughput_unit  # a TaskModule's (its configure_callbacks adds this callback)
        if self._start is None or unit is None:
            return
        count = pl_module.throughput_count(batch)
        if count is not None:
            pl_module.log_train_metrics({f"train/{unit}_per_s": float(count) / (time.perf_counter() - self._start)})
