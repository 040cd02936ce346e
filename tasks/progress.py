"""The progress bar ``tzoo`` adds by default: Lightning's rich bar, counting steps for a run that is
limited by ``max_steps``.

Lightning's bar counts epochs; a run given ``--trainer.max_steps`` only has ``max_epochs=-1`` and
shows ``Epoch 3/-2``. This bar shows ``Step 120/500 · epoch 3 · 2:31 left`` instead, the time left
estimated from this run's own steps (not from its start-up or a resumed run's earlier steps).
"""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichProgressBar

__all__ = ["StepProgressBar", "format_seconds"]


def format_seconds(seconds: float) -> str:
    """``2:31``, ``1:02:05``: the time columns' style."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class StepProgressBar(RichProgressBar):
    """A :class:`RichProgressBar` whose training description counts optimizer steps of ``max_steps``
    (with the epoch and the estimated time left) when the run is limited by steps."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start: tuple[float, int] | None = None  # (time, global_step) of this fit's first step

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._start = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        if self._start is None:  # after set-up, compilation warm-up aside, and after a resume's restore
            self._start = (time.perf_counter(), trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.progress is not None and self.train_progress_bar_id is not None and self._step_limited():
            description = self._get_train_description(trainer.current_epoch)
            if self.theme.description:
                description = f"[{self.theme.description}]{description}"
            self.progress.update(self.train_progress_bar_id, description=description)
            self.refresh()

    def _step_limited(self) -> bool:
        return self.trainer.max_steps is not None and self.trainer.max_steps > 0

    def _get_train_description(self, current_epoch: int) -> str:
        if not self._step_limited():
            return super()._get_train_description(current_epoch)
        return self.step_description(current_epoch)

    def step_description(self, current_epoch: int) -> str:
        """``Step 120/500 · epoch 3 · 2:31 left`` (the time once a step of this run has been timed)."""
        trainer = self.trainer
        step, max_steps = trainer.global_step, trainer.max_steps
        text = f"Step {step}/{max_steps} · epoch {current_epoch}"
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            text += f"/{trainer.max_epochs - 1}"
        if self._start is not None and step > self._start[1]:
            started, first = self._start
            per_step = (time.perf_counter() - started) / (step - first)
            text += f" · {format_seconds(per_step * max(0, max_steps - step))} left"
        return text
