"""Run cards: what a ``fit`` ran and what it got, written into its log directory.

Every ``tzoo fit`` (through ``_add_trainer_defaults``) adds the ``RunCard`` callback, which writes
``run_card.json`` and a Markdown twin ``run_card.md`` beside the run's logs
(``runs/<task>/version_N/``) when fitting ends: task, parameter count, nodes per second, peak memory,
wall time, device, precision, the task's metric and, where the module reports its training FLOPs,
the model FLOPs utilization (MFU). A run without a logger has no log directory and gets no card.

What a task counts as a node comes from ``TaskModule.count_nodes(batch)``; its headline metric is
``TaskModule.card_metric``; FLOPs per node are counted by PyTorch's FLOP counter on the fit's first
training batch (``tzoo.tasks.flops``; a module's own ``flops_per_node()`` or ``flops_per_token()``
stands in where that gives none). MFU divides the achieved training FLOP/s by the peak this
device reaches on a large matmul in the run's precision (``device_peak_flops``: measured once per
process, or ``TZOO_PEAK_FLOPS``, FLOP/s, if set); ``train/mfu`` in the logged metrics uses the same.

``tzoo compare DIR...`` prints the cards found in (or under) each directory side by side
(``tzoo.tasks.compare``: reading cards needs neither Lightning nor torch).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import resource
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from tzoo.tasks import flops
from tzoo.tasks.compare import CARD_JSON, CARD_MD, compare, compare_main, find_cards, load_card, to_markdown

__all__ = ["CARD_JSON", "CARD_MD", "RunCard", "compare", "compare_main", "device_peak_flops", "find_cards", "load_card", "measure_peak_flops"]

_METRIC_PREFIXES = ("val/", "test/", "eval/")


class RunCard(Callback):
    """Collects step times, node counts and peak memory during ``fit`` and writes the run card at
    its end. On the fit's first training batch, before timing it, it counts the training step's
    FLOPs (``tzoo.tasks.flops``); then it logs ``train/mfu`` on the steps the loggers write, with
    the step time it measures. ``peak_flops`` (FLOP/s) fixes the MFU denominator; ``None``
    measures it (``device_peak_flops``)."""

    def __init__(self, *, peak_flops: float | None = None) -> None:
        if peak_flops is not None and peak_flops <= 0:
            raise ValueError(f"peak_flops must be > 0 FLOP/s (or None to measure it), got {peak_flops}")
        self.peak_flops = peak_flops
        self._reset()

    def _reset(self) -> None:
        self._fit_start = time.perf_counter()
        self._started = datetime.now(timezone.utc)
        self._batch_start: float | None = None
        self._train_time = 0.0
        self._steps = 0
        self._nodes: int | None = 0
        self._flops_per_node: float | None = None
        self._flops_counted = False
        self._peak: float | None = None

    # --- collecting ---------------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.strategy.root_device)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if not self._flops_counted:  # once per fit, before the step timers: counting is no part of a step
            self._flops_counted = True
            self._flops_per_node = flops.count_training_flops(trainer, pl_module, batch)
            if self._flops_per_node:  # the peak too (measured once per process), for train/mfu
                self._peak = self.peak_flops or device_peak_flops(trainer.strategy.root_device, str(trainer.precision))
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._batch_start is None:
            return
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)  # the step's kernels, not just their launch
        seconds = time.perf_counter() - self._batch_start
        self._train_time += seconds
        self._steps += 1
        count = getattr(pl_module, "count_nodes", None)
        nodes = count(batch) if callable(count) else None
        self._nodes = None if nodes is None or self._nodes is None else self._nodes + int(nodes)
        connector = getattr(trainer, "_logger_connector", None)  # Lightning's own "log now?" rule
        if self._flops_per_node and self._peak and nodes and seconds > 0 and (connector is None or connector.should_update_logs):
            pl_module.log("train/mfu", self._flops_per_node * int(nodes) / seconds / self._peak, on_step=True, on_epoch=False)

    # --- writing ------------------------------------------------------------------------------

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module, status="finished")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._write(trainer, pl_module, status=f"stopped: {type(exception).__name__}")

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *, status: str) -> None:
        if not trainer.loggers or not trainer.is_global_zero or trainer.sanity_checking:
            return
        # the logger's own directory: Trainer.log_dir broadcasts from rank 0, a collective that
        # hangs or fails when only rank 0 gets here (DDP, at the end of fit)
        logger = trainer.loggers[0]
        log_dir = getattr(logger, "log_dir", None) or logger.save_dir
        if not log_dir:
            return
        card = self.card(trainer, pl_module, status=status)
        out = Path(log_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        (out / CARD_MD).write_text(to_markdown(card), encoding="utf-8")

    def card(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *, status: str = "finished") -> dict[str, Any]:
        """The card as a dict (what ``run_card.json`` holds)."""
        device = trainer.strategy.root_device
        params = sum(p.numel() for p in pl_module.parameters())
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        metrics = {
            name: float(value)
            for name, value in sorted(trainer.callback_metrics.items())
            if name.startswith(_METRIC_PREFIXES) and torch.as_tensor(value).numel() == 1
        }
        metric_name = getattr(pl_module, "card_metric", "val/loss")
        nodes_per_s = self._nodes / self._train_time if self._nodes and self._train_time > 0 else None
        flops_per_node = self._flops_per_node or _flops_per_node(pl_module)  # counted, else the module's own
        achieved = flops_per_node * nodes_per_s if flops_per_node and nodes_per_s else None
        peak = None
        if achieved is not None:
            peak = self.peak_flops or device_peak_flops(device, str(trainer.precision))
        cls = type(pl_module)
        return {
            "task": getattr(pl_module, "task_name", "") or cls.__name__,
            "model": f"{cls.__module__}.{cls.__qualname__}",
            "status": status,
            "run_dir": str(Path(getattr(trainer.loggers[0], "log_dir", None) or ".").resolve()) if trainer.loggers else None,
            "started_utc": self._started.isoformat(timespec="seconds"),
            "wall_time_s": round(time.perf_counter() - self._fit_start, 3),
            "train_step_time_s": round(self._train_time, 3),
            "steps": trainer.global_step,
            "epochs": trainer.current_epoch,
            "params": params,
            "trainable_params": trainable,
            "nodes": self._nodes if self._nodes else None,
            "nodes_per_s": _round(nodes_per_s),
            "peak_memory_bytes": _peak_memory(device),
            "peak_memory_kind": "CUDA max allocated" if device.type == "cuda" else "process peak RSS",
            "device": _device_name(device),
            "precision": str(trainer.precision),
            "metric": {"name": metric_name, "value": metrics.get(metric_name)},
            "metrics": metrics,
            "flops_per_node": _round(flops_per_node),
            "achieved_flops_per_s": _round(achieved),
            "peak_flops_per_s": _round(peak),
            "mfu": _round(achieved / peak) if achieved and peak else None,
            "versions": {"python": platform.python_version(), "torch": torch.__version__, **_versions("tzoo", "lightning")},
        }


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else float(f"{x:.{digits + 2}g}")


def _flops_per_node(module: pl.LightningModule) -> float | None:
    for name in ("flops_per_node", "flops_per_token"):
        fn = getattr(module, name, None)
        if callable(fn):
            value = fn()
            return float(value) if value else None
    return None


def device_peak_flops(device: torch.device, precision: str) -> float:
    """The MFU denominator: ``TZOO_PEAK_FLOPS`` (FLOP/s) if set, else ``measure_peak_flops`` on
    ``device`` in the matmul dtype of ``precision`` (a Trainer's, e.g. ``"bf16-mixed"``)."""
    return _env_peak_flops() or measure_peak_flops(device, _matmul_dtype(precision))


def _env_peak_flops() -> float | None:
    raw = os.environ.get("TZOO_PEAK_FLOPS")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"TZOO_PEAK_FLOPS={raw!r} is not a number of FLOP/s (e.g. 3.4e11)") from None
    if value <= 0:
        raise ValueError(f"TZOO_PEAK_FLOPS must be > 0 FLOP/s, got {raw!r}")
    return value


def _matmul_dtype(precision: str) -> torch.dtype:
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    if precision.startswith("64"):
        return torch.float64
    return torch.float32


def measure_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32, *, size: int | None = None, repeats: int = 3) -> float:
    """FLOP/s of the fastest of ``repeats`` (size x size) @ (size x size) products on ``device``: the
    practical ceiling a model's matmuls run against (2·size³ FLOPs each). Measured once per process
    for each (device, dtype, size). ``size`` defaults to 2048, or 512 for 16-bit types on a CPU (which
    may emulate them: a 2048 product in bf16 takes minutes on a CPU without bf16 instructions)."""
    if size is None:
        size = 512 if device.type == "cpu" and dtype in (torch.bfloat16, torch.float16) else 2048
    return _measure_peak_flops(str(device), dtype, size, repeats)


@functools.lru_cache(maxsize=None)
def _measure_peak_flops(device_name: str, dtype: torch.dtype, size: int, repeats: int) -> float:
    device = torch.device(device_name)
    generator = torch.Generator(device).manual_seed(0)  # its own: measured mid-fit, it must not move the run's RNG
    a = torch.randn(size, size, device=device, generator=generator).to(dtype)
    b = torch.randn(size, size, device=device, generator=generator).to(dtype)
    best = float("inf")
    for i in range(repeats + 1):  # the first is a warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.machine()}, {torch.get_num_threads()} threads"


def _versions(*names: str) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "?"
    return out
