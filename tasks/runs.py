"""Run folders: which ``runs/<task>/version_N`` a ``tzoo fit`` writes to, what state each run is
in, what ``--ckpt_path last`` resumes, and a CSV log that keeps its history across resumes.

Every fit through the CLI writes ``run_state.json`` into its run folder before its first step:
``status`` (``running``, ``finished``, ``stopped: <exception>``), the process and host, and the
*fingerprint* of its model and data configuration. A run killed outright (SIGKILL, power loss)
stays ``running`` with a process that no longer exists; that reads as ``killed``.

``--ckpt_path last`` resumes the run this command started: among the task's runs with the same
fingerprint (same model and data config), the one that did not finish and holds a
``checkpoints/last.ckpt``. A finished run, a run of another configuration, a run still running
and a run stopped before its first checkpoint are never picked; when no run or more than one run
qualifies, ``resolve_last`` refuses with the list of runs and why each was or was not a candidate.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.fabric.utilities.apply_func import convert_tensors_to_scalars
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from tzoo.tasks.files import atomic_write

__all__ = ["PENDING_ROWS", "RUN_STATE", "HistoryCSVLogger", "PendingRows", "ResumeError", "Run", "RunState", "config_fingerprint", "find_runs", "resolve_last"]

RUN_STATE = "run_state.json"
PENDING_ROWS = "tzoo_pending_log_rows"  # the checkpoint key of the rows Lightning logs just after the save


class ResumeError(ValueError):
    """``--ckpt_path last`` cannot say which run to resume."""


def config_fingerprint(model: Any, data: Any) -> str:
    """A short hash of the model and data configuration (what decides which weights a run
    trains): two commands with the same one are the same run, whatever their trainer settings."""

    def plain(value: Any) -> Any:
        if hasattr(value, "as_dict"):  # jsonargparse Namespace
            value = value.as_dict()
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        return str(value)

    text = json.dumps({"model": plain(model), "data": plain(data)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the state of a run -------------------------------------------------------------------------


@dataclass
class Run:
    version: int
    path: Path
    state: dict[str, Any]

    @property
    def last(self) -> Path | None:
        """The newest ``last*.ckpt`` (as Lightning resolves "last"), or None."""
        found = [p for p in (self.path / "checkpoints").glob("last*.ckpt") if p.is_file()]
        return max(found, key=lambda p: p.stat().st_mtime, default=None)

    @property
    def status(self) -> str:
        """``finished``, ``stopped: ...``, ``running``, ``killed`` or ``unknown`` (no state file:
        a run folder of an older tzoo, or of another tool)."""
        status = self.state.get("status", "unknown")
        if status == "running" and not _alive(self.state):
            return "killed"
        return status


def _alive(state: dict[str, Any]) -> bool:
    """Whether the process that wrote ``state`` may still be running. Another host's process
    cannot be checked: it counts as gone (a job rescheduled on another node resumes)."""
    if state.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(state.get("pid", -1)), 0)
    except (OSError, ValueError, OverflowError):
        return False
    return True


def find_runs(root: Path, task: str) -> list[Run]:
    """The task's run folders under ``root``, oldest version first."""
    runs = []
    for path in (Path(root) / task).glob("version_*"):
        number = path.name.removeprefix("version_")
        if not (number.isdigit() and path.is_dir()):
            continue
        try:
            state = json.loads((path / RUN_STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {}
        runs.append(Run(int(number), path, state if isinstance(state, dict) else {}))
    return sorted(runs, key=lambda r: r.version)


def resolve_last(root: Path, task: str, fingerprint: str, *, training: bool = True) -> Run:
    """The run ``--ckpt_path last`` means (see the module docstring). ``training=False`` (validate,
    test, predict) also accepts finished runs: the newest one of this configuration."""
    runs = find_runs(root, task)
    candidates = []
    for run in runs:
        same = run.state.get("fingerprint") == fingerprint
        if same and run.last is not None and run.status != "running" and (not training or run.status != "finished"):
            candidates.append(run)
    if len(candidates) == 1 or (candidates and not training):
        return candidates[-1]
    where = Path(root) / task
    listing = "; ".join(f"version_{r.version}: {_why(r, fingerprint, training)}" for r in runs) or "none"
    if candidates:
        raise ResumeError(
            f"--ckpt_path last is ambiguous: {len(candidates)} unfinished runs of this configuration under {where} have a "
            f"checkpoint ({', '.join(f'version_{r.version}' for r in candidates)}). Give the one to resume: "
            f"--ckpt_path {candidates[-1].last}. Runs: {listing}"
        )
    raise ResumeError(
        f"--ckpt_path last found no run to resume under {where}: it resumes only an unfinished run of this same model "
        f"and data configuration that saved a checkpoint. Runs: {listing}. Start afresh without --ckpt_path, or give a "
        f"checkpoint file: --ckpt_path runs/{task}/version_N/checkpoints/last.ckpt"
    )


def _why(run: Run, fingerprint: str, training: bool) -> str:
    status = run.status
    if status == "unknown":
        return "no run_state.json (made by an older tzoo or another tool)"
    if run.state.get("fingerprint") != fingerprint:
        return f"{status}, another model/data configuration"
    if status == "running":
        return f"still running (pid {run.state.get('pid')})"
    if run.last is None:
        return f"{status} before its first checkpoint"
    if training and status == "finished":
        return "finished"
    return f"{status}, resumable"


class RunState(Callback):
    """Writes ``run_state.json`` into the run folder: ``running`` when fitting starts (before any
    step), then ``finished`` or ``stopped: <exception>``. Rank 0 writes; a run without a logger
    has no folder and no state."""

    def __init__(self, fingerprint: str, *, resumed_from: str | None = None) -> None:
        self.fingerprint, self.resumed_from = fingerprint, resumed_from
        self._path: Path | None = None
        self._state: dict[str, Any] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.loggers or not trainer.is_global_zero:
            return
        logger = trainer.loggers[0]
        log_dir = getattr(logger, "log_dir", None) or logger.save_dir
        if not log_dir:
            return
        self._path = Path(log_dir) / RUN_STATE
        try:
            previous = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = {}
        resumes = list(previous.get("resumes", [])) if isinstance(previous, dict) else []
        if self.resumed_from:
            resumes.append({"from": self.resumed_from, "at": _now()})
        self._state = {
            "status": "running",
            "fingerprint": self.fingerprint,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": previous.get("started", _now()) if isinstance(previous, dict) else _now(),
            "resumes": resumes,
        }
        self._write()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish("finished")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._finish(f"stopped: {type(exception).__name__}")

    def _finish(self, status: str) -> None:
        if self._path is not None:
            self._state.update(status=status, ended=_now())
            self._write()

    def _write(self) -> None:
        assert self._path is not None
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self._path, "w") as f:
            f.write(json.dumps(self._state, indent=2) + "\n")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- a CSV log that keeps its history -----------------------------------------------------------


class _HistoryWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv`` when it opens a folder. This one
    starts from ``history`` (the resumed run's own file, or the one of the run whose checkpoint is
    resumed): the rows logged before ``resume_step``, or all of them when it is None (test or
    validate appending to a run's log). Later rows are dropped: the interrupted run logged them
    after its checkpoint, and the resumed run logs those steps again."""

    def __init__(self, log_dir: str, *, history: Path, resume_step: int | None, pending: Sequence[dict[str, Any]] = ()) -> None:
        self._history, self._resume_step, self._pending = history, resume_step, list(pending)
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        rows: list[dict[str, str]] = []
        keys: list[str] = []
        if self._history.is_file():
            keep_before = float("inf") if self._resume_step is None else self._resume_step
            with open(self._history, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                keys = list(reader.fieldnames or [])
                rows = [row for row in reader if _step(row) < keep_before]
        for row in self._pending:  # the resumed checkpoint's own rows, where the kill came before they were written
            if not any(_step(have) == row["step"] and all(have.get(k) for k in row) for have in rows):
                keys += [k for k in row if k not in keys]
                rows.append({k: str(v) for k, v in row.items()})
        target = Path(self.metrics_file_path)
        if rows or target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(target, "w", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=keys)
                writer.writeheader()
                writer.writerows(rows)
        self.metrics_keys = keys


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return float("nan")


class HistoryCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume (see ``_HistoryWriter``) and is
    written as rows come (not every 100 steps), so that a killed run has on disk the rows of every
    step up to the checkpoint it resumes from. Lightning logs a step's rows just after that step's
    checkpoint is saved; ``PendingRows`` puts those rows into the checkpoint, and a resume adds them
    (``pending``) where the kill came between the save and the write. Appending a row costs tens of
    microseconds, once per ``log_every_n_steps``."""

    def __init__(
        self, *args: Any, history: Path | None = None, resume_step: int | None = None, pending: Sequence[dict[str, Any]] = (), **kwargs: Any
    ) -> None:
        kwargs.setdefault("flush_logs_every_n_steps", 1)
        super().__init__(*args, **kwargs)
        self._history, self._resume_step, self._pending = history, resume_step, list(pending)

    @property
    def experiment(self) -> ExperimentWriter:  # type: ignore[override]
        if self._experiment is None and self._history is not None and rank_zero_only.rank == 0:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _HistoryWriter(self.log_dir, history=self._history, resume_step=self._resume_step, pending=self._pending)
        return super().experiment

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self.save()


class PendingRows(Callback):
    """Puts into each checkpoint (under ``PENDING_ROWS``) the rows that Lightning logs just after it
    is saved, so that a run killed between the save and the write does not lose them on resume.

    A checkpoint saved in ``on_train_batch_end`` (``every_n_train_steps``) comes before that step's
    training rows; one saved in ``on_train_epoch_end``, or in ``on_validation_end`` of a validation
    that ends the epoch, before the epoch's aggregated training rows (``on_epoch=True``). Validation
    rows are logged before ``on_validation_end``'s save. The callback follows the hooks (Lightning
    calls it before any checkpoint callback) to know which save it is; the rows are the values
    Lightning's logger connector holds for the coming write (its internals: a Lightning without them
    is reported once, and its checkpoints carry no rows). Values a module logs in its own
    ``on_train_batch_end`` come after the save and are not among them (tzoo's step timer is a
    callback for this reason, ``throughput.py``)."""

    def __init__(self) -> None:
        self._warned = False
        self._stage: str | None = None  # the hook the next save is in: batch_end, validation_end, epoch_end

    def on_train_batch_start(self, *args: Any) -> None:
        self._stage = None

    def on_train_batch_end(self, *args: Any) -> None:
        self._stage = "batch_end"

    def on_validation_start(self, *args: Any) -> None:
        self._stage = None

    def on_validation_end(self, *args: Any) -> None:
        self._stage = "validation_end"

    def on_train_epoch_start(self, *args: Any) -> None:
        self._stage = None

    def on_train_epoch_end(self, *args: Any) -> None:
        self._stage = "epoch_end"

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        try:
            rows = _pending_rows(trainer, pl_module, self._stage)
        except AttributeError as exc:  # a Lightning whose loop or logger-connector internals moved
            if not self._warned:
                rank_zero_warn(f"tzoo cannot read the rows Lightning logs after a checkpoint ({exc}); a kill right after a save may lose one step's rows")
                self._warned = True
            return
        if rows:
            checkpoint[PENDING_ROWS] = rows


def _pending_rows(trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str | None) -> list[dict[str, Any]]:
    if stage is None or not trainer.loggers or trainer.sanity_checking or trainer.state.fn != "fit":
        return []
    connector, loop = trainer._logger_connector, trainer.fit_loop.epoch_loop
    if stage == "batch_end":  # the step's rows, on the steps Lightning logs
        accumulating = trainer.fit_loop._should_accumulate() and pl_module.automatic_optimization
        if accumulating or not (connector.should_update_logs or trainer.fast_dev_run):
            return []
        metrics, step = connector.metrics["log"], loop._batches_that_stepped
    elif stage == "epoch_end":  # the epoch's aggregates, logged one step back
        metrics, step = loop._results.metrics(False)["log"], loop._batches_that_stepped - 1
    else:  # validation_end: the epoch's aggregates follow only when this validation ends the epoch
        if not (loop._is_training_done or trainer.should_stop):
            return []
        metrics, step = loop._results.metrics(False)["log"], loop._batches_that_stepped
    metrics = convert_tensors_to_scalars(metrics)
    if not metrics:
        return []
    if "step" in metrics:
        step = int(metrics.pop("step"))
    else:
        metrics.setdefault("epoch", trainer.current_epoch)
    return [{**metrics, "step": step}]
