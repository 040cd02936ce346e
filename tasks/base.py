"""What every task's LightningModule shares: the optimizer, the LR schedule, metric names and the
checkpoint stamp that says which task wrote a checkpoint.

Metric names are ``train/loss``, ``val/loss`` and ``val/<task metric>``. The optimizer is AdamW with
weight decay on matrices only (not on biases, norms, embeddings' positions or other 1-D
parameters), or Muon for the blocks' matrices with AdamW for the rest (``tzoo.tasks.optim``),
under linear warmup then cosine decay to ``min_lr`` or warmup-stable-decay (``OptimConfig``). To use another optimizer or
schedule, pass ``--optimizer`` / ``--lr_scheduler`` to the CLI: LightningCLI then replaces
``configure_optimizers`` (and says so).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from tzoo.tasks.config import OptimConfig, from_dict, signature_default, to_dict

__all__ = ["TaskModule", "cosine_with_warmup", "param_groups", "warmup_stable_decay"]


def _plain(value: Any) -> Any:
    """Lists and tuples alike (a checkpoint's hyperparameters hold lists where a config held tuples)."""
    return tuple(_plain(v) for v in value) if isinstance(value, (list, tuple)) else value


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split parameters into decayed (2-D and up: weight matrices, embeddings) and not decayed."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def cosine_with_warmup(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup from 1/warmup to 1, then cosine from 1 to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_stable_decay(step: int, *, warmup_steps: int, total_steps: int, decay_fraction: float, min_ratio: float) -> float:
    """LR multiplier: linear warmup from 1/warmup to 1, constant 1, then linear decay to
    ``min_ratio`` over the last ``decay_fraction`` of ``total_steps`` (never into the warmup)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_start = max(warmup_steps, total_steps - round(decay_fraction * total_steps))
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / max(1, total_steps - decay_start))
    return 1.0 - (1.0 - min_ratio) * progress


class TaskModule(pl.LightningModule):
    """Base LightningModule of a tzoo task. Subclasses set ``task_name``, take ``net`` (their
    model's config), ``optim`` and their own options, and call ``super().__init__(optim=optim,
    compile=compile)``."""

    task_name: str = ""
    #: the logged metric a run card reports as this task's result (``tzoo.tasks.run_card``)
    card_metric: str = "val/loss"
    #: the step timer logs ``train/<throughput_unit>_per_s`` (of ``throughput_count(batch)``); None: no such metric
    throughput_unit: str | None = None
    #: values linked from the data (``model_links``) that must equal the model's when a trained model meets
    #: data (test / predict / resume with a checkpoint); None: all of them
    strict_links: tuple[str, ...] | None = None

    def __init__(self, *, optim: OptimConfig | None = None, compile: bool = False) -> None:
        """``optim``: the optimizer and LR schedule (a dict of its fields is taken too, as a
        checkpoint holds it). ``compile``: ``torch.compile`` for training, what ``compile_for_fit``
        says (``self.model`` in place, or a task's forward and loss as one graph; checkpoints keep
        the plain model's state-dict keys)."""
        super().__init__()
        default = signature_default(type(self), "optim")  # the task's defaults, e.g. its betas
        value = optim if optim is not None else default if default is not None else OptimConfig()
        self.optim = from_dict(OptimConfig, value, where="optim", base=default)
        self.compile_model, self._compiled = compile, False

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint's hyperparameters in this version's shape. Tasks whose arguments changed
        override it (the LM turns an older tzoo's flat arguments into ``net`` / ``optim``)."""
        return hparams

    @classmethod
    def hparams_from_checkpoint(cls, hparams: dict[str, Any], *, path: Any = "") -> dict[str, Any]:
        """``upgrade_hparams``, then a ValueError naming the arguments this class does not take
        (a checkpoint of an older tzoo, or of another version of a plugin)."""
        hparams = cls.upgrade_hparams(dict(hparams))
        params = inspect.signature(cls.__init__).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return hparams
        unknown = sorted(k for k in hparams if k not in params and not k.startswith("_"))
        if unknown and ("net" not in params or "net" in hparams):
            # an older version's setting (renamed or removed since): the current default stands in
            warnings.warn(f"checkpoint {str(path)!r} has settings {cls.__name__} no longer takes, ignored: {unknown}", stacklevel=2)
            return {k: v for k, v in hparams.items() if k not in unknown}
        if unknown:
            raise ValueError(
                f"checkpoint {str(path)!r} holds hyperparameters that {cls.__name__} does not take ({', '.join(unknown[:6])}): "
                f"it was written by an older tzoo, whose models took flat arguments (dim, depth, lr ...) where they now "
                f"take net=<model config> and optim=<OptimConfig>. Retrain with a current config (configs/), or load its "
                f"weights by hand into a model built with net.transformer set to the same sizes"
            )
        return hparams

    @property
    def lr(self) -> float:
        return self.optim.lr

    @property
    def min_lr(self) -> float:
        return self.optim.lr / 10 if self.optim.min_lr is None else self.optim.min_lr

    def save_hyperparameters(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's, with config dataclasses stored as plain dicts: checkpoints then load with
        ``weights_only=True`` and ``hparams.yaml`` shows every field."""
        kwargs.setdefault("frame", inspect.currentframe().f_back)  # type: ignore[union-attr]
        super().save_hyperparameters(*args, **kwargs)
        for key, value in list(self.hparams.items()):
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                self.hparams[key] = to_dict(value)

    # --- framework hooks: subclasses that override one call super() ----------------------------

    def setup(self, stage: str) -> None:
        """Checks that the model fits the data it meets (``strict_links``)."""
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is not None:
            self.check_links(data)

    def check_links(self, data: Any) -> None:
        """ValueError naming the first value linked from ``data`` that differs from the model's own."""
        links = getattr(data, "model_links", ())
        for name in links if self.strict_links is None else [n for n in self.strict_links if n in links]:
            ours, theirs = self.linked_value(name), getattr(data, name, None)
            if ours is not None and theirs is not None and _plain(ours) != _plain(theirs):
                where = getattr(data, "dataset", None) or type(data).__name__
                raise ValueError(
                    f"the model has {name}={ours!r} but the data ({where}) has {name}={theirs!r}: use a checkpoint "
                    f"trained on this data, or data with {name}={ours!r}"
                )

    def linked_value(self, name: str) -> Any:
        """The model's value of a linked argument: a hyperparameter, or a field of a config (``net.vocab_size``)."""
        if name in self.hparams:
            return self.hparams[name]
        for value in self.hparams.values():
            if isinstance(value, dict) and name in value:
                return value[name]
        return None

    def configure_model(self) -> None:
        """Under Lightning's ``ModelParallelStrategy`` (FSDP2), shard the model over the device
        mesh's data-parallel dimension (see ``tzoo.tasks.parallel``); other strategies have no mesh.
        Then, with ``compile=True`` and when fitting, ``compile_for_fit`` (``torch.compile``
        ``self.model`` in place: state-dict keys stay those of the plain model). Tasks do not
        override this hook (they may override ``compile_for_fit``)."""
        if self.device_mesh is not None:
            from tzoo.tasks.parallel import fully_shard_blocks

            fully_shard_blocks(self, self.device_mesh["data_parallel"])
        if self.compile_model and self._trainer is not None and self.trainer.state.fn == "fit" and not self._compiled:
            self.compile_for_fit()
            self._compiled = True

    def __getstate__(self) -> dict[str, Any]:
        """A copy (``copy.deepcopy``, pickling) starts uncompiled: compiled code is bound to this
        module's weights (``nn.Module`` drops an in-place compile's wrapper too), so the copy
        compiles its own when it is fitted."""
        return {**super().__getstate__(), "_compiled": False}

    def compile_for_fit(self) -> None:
        """What ``compile=True`` compiles when fitting: ``self.model``, in place. A task whose loss
        is a large part of a step overrides it to compile the forward and the loss as one graph
        (the LM: its log-softmax over the vocabulary)."""
        self.model.compile()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuses a checkpoint stamped by another task, before any weight is loaded."""
        stamp = checkpoint.get("tzoo", {})
        if stamp.get("task", self.task_name) != self.task_name:
            raise ValueError(
                f"this checkpoint was written by the {stamp.get('task')!r} task ({stamp.get('class_path')}), "
                f"not by {type(self).__name__} (the {self.task_name!r} task)"
            )

    def throughput_count(self, batch: Any) -> float | None:
        """What one training batch holds, in ``throughput_unit`` (default: its nodes)."""
        return self.count_nodes(batch)

    def configure_callbacks(self) -> list[pl.Callback]:
        """The step timer (``train/<throughput_unit>_per_s``, ``throughput.StepThroughput``); ``tzoo
        predict`` writes ``prediction_rows`` into the run folder when the task defines them."""
        from tzoo.tasks.throughput import StepThroughput

        if self.prediction_rows is None:
            return [StepThroughput()]
        from tzoo.tasks.predictions import PredictionWriter

        return [StepThroughput(), PredictionWriter()]

    #: a task that predicts defines ``prediction_rows(self, predictions, data) -> list[dict]``: one
    #: dict per predicted item from ``predict_step``'s outputs, written to ``predict_file`` (``.csv``
    #: or ``.jsonl``); without it ``tzoo predict`` writes no file
    prediction_rows: Callable[[list[Any], Any], list[dict[str, Any]]] | None = None

    #: where ``prediction_rows`` are written, in the run folder
    predict_file: str = "predictions.csv"

    def run_dir(self) -> Path | None:
        """The folder for a run's pictures and side files: the logger's run directory, or ``None``
        without a logger (Lightning's ``log_dir`` is then the working directory, which must not
        collect stray files). Call it on every rank: ``log_dir`` is a collective under DDP."""
        trainer = self.trainer
        return Path(trainer.log_dir) if trainer.loggers and trainer.log_dir else None

    def output_dir(self) -> Path | None:
        """``run_dir()`` on rank 0, made if missing; None on the other ranks and without a logger:
        where a task writes its pictures and side files. Call it on every rank (``run_dir``)."""
        folder = self.run_dir()
        if folder is None or not self.trainer.is_global_zero:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def configure_optimizers(self) -> Any:
        # the fused kernel (CPU and CUDA) is one call per step instead of several per tensor
        fused = all(p.device.type in ("cpu", "cuda") for p in self.parameters())
        # Lightning's mixed-precision plugin refuses to clip the gradients of a fused optimizer
        # (it assumes the optimizer unscales them itself, as under 16-bit loss scaling)
        fused = fused and "mixed" not in str(getattr(self._trainer, "precision", ""))
        from tzoo.tasks.optim import build_optimizer

        optim = self.optim
        optimizer = build_optimizer(self, optim, fused=fused)  # AdamW, or Muon + AdamW (optim.optimizer)
        total = self._total_steps()
        ratio = self.min_lr / optim.lr
        clock = self._budget_clock(total) if optim.budget == "time" else None

        def schedule(step: int) -> float:
            if clock is not None and step >= optim.warmup_steps:
                step = max(step, clock())
            if optim.schedule == "wsd":
                return warmup_stable_decay(
                    step, warmup_steps=optim.warmup_steps, total_steps=total, decay_fraction=optim.decay_fraction, min_ratio=ratio
                )
            return cosine_with_warmup(step, warmup_steps=optim.warmup_steps, total_steps=total, min_ratio=ratio)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _budget_clock(self, total: int) -> Callable[[], int]:
        """``optim.budget='time'``: a function giving the share of ``trainer.max_time`` used so far
        (Lightning's ``Timer``, restored with a checkpoint) in steps of ``total``."""
        from lightning.pytorch.callbacks import Timer

        timer = next((cb for cb in self.trainer.callbacks if isinstance(cb, Timer)), None)
        if timer is None or timer.time_remaining() is None:
            raise ValueError("optim.budget='time' runs the schedule over trainer.max_time, but no max_time is set; "
                             "give trainer.max_time (e.g. '00:00:29:00') or use optim.budget='steps'")  # fmt: skip

        def clock() -> int:
            used = timer.time_elapsed()
            return int(total * min(1.0, used / max(used + timer.time_remaining(), 1e-9)))

        return clock

    def _total_steps(self) -> int:
        trainer = self.trainer
        if trainer.max_steps and trainer.max_steps > 0:
            return trainer.max_steps
        total = trainer.estimated_stepping_batches
        return int(total) if math.isfinite(total) else 10**9

    def log_train_metrics(self, metrics: dict[str, Any], *, prog_bar: tuple[str, ...] = ()) -> None:
        """Log per-step training metrics on the steps the loggers write (every
        ``trainer.log_every_n_steps``), not on every step: each ``self.log`` call costs Lightning
        close to a millisecond (measured here: ~0.9 ms, mostly moving its result objects), a few
        percent of a small model's step spent on values nobody reads."""
        connector = getattr(self.trainer, "_logger_connector", None)  # Lightning's own "log now?" rule
        if connector is not None and not connector.should_update_logs:
            return
        for name, value in metrics.items():
            self.log(name, value, prog_bar=name in prog_bar)

    def count_nodes(self, batch: Any) -> int | None:
        """How many nodes a training batch holds (tokens, patches, frames, trajectory nodes), for the
        run card's nodes per second. ``None`` (the default) leaves nodes/s off the card. With a node
        count, the run card counts the training step's FLOPs once per fit (``tzoo.tasks.flops``) and
        reports the model FLOPs utilization (also logged as ``train/mfu``)."""
        return None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # lets `tzoo` refuse a checkpoint of another task with a clear message
        cls = type(self)
        checkpoint["tzoo"] = {"task": self.task_name, "class_path": f"{cls.__module__}.{cls.__qualname__}"}
