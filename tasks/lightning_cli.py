"""The Lightning side of the ``tzoo`` command: ``tzoo fit|validate|test|predict`` through
:class:`TzooCLI` (a ``LightningCLI``), the values linked from the data into the model, the trainer
defaults (loggers, checkpoints, progress bar, run card, run state) and the checks made before
anything is built. ``tzoo.tasks.cli`` imports this module only for those subcommands, so that
``tzoo --help`` and ``tzoo tasks`` do not import Lightning.
"""

from __future__ import annotations

import inspect
import sys
import tempfile
import typing
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from jsonargparse import Namespace
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.model_registry import _is_registry
from torch import nn

from tzoo.tasks.cli import UsageError, _import_class
from tzoo.tasks.progress import StepProgressBar
from tzoo.tasks.reliability import add_reliability_defaults, read_checkpoint
from tzoo.tasks.run_card import RunCard
from tzoo.tasks.runs import PENDING_ROWS, HistoryCSVLogger, PendingRows, ResumeError, RunState, config_fingerprint, resolve_last

__all__ = ["TzooCLI", "explicit_model_args", "link_target"]


RUNS_DIR = "runs"

TRAINER_DEFAULTS: dict[str, Any] = {"default_root_dir": RUNS_DIR}
_NAMED_CHECKPOINTS = ("last", "best", "hpc")  # Lightning's names for --ckpt_path


def explicit_model_args(argv: list[str]) -> set[str]:
    """The model arguments a command line sets: ``--model.init_args.NAME[=V]`` or ``--model.NAME[=V]``
    -> NAME, nested ones dotted (``net.transformer.window``)."""
    names = set()
    for arg in argv:
        if arg.startswith("--model."):
            key = arg[len("--model.") :].split("=", 1)[0].removeprefix("init_args.")
            if key and key != "class_path":
                names.add(key)
    return names


def _drop(hparams: dict[str, Any], dotted: str) -> None:
    """Remove ``a.b.c`` from nested dicts, if there."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        hparams = hparams.get(part) if isinstance(hparams, dict) else None  # type: ignore[assignment]
        if not isinstance(hparams, dict):
            return
    hparams.pop(leaf, None)


class TzooCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(
            model_class=pl.LightningModule,
            datamodule_class=pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_defaults=TRAINER_DEFAULTS,
            save_config_kwargs={"overwrite": True},
            args=args,
            **kwargs,
        )

    def parse_arguments(self, parser: Any, args: Any) -> None:
        self._argv = [a for a in args if isinstance(a, str)] if isinstance(args, (list, tuple)) else sys.argv[1:]
        with warnings.catch_warnings():
            # `tzoo` passes its own command line as `args` (it also stays in sys.argv, which DDP's
            # launcher re-runs for the other ranks): not the mix-up Lightning warns about
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")
            super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Lay --ckpt_path's hyperparameters over the model config (as LightningCLI does: a training
        config rebuilds the trained model), except the model arguments given explicitly on the
        command line (``--model.init_args.beam_size=8``, ``--model.tta_hflip true``): those are the
        user's test-time settings and win. The checkpoint is read with weights_only=True before the
        trainer exists; on failure, read_checkpoint says why (unsafe, truncated, ...) and names it."""
        if not self.config.get("subcommand"):
            return
        config = self.config[self.config.subcommand]
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path or ckpt_path in _NAMED_CHECKPOINTS or _is_registry(ckpt_path) or "://" in ckpt_path:
            return
        if Path(ckpt_path).is_dir():  # a sharded checkpoint (FSDP, ModelParallelStrategy): its strategy reads it
            return
        if not Path(ckpt_path).is_file():  # before any run folder is made for it
            raise UsageError(
                f"checkpoint {ckpt_path!r} does not exist: give a checkpoint file (or a sharded checkpoint's "
                f"folder), or 'last' to resume this task's newest run"
            )
        _refuse_text_file(ckpt_path)
        hparams = dict(read_checkpoint(ckpt_path, mmap=True).get("hyper_parameters", {}))
        written_by, wanted = hparams.get("_class_path"), (config.get("model") or {}).get("class_path")
        if written_by and wanted and written_by != wanted:
            raise UsageError(
                f"checkpoint {ckpt_path!r} holds a {written_by.rsplit('.', 1)[-1]} ({written_by}), but this config's "
                f"model is {wanted}: give a checkpoint of that task, or the config the checkpoint was trained with "
                f"(config.yaml in its run folder)"
            )
        hparams.pop("_instantiator", None)
        class_path = hparams.pop("_class_path", None)
        module_class = _import_class(class_path or wanted)
        if module_class is not None and hasattr(module_class, "hparams_from_checkpoint"):
            try:  # an older tzoo's flat arguments migrate, or are refused naming them
                hparams = module_class.hparams_from_checkpoint(hparams, path=ckpt_path)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        for name in explicit_model_args(getattr(self, "_argv", [])):
            _drop(hparams, name)
        if not hparams:
            return
        if class_path:
            hparams = {"class_path": class_path, "init_args": hparams}
        self.config = self.parser.parse_object({self.config.subcommand: {"model": hparams}}, self.config)

    def before_instantiate_classes(self) -> None:
        """What the config alone can tell is checked before the data is prepared and the model built."""
        config = self.config.get(str(self.subcommand), self.config)
        trainer = config.get("trainer") or Namespace()
        _check_trainer_counts(trainer)
        root = trainer.get("default_root_dir") or RUNS_DIR
        writes = self.subcommand == "fit" or trainer.get("logger") is not False
        if writes and isinstance(root, (str, Path)) and "://" not in str(root):
            _check_writable(Path(root), "--trainer.default_root_dir")

    def instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand), self.config)
        data = None
        if config.get("data") is not None and config.get("model") is not None:
            data = _instantiate(config.data)
            _link_data_to_model(data, config.model)
        super().instantiate_classes()
        if data is not None:  # keep the instance whose linked values the model was built with
            self.datamodule = data
            self.config_init.get(str(self.subcommand), self.config_init)["data"] = data

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer = self._get(self.config_init, "trainer", default={})
        config = self.config.get(str(self.subcommand), self.config)
        ckpt_path = config.get("ckpt_path")
        try:
            self._resume_from = _add_trainer_defaults(
                trainer,
                getattr(self.model, "task_name", "") or "tzoo",
                fingerprint=config_fingerprint(config.get("model"), config.get("data")),
                ckpt_path=ckpt_path,
                subcommand=str(self.subcommand),
            )
        except ResumeError as exc:  # one line through tzoo's main (its traceback with --traceback)
            raise UsageError(str(exc)) from exc
        if ckpt_path == "last" and self._resume_from is not None:
            # the run resolve_last chose, not Lightning's own search for a "last" checkpoint
            self.config_init.get(str(self.subcommand), self.config_init)["ckpt_path"] = str(self._resume_from)
        add_reliability_defaults(trainer)
        return super().instantiate_trainer(**kwargs)

    def before_fit(self) -> None:
        """Resuming: check that the checkpoint holds this model's weights before the run writes
        anything (its config, hyperparameters and run card would otherwise overwrite those of the
        run being resumed, and then the restore would fail anyway)."""
        ckpt_path = self.config.fit.get("ckpt_path")
        path = self._resume_from if ckpt_path == "last" else Path(ckpt_path) if ckpt_path else None
        if path is None or not path.is_file() or _builds_weights_later(self.model):
            return
        _check_checkpoint_fits(self.model, path, strict=getattr(self.model, "strict_loading", True))


def _instantiate(spec: Namespace) -> Any:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(pl.LightningDataModule, "data", required=True)
    return parser.instantiate(Namespace(data=spec)).data


def link_target(model_cls: type, name: str) -> str | None:
    """Where a value linked from the data lands in ``model_cls``'s arguments: the parameter
    ``name`` itself, else the field ``name`` of a config dataclass parameter (``net.vocab_size``)."""
    from tzoo.tasks.config import _dataclass_in, config_fields

    params = inspect.signature(model_cls.__init__).parameters
    if name in params:
        return name
    try:
        hints = typing.get_type_hints(model_cls.__init__)
    except Exception:  # noqa: BLE001 - annotations that do not resolve: no nested targets
        return None
    for param in params:
        config = _dataclass_in(hints.get(param))
        if config is not None and name in config_fields(config):
            return f"{param}.{name}"
    return None


def _link_data_to_model(data: pl.LightningDataModule, model: Namespace) -> None:
    """Copy ``data.model_links`` values into the model's init_args (nested config fields
    included), loudly."""
    from jsonargparse._util import import_object  # type: ignore[attr-defined]

    names = tuple(getattr(data, "model_links", ()))
    if not names:
        return
    model_cls = import_object(model.class_path)
    if model.get("init_args") is None:
        model.init_args = Namespace()
    for name in names:
        target = link_target(model_cls, name)
        if target is None:
            params = [p for p in inspect.signature(model_cls.__init__).parameters if p != "self"]
            raise ValueError(
                f"{type(data).__name__} provides {name!r} for the model, but {model_cls.__name__} has no "
                f"parameter {name!r}, nor a config field of that name (its parameters: {', '.join(params)})"
            )
        value = getattr(data, name)
        given = model.init_args.get(target)
        if given is not None and given != value:
            warnings.warn(
                f"model.init_args.{target}={given!r} from your config is replaced by {value!r}, "
                f"linked from the data ({type(data).__name__}.{name})",
                UserWarning,
                stacklevel=2,
            )
        model.init_args[target] = value


def _builds_weights_later(model: pl.LightningModule) -> bool:
    """Weights made in ``configure_model`` (beyond TaskModule's sharding of existing ones) or lazy
    modules: the model's state before fit is not yet what the checkpoint holds."""
    from tzoo.tasks.base import TaskModule

    own = type(model).configure_model
    if own is not pl.LightningModule.configure_model and own is not TaskModule.configure_model:
        return True
    return any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters())


def _check_checkpoint_fits(model: pl.LightningModule, path: Path, *, strict: bool = True) -> None:
    """UsageError naming the first difference if the checkpoint's weights are not this model's
    (other shapes: another configuration, or a vocabulary from other data; with ``strict``, also
    other names), as Lightning's restore would fail later, after the run's files were written."""
    theirs = read_checkpoint(path, mmap=True).get("state_dict", {})
    ours = model.state_dict()
    shapes = [(k, list(theirs[k].shape), list(v.shape)) for k, v in ours.items() if k in theirs and theirs[k].shape != v.shape]
    missing, unexpected = ([k for k in ours if k not in theirs], [k for k in theirs if k not in ours]) if strict else ([], [])
    if not (shapes or missing or unexpected):
        return
    if shapes:
        name, there, here = shapes[0]
        detail = f"{name} is {there} in the checkpoint and {here} in this model"
    else:
        detail = f"this model has {missing[:3]} that the checkpoint lacks" if missing else f"the checkpoint has {unexpected[:3]} that this model lacks"
    trained_with = path.parent.parent / "config.yaml"
    hint = f"; resume it with the config it was trained with: tzoo fit --config {trained_with} --ckpt_path {path}" if trained_with.is_file() else ""
    raise UsageError(
        f"checkpoint {str(path)!r} does not fit this model ({detail}): it was trained with another configuration "
        f"or other data{hint}. Nothing was written."
    )


def _add_trainer_defaults(trainer: dict[str, Any], task: str, *, fingerprint: str, ckpt_path: str | None = None, subcommand: str = "fit") -> Path | None:
    """Loggers and callbacks a user expects, unless the config turned them off:
    CSV + TensorBoard logs in <default_root_dir>/<task>/version_N (one N for both; left alone the
    two loggers pick their versions independently and can disagree) followed by the loggers the
    config gives (``--trainer.logger``: W&B, MLflow, ...; a TensorBoard one of its own replaces
    tzoo's; ``--trainer.logger false`` turns every logger off), a learning-rate monitor, a
    rich progress bar (counting steps of max_steps in a step-limited run), a checkpoint callback that also keeps ``last.ckpt``, the run card and the
    run state (``tzoo.tasks.runs``). With ``--ckpt_path last`` the loggers continue the run that
    ``resolve_last`` picks (ResumeError when none or several qualify) and that run's CSV history;
    resuming a checkpoint file starts a new version whose CSV log begins with the history of the
    checkpoint's run up to the checkpoint. Returns the checkpoint that ``last`` resolved to."""
    callbacks = list(trainer.get("callbacks") or [])
    resume_from = None
    given = trainer.get("logger")
    if given is not False:  # None/True: tzoo's loggers; a logger or a list of them: tzoo's, then the user's
        user = [] if given in (None, True) else list(given) if isinstance(given, (list, tuple)) else [given]
        root = Path(trainer.get("default_root_dir") or RUNS_DIR)
        taken = [p.name.removeprefix("version_") for p in (root / task).glob("version_*")]
        version = max((int(v) for v in taken if v.isdigit()), default=-1) + 1
        history = resume_step = None
        pending: list[dict[str, Any]] = []
        if ckpt_path == "last":
            run = resolve_last(root, task, fingerprint, training=subcommand == "fit")
            version, resume_from, history = run.version, run.last, run.path / "metrics.csv"
        elif ckpt_path and Path(ckpt_path).is_file():
            history = Path(ckpt_path).resolve().parent.parent / "metrics.csv"
        if history is not None and subcommand == "fit":
            resume_step, pending = _log_step(resume_from or Path(str(ckpt_path)))
        csv_logger = HistoryCSVLogger(root, name=task, version=version, history=history, resume_step=resume_step, pending=pending)
        # tzoo's CSV logger first: the run folder (checkpoints, config, run card, resume history) stays
        # <root>/<task>/version_N whatever else logs; a user's TensorBoard logger replaces tzoo's
        board = [] if any(isinstance(u, TensorBoardLogger) for u in user) else [TensorBoardLogger(root, name=task, version=version)]
        trainer["logger"] = [csv_logger, *board, *user]
        if not any(isinstance(c, LearningRateMonitor) for c in callbacks):
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        if subcommand == "fit":
            callbacks.append(RunState(fingerprint, resumed_from=str(resume_from or ckpt_path) if ckpt_path else None))
            callbacks.append(PendingRows())
    if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(StepProgressBar())
    if trainer.get("enable_checkpointing") is not False and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        callbacks.append(ModelCheckpoint(save_last=True))
    if not any(isinstance(c, RunCard) for c in callbacks):  # run_card.json/.md in the log directory
        callbacks.append(RunCard())
    trainer["callbacks"] = callbacks
    return resume_from


def _log_step(ckpt: Path) -> tuple[int | None, list[dict[str, Any]]]:
    """The step the loggers' rows of a run resumed from ``ckpt`` start at (its ``global_step``: a
    step's rows are logged just after that step's checkpoint, with the step's index), and the rows
    Lightning logged just after the save (``PendingRows``), which a kill may have kept off the disk."""
    try:
        checkpoint = read_checkpoint(ckpt, mmap=True)
    except (OSError, ValueError):
        return None, []
    step = checkpoint.get("global_step")
    return (int(step) if step is not None else None), list(checkpoint.get(PENDING_ROWS) or [])


def _refuse_text_file(path: str) -> None:
    """A text file given as a checkpoint (a config, a log, tokenizer.json) is named as such; read as a
    checkpoint it would be reported as truncated or corrupt, which sends one looking for damage."""
    with open(path, "rb") as f:
        head = f.read(256)
    if not head or b"\0" in head:  # checkpoints (zip archives, pickles) hold NUL or non-UTF-8 bytes early
        return
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut off at the end of the 256 bytes
            return
        text = head[: exc.start].decode("utf-8")
    raise UsageError(
        f"--ckpt_path {path!r} is a text file, not a checkpoint (it starts with {text[:40]!r}): give a .ckpt file "
        f"written by tzoo fit (under <default_root_dir>/<task>/version_N/checkpoints/), or 'last'"
    )


def _check_trainer_counts(trainer: Any) -> None:
    """Step and epoch counts Lightning would refuse only after the data and the model are built."""
    for name, low in (("max_steps", -1), ("max_epochs", -1), ("min_steps", 0), ("min_epochs", 0)):
        value = trainer.get(name)
        if value is not None and not (isinstance(value, int) and value >= low):
            valid = "a count >= 0, or -1 for no limit" if low == -1 else "a count >= 0"
            raise UsageError(f"--trainer.{name}={value!r} is not valid: give {valid}")


def _check_writable(folder: Path, option: str) -> None:
    """A run's output folder (or, when it does not exist yet, the nearest folder above it that
    does) takes new files: found now rather than at the first checkpoint, after training."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option}={str(folder)!r} cannot be made: {str(existing)!r} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".tzoo-write-check-"):
            pass
    except OSError as exc:
        where = "" if existing == folder else f" (it would be made in {str(existing)!r})"
        raise UsageError(
            f"{option}={str(folder)!r} is not writable{where}: {exc.strerror}; give a folder you can write to"
        ) from None
