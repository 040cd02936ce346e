"""What keeps a long run safe: checkpoints that load without running code and are written
atomically, training that stops (or skips the batch) on a non-finite loss, and the RNG state that
makes a resumed run continue exactly where the interrupted one was.

The ``tzoo`` CLI adds all of them to every run (``add_reliability_defaults``) unless the config
chose its own:

- ``SafeCheckpointIO``: writes each checkpoint to a temporary file beside it, ``fsync``s and
  renames it into place (a kill during a save leaves the previous ``last.ckpt`` intact, and the
  next save removes the killed save's temporary file), and
  reads checkpoints with ``torch.load(weights_only=True)``: a file that would need code executed
  to load is refused; a truncated or corrupt one is an error naming the file.
- ``NonFiniteLossGuard``: a NaN/Inf training loss stops the run with an error naming the step
  (``action="stop"``, the default) or skips that optimizer step (``action="skip"``).
- ``RNGStateCallback``: stores the torch / numpy / Python RNG states in the checkpoint and
  restores them on resume, so dropout, drop-path and augmentations continue their streams.
- gradient clipping by norm at 1.0 (``trainer.gradient_clip_val``) unless the config sets it
  (``0`` turns it off).
"""

from __future__ import annotations

import os
import pickle
import random
import warnings
import zipfile
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins import CheckpointIO, TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from tzoo.tasks.files import atomic_write

__all__ = [
    "DEFAULT_GRADIENT_CLIP",
    "NonFiniteLossGuard",
    "RNGStateCallback",
    "SafeCheckpointIO",
    "add_reliability_defaults",
    "atomic_torch_save",
    "read_checkpoint",
]

DEFAULT_GRADIENT_CLIP = 1.0


# --- checkpoints --------------------------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike[str], *, map_location: Any = "cpu", weights_only: bool = True, mmap: bool = False) -> Any:
    """``torch.load`` that never runs code from the file (``weights_only=True``) and turns its
    failures into errors naming the file: ``FileNotFoundError`` for a missing file, ``ValueError``
    for a file that needs code to load (a planted or foreign pickle) or is truncated / corrupt.
    ``mmap=True`` maps the tensors instead of reading them (cheap for looking at hyperparameters
    and shapes; a file in the old, non-zip format is read whole)."""
    path = Path(path)
    if not path.is_file():
        kind = "a folder (a sharded checkpoint? load it with the strategy that wrote it)" if path.is_dir() else "missing"
        raise FileNotFoundError(f"checkpoint {str(path)!r} is {kind}")
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as exc:  # noqa: BLE001 - every way a file can fail to unpickle
        # the weights-only unpickler names the class or function a file would need to run code for
        blocked = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line or "global" in line.split(" ")[:3]]
        if isinstance(exc, pickle.UnpicklingError) and blocked:
            raise ValueError(
                f"refused to load checkpoint {str(path)!r}: it holds objects that only code execution could "
                f"rebuild ({blocked[0]}). tzoo checkpoints hold only tensors and plain Python values, so this "
                f"file was not written by tzoo or was tampered with; if you trust it, load it yourself with "
                f"torch.load(..., weights_only=False)"
            ) from None
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines if line.startswith("Unsupported")), lines[0] if lines else "")
        raise ValueError(
            f"checkpoint {str(path)!r} ({path.stat().st_size} bytes) is truncated or corrupt and cannot be read "
            f"({type(exc).__name__}: {detail[:200]}); delete it and resume from an earlier checkpoint"
        ) from None


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file in the same folder, flushed to disk, then renamed over
    ``path`` (``tasks.files.atomic_write``): readers, and a resume after a crash, see the old file
    or the new one, never half of one. What a kill mid-save leaves behind is a temporary file,
    removed by the next save into the same folder."""
    with atomic_write(path, "wb", fsync=True) as f:
        torch.save(obj, f)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with atomic local writes and code-free reads (see the module
    docstring). Remote paths (``s3://`` ...) go through Lightning's own writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        location = map_location if map_location is not None else (lambda storage, loc: storage)
        # None means "not chosen": tzoo chooses safe; an explicit False (trusted file) is honoured
        return read_checkpoint(path, map_location=location, weights_only=weights_only is not False)


# --- numerical faults ---------------------------------------------------------------------------


class NonFiniteLossGuard(Callback):
    """Checks every training loss before backward.

    ``action="stop"``: a NaN/Inf loss raises ``FloatingPointError`` naming the step, epoch and
    batch; nothing is trained on it and no checkpoint is written after it (``last.ckpt`` stays
    the last good one). ``action="skip"``: that optimizer step is skipped (its gradients are
    dropped, so neither the weights nor the optimizer's moments move); more than ``max_skips``
    skips in a row stop the run. Under data parallelism all ranks decide together (one
    all-reduce of a flag per step), so they stay in step.
    """

    def __init__(self, action: Literal["stop", "skip"] = "stop", *, max_skips: int = 10) -> None:
        if action not in ("stop", "skip"):
            raise ValueError(f"action={action!r} is not one of ('stop', 'skip')")
        if max_skips < 1:
            raise ValueError(f"max_skips must be >= 1, got {max_skips}")
        self.action, self.max_skips = action, max_skips
        self.skipped = 0  # skipped steps in this run
        self._in_a_row = 0
        self._bad: float | None = None  # the bad loss of the step being accumulated, if any

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        finite = bool(torch.isfinite(loss.detach()).all())
        if trainer.world_size > 1:
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        value = loss.detach().float().cpu()
        value = float(value) if value.numel() == 1 else float("nan")
        where = (
            f"step {trainer.global_step} (epoch {trainer.current_epoch}, "
            f"batch {trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1})"
        )
        if self.action == "stop":
            raise FloatingPointError(
                f"the training loss is {value} at {where}: stopped instead of training on it. Lower the learning "
                f"rate, check the data, or skip such batches with NonFiniteLossGuard(action='skip')"
            )
        self._bad = value
        self._where = where

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if self._bad is None:
            self._in_a_row = 0
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None  # an optimizer step leaves parameters without gradients alone
        self.skipped += 1
        self._in_a_row += 1
        warnings.warn(f"skipped the optimizer step at {self._where}: the training loss is {self._bad}", stacklevel=2)
        self._bad = None
        if self._in_a_row > self.max_skips:
            raise FloatingPointError(
                f"{self._in_a_row} optimizer steps in a row had a non-finite loss (the last at {self._where}): "
                f"stopped; more than max_skips={self.max_skips}"
            )


# --- RNG state ----------------------------------------------------------------------------------


class RNGStateCallback(Callback):
    """Saves the torch (CPU and CUDA), numpy and Python RNG states in each checkpoint and restores
    them when training resumes from it. Values are plain tensors, lists and ints, so the checkpoint
    stays loadable with ``weights_only=True``. Under data parallelism rank 0's states are saved and
    every rank gets them back (seed_everything gives every rank the same seed anyway)."""

    def __init__(self) -> None:
        self._restored: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._apply(state_dict)
        self._restored = state_dict

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Resuming from an end-of-epoch checkpoint, Lightning makes the train iterator once when
        # it sets up the data (drawing from the RNGs: a loader's worker seed, a shuffle's seed,
        # the first batch's augmentations) and then again for the next epoch; the uninterrupted
        # run made only the second. Restoring again here puts the streams where that run had them.
        if self._restored is not None:
            self._apply(self._restored)
            self._restored = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._restored = None  # resumed mid-epoch: the restored state is in use already

    def _apply(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        cuda = state_dict.get("cuda") or []
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        n = state_dict["numpy"]
        np.random.set_state((n["kind"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))


# --- CLI defaults -------------------------------------------------------------------------------

_PLAIN_STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_find_unused_parameters_true", "single_device")


def add_reliability_defaults(trainer: dict[str, Any]) -> None:
    """Add, to a trainer's init arguments, what the config has not chosen itself: gradient
    clipping at 1.0, ``NonFiniteLossGuard``, ``RNGStateCallback`` and (for the single-device and
    DDP strategies, whose checkpoints are single files) ``SafeCheckpointIO``."""
    if trainer.get("gradient_clip_val") is None:
        trainer["gradient_clip_val"] = DEFAULT_GRADIENT_CLIP
    callbacks = list(trainer.get("callbacks") or [])
    for cls in (NonFiniteLossGuard, RNGStateCallback):
        if not any(isinstance(c, cls) for c in callbacks):
            callbacks.append(cls())
    trainer["callbacks"] = callbacks
    plugins = trainer.get("plugins")
    plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    strategy = trainer.get("strategy", "auto")
    plain = strategy in _PLAIN_STRATEGIES if isinstance(strategy, str) else isinstance(strategy, (DDPStrategy, SingleDeviceStrategy))
    if plain and not any(isinstance(p, CheckpointIO) for p in plugins):
        trainer["plugins"] = [*plugins, SafeCheckpointIO()]
