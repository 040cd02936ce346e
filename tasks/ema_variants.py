"""More weight averages from one run: EMA decays compared on the same training trajectory.

A run's test error moves with its seed by more than a change of the EMA's decay would move it, so
two runs with two decays cannot tell the decays apart. ``EMAVariants(decays=[0.9995])`` keeps, for
each decay, an exponential moving average of the model's floating-point state (parameters and
buffers, as Lightning's ``EMAWeightAveraging`` with ``use_buffers=True``), updated after every
optimizer step the way Lightning's is: the first update copies the weights, then
``avg = decay * avg + (1 - decay) * w``. Like Lightning's, there is no bias correction: after T
steps the first step's weights (all but the initialisation) still hold ``decay ** (T - 1)`` of the
average (0.2% at 0.999 and 6,000 steps, 4.6% at 0.9995, 29% at 0.9998), so a decay whose horizon
``1 / (1 - decay)`` is not well inside the run measures that too. When fit ends it writes each average as a checkpoint
beside the run's ``last.ckpt``: the same file with its ``state_dict`` replaced, named
``ema-<decay>.ckpt`` (without any averaging state: ``_for_evaluation``), so every tool that reads a tzoo checkpoint reads it (``tzoo test --ckpt_path``,
``tzoo.tasks.loading.load_module``, ``benchmarks/speech.py --checkpoint``). The averages are part of
the callback's state in every checkpoint, so a resumed run goes on with them.

    tzoo fit --config configs/speech/espeak.yaml \\
        '--trainer.callbacks+={"class_path": "tzoo.tasks.ema_variants.EMAVariants", "init_args": {"decays": [0.9995]}}'

It only measures: validation, ``last.ckpt`` and the tests use the run's own weights (or the
config's ``EMAWeightAveraging``), never these. The other end of the scale, no average at all:
``write_current(last)`` writes the weights the optimizer holds, which Lightning's
``EMAWeightAveraging`` keeps in ``last.ckpt`` as ``current_model_state``, as ``current.ckpt``
(``benchmarks/speech.py --checkpoint current.ckpt`` does it when the file is missing).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn

from tzoo.tasks.reliability import atomic_torch_save, read_checkpoint

__all__ = ["EMAVariants", "variant_path", "write_current"]


def _check_decays(decays: Any) -> list[float]:
    if isinstance(decays, (int, float)) or not decays:
        raise ValueError(f"EMAVariants: decays must be a non-empty list of numbers in (0, 1), e.g. [0.9995]; got {decays!r}")
    out = []
    for decay in decays:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not math.isfinite(decay) or not 0 < decay < 1:
            raise ValueError(f"EMAVariants: every decay must be a number in (0, 1) (e.g. 0.999, 0.9995); got {decay!r} in {list(decays)!r}")
        out.append(float(decay))
    if len(set(out)) != len(out):
        raise ValueError(f"EMAVariants: decays must differ (each names its checkpoint file); got {list(decays)!r}")
    return out


def variant_path(last: str | Path, decay: float) -> Path:
    """Where the average with ``decay`` is written: ``ema-<decay>.ckpt`` beside ``last``."""
    return Path(last).with_name(f"ema-{decay:g}.ckpt")


def _for_evaluation(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """``checkpoint`` as a file to evaluate, not to resume: without the averaging machinery
    (Lightning's ``current_model_state``, ``averaging_state`` and its callback's state; every decay's
    average of this callback). The caller puts the weights to evaluate in its ``state_dict``."""
    kept = {k: v for k, v in checkpoint.items() if k not in ("current_model_state", "averaging_state")}
    kept["callbacks"] = {k: v for k, v in checkpoint.get("callbacks", {}).items()
                         if "EMAVariants" not in k and "WeightAveraging" not in k}
    return kept


def write_current(last: str | Path) -> Path:
    """``current.ckpt`` beside ``last``: the checkpoint with its ``state_dict`` (the average, when the
    run used ``EMAWeightAveraging``) replaced by the optimizer's own weights, ``current_model_state``.
    A file to evaluate, not to resume. ValueError when ``last`` holds no such weights (a run without
    ``EMAWeightAveraging``: its ``state_dict`` is already them)."""
    checkpoint = read_checkpoint(last)
    current = checkpoint.get("current_model_state")
    if current is None:
        raise ValueError(f"{str(last)!r} holds no 'current_model_state' (written by a run without EMAWeightAveraging, "
                         "whose state_dict is already the optimizer's weights): evaluate it as it is")
    out = Path(last).with_name("current.ckpt")
    atomic_torch_save({**_for_evaluation(checkpoint), "state_dict": current}, out)
    return out


class EMAVariants(pl.Callback):
    """Exponential moving averages of the weights with each of ``decays``, written at the end of
    fit as ``ema-<decay>.ckpt`` beside ``last.ckpt`` (module docstring)."""

    def __init__(self, decays: list[float]) -> None:
        self.decays = _check_decays(decays)
        self.averages: dict[float, dict[str, torch.Tensor]] = {}
        self._updated_at = 0  # the optimizer step of the last update

    @property
    def state_key(self) -> str:
        return self._generate_state_key(decays=self.decays)

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step <= self._updated_at:  # no optimizer step in this batch (gradient accumulation)
            return
        self._updated_at = trainer.global_step
        state = {k: v.detach() for k, v in pl_module.state_dict().items() if v.is_floating_point()}
        if not self.averages:
            self.averages = {d: {k: v.clone() for k, v in state.items()} for d in self.decays}
            return
        current = list(state.values())
        for decay, average in self.averages.items():  # torch's EMA update (a foreach lerp), as Lightning's
            get_ema_multi_avg_fn(decay)([average[k] for k in state], current, None)

    def state_dict(self) -> dict[str, Any]:
        return {"updated_at": self._updated_at, "averages": {repr(d): a for d, a in self.averages.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._updated_at = int(state_dict["updated_at"])
        self.averages = {float(d): a for d, a in state_dict["averages"].items()}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        last = getattr(trainer.checkpoint_callback, "last_model_path", "") or ""
        if not trainer.is_global_zero or not self.averages or not Path(last).is_file():
            return  # no step taken, or no last.ckpt to take the rest of the file from
        checkpoint = read_checkpoint(last)
        base = _for_evaluation(checkpoint)  # every file shares all but its weights
        for decay, average in self.averages.items():
            state = dict(checkpoint["state_dict"])
            missing = set(average) - set(state)
            if missing:
                raise RuntimeError(f"EMAVariants: {last} lacks entries the averages hold: {sorted(missing)[:5]}")
            state.update({k: v.to(state[k].dtype) for k, v in average.items()})
            atomic_torch_save({**base, "state_dict": state}, variant_path(last, decay))
