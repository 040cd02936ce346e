"""The ``tzoo`` command.

    tzoo fit|validate|test|predict --config configs/<task>/<name>.yaml [--section.key value ...]
    tzoo fit --task NAME [...]        the task's default config (later flags override it)
    tzoo tasks                        registered tasks: name, status, default config, description
    tzoo generate --ckpt FILE ...     sample from a checkpoint of a task that generates (lm)
    tzoo compare DIR...               run cards (run_card.json, written by every fit) side by side
    tzoo check --config FILE          build, step and verify a model configuration before a long run

Model and data are given in subclass mode (``class_path`` / ``init_args``). Values the model needs
from the data (vocabulary size, number of classes, ...) are linked at instantiation: a datamodule
lists them in ``model_links`` and the CLI copies each into the model's arguments. A link the model
cannot take is an error, and a value of the user's own that a link replaces is reported.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch import nn
from jsonargparse import Namespace
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.model_registry import _is_registry

from tzoo.tasks.registry import get_task, list_tasks
from tzoo.tasks.run_card import RunCard
from tzoo.tasks.reliability import add_reliability_defaults, latest_resumable_version, read_checkpoint

__all__ = ["TzooCLI", "main"]

RUNS_DIR = "runs"

TRAINER_DEFAULTS: dict[str, Any] = {"default_root_dir": RUNS_DIR}
_NAMED_CHECKPOINTS = ("last", "best", "hpc")  # Lightning's names for --ckpt_path


def explicit_model_args(argv: list[str]) -> set[str]:
    """The model arguments a command line sets: ``--model.init_args.NAME[=V]`` or ``--model.NAME[=V]``
    -> NAME (nested ones by their first part)."""
    names = set()
    for arg in argv:
        if arg.startswith("--model."):
            key = arg[len("--model.") :].split("=", 1)[0].removeprefix("init_args.")
            if key and key != "class_path":
                names.add(key.split(".", 1)[0])
    return names


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
            raise SystemExit(
                f"tzoo: checkpoint {ckpt_path!r} does not exist: give a checkpoint file (or a sharded checkpoint's "
                f"folder), or 'last' to resume this task's newest run"
            )
        hparams = dict(read_checkpoint(ckpt_path, mmap=True).get("hyper_parameters", {}))
        written_by, wanted = hparams.get("_class_path"), (config.get("model") or {}).get("class_path")
        if written_by and wanted and written_by != wanted:
            raise SystemExit(
                f"tzoo: checkpoint {ckpt_path!r} holds a {written_by.rsplit('.', 1)[-1]} ({written_by}), but this config's "
                f"model is {wanted}: give a checkpoint of that task, or the config the checkpoint was trained with "
                f"(config.yaml in its run folder)"
            )
        hparams.pop("_instantiator", None)
        for name in explicit_model_args(getattr(self, "_argv", [])):
            hparams.pop(name, None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        self.config = self.parser.parse_object({self.config.subcommand: {"model": hparams}}, self.config)

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
        resume_last = self.config.get(str(self.subcommand), self.config).get("ckpt_path") == "last"
        self._resume_from = _add_trainer_defaults(trainer, getattr(self.model, "task_name", "") or "tzoo", resume_last=resume_last)
        add_reliability_defaults(trainer)
        return super().instantiate_trainer(**kwargs)

    def before_fit(self) -> None:
        """Resuming: check that the checkpoint holds this model's weights before the run writes
        anything (its config, hyperparameters and run card would otherwise overwrite those of the
        run being resumed, and then the restore would fail anyway)."""
        ckpt_path = self.config.fit.get("ckpt_path")
        path = getattr(self, "_resume_from", None) if ckpt_path == "last" else Path(ckpt_path) if ckpt_path else None
        if path is None or not path.is_file() or _builds_weights_later(self.model):
            return
        _check_checkpoint_fits(self.model, path, strict=getattr(self.model, "strict_loading", True))


def _instantiate(spec: Namespace) -> Any:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(pl.LightningDataModule, "data", required=True)
    return parser.instantiate(Namespace(data=spec)).data


def _link_data_to_model(data: pl.LightningDataModule, model: Namespace) -> None:
    """Copy ``data.model_links`` values into the model's init_args, loudly."""
    from jsonargparse._util import import_object  # type: ignore[attr-defined]

    names = tuple(getattr(data, "model_links", ()))
    if not names:
        return
    model_cls = import_object(model.class_path)
    params = inspect.signature(model_cls.__init__).parameters
    if model.get("init_args") is None:
        model.init_args = Namespace()
    for name in names:
        if name not in params:
            raise ValueError(
                f"{type(data).__name__} provides {name!r} for the model, but {model_cls.__name__} has no "
                f"parameter {name!r} (its parameters: {', '.join(p for p in params if p != 'self')})"
            )
        value = getattr(data, name)
        given = model.init_args.get(name)
        if given is not None and given != value:
            warnings.warn(
                f"model.init_args.{name}={given!r} from your config is replaced by {value!r}, "
                f"linked from the data ({type(data).__name__}.{name})",
                UserWarning,
                stacklevel=2,
            )
        model.init_args[name] = value


def _builds_weights_later(model: pl.LightningModule) -> bool:
    """Weights made in ``configure_model`` (beyond TaskModule's sharding of existing ones) or lazy
    modules: the model's state before fit is not yet what the checkpoint holds."""
    from tzoo.tasks.base import TaskModule

    own = type(model).configure_model
    if own is not pl.LightningModule.configure_model and own is not TaskModule.configure_model:
        return True
    return any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters())


def _check_checkpoint_fits(model: pl.LightningModule, path: Path, *, strict: bool = True) -> None:
    """SystemExit naming the first difference if the checkpoint's weights are not this model's
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
    raise SystemExit(
        f"tzoo: checkpoint {str(path)!r} does not fit this model ({detail}): it was trained with another configuration "
        f"or other data{hint}. Nothing was written."
    )


def _add_trainer_defaults(trainer: dict[str, Any], task: str, *, resume_last: bool = False) -> Path | None:
    """Loggers and callbacks a user expects, unless the config chose its own (or turned them off):
    CSV + TensorBoard logs in <default_root_dir>/<task>/version_N (one N for both; left alone the
    two loggers pick their versions independently and can disagree), a learning-rate monitor, a
    rich progress bar and a checkpoint callback that also keeps ``last.ckpt``. With ``resume_last``
    (``--ckpt_path last``) the loggers continue the newest version that has a ``last.ckpt``, which
    is where Lightning then finds it. Returns that ``last.ckpt`` (None when not resuming one)."""
    callbacks = list(trainer.get("callbacks") or [])
    resume_from = None
    if trainer.get("logger") in (None, True):
        root = Path(trainer.get("default_root_dir") or RUNS_DIR)
        taken = [p.name.removeprefix("version_") for p in (root / task).glob("version_*")]
        version = latest_resumable_version(root, task) if resume_last else None
        if version is not None:  # as Lightning resolves "last": the newest last*.ckpt there
            found = (root / task / f"version_{version}" / "checkpoints").glob("last*.ckpt")
            resume_from = max((p for p in found if p.is_file()), key=lambda p: p.stat().st_mtime, default=None)
        else:
            version = max((int(v) for v in taken if v.isdigit()), default=-1) + 1
        trainer["logger"] = [CSVLogger(root, name=task, version=version), TensorBoardLogger(root, name=task, version=version)]
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(RichProgressBar())
    if trainer.get("enable_checkpointing") is not False and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        callbacks.append(ModelCheckpoint(save_last=True))
    if not any(isinstance(c, RunCard) for c in callbacks):  # run_card.json/.md in the log directory
        callbacks.append(RunCard())
    trainer["callbacks"] = callbacks
    return resume_from


def _expand_task(args: list[str]) -> list[str]:
    """``--task NAME`` (or ``--task=NAME``) -> ``--config <that task's default config>``, in place,
    so flags after it still override the config."""
    out = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--task" or arg.startswith("--task="):
            if arg == "--task":
                if i + 1 >= len(args):
                    raise SystemExit("tzoo: --task needs a task name (see `tzoo tasks`)")
                name, i = args[i + 1], i + 2
            else:
                name, i = arg.split("=", 1)[1], i + 1
            task = get_task(name)
            if task.config is None:
                raise SystemExit(f"tzoo: task {name!r} has no default config; use --config FILE")
            out += ["--config", str(task.config)]
            continue
        out.append(arg)
        i += 1
    return out


def _print_tasks() -> None:
    tasks, failed = list_tasks()
    rows = [("name", "status", "default config", "description")]
    rows += [(t.name, "ok", str(t.config or "-"), t.description) for t in tasks]
    rows += [(f.name, "failed", "-", f"{f.source}: {f.error}") for f in failed]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])


def _check_config_files(args: list[str]) -> None:
    for i, arg in enumerate(args):
        path = args[i + 1] if arg in ("--config", "-c") and i + 1 < len(args) else arg.split("=", 1)[1] if arg.startswith("--config=") else None
        if path is not None and not Path(path).is_file():
            raise SystemExit(f"tzoo: config file {path!r} does not exist (try one under configs/, or `tzoo tasks`)")


_WRAPPERS = ("Does not validate against any of the Union subtypes", "Problem with given class_path")


def _is_wrapper(exc: BaseException) -> bool:
    return any(marker in str(exc) for marker in _WRAPPERS)


def _root_cause(exc: BaseException) -> str:
    """The model's or data's own message, not jsonargparse's wrappers around it ("Does not validate
    against any of the Union subtypes ...", "Problem with given class_path ..."): follows the
    chain down from the wrappers to the first exception that is not one, honouring ``from None``."""
    inner: BaseException = exc
    while _is_wrapper(inner):
        nxt = inner.__cause__ if inner.__cause__ is not None else None if inner.__suppress_context__ else inner.__context__
        if nxt is None:
            break
        inner = nxt
    return str(inner)


def main(args: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage:\n" + __doc__.split("\n\n")[1].rstrip() + "\n\n`tzoo SUBCOMMAND --help` for a subcommand's options")
        return
    if argv[:1] == ["tasks"]:
        _print_tasks()
        return
    if argv[:1] == ["generate"]:
        from tzoo.tasks.generate import generate_main

        generate_main(argv[1:])
        return
    if argv[:1] == ["compare"]:
        from tzoo.tasks.run_card import compare_main

        compare_main(argv[1:])
        return
    if argv[:1] == ["check"]:
        from tzoo.tasks.check import check_main

        check_main(argv[1:])
        return
    try:
        argv = _expand_task(argv)
    except ValueError as exc:
        raise SystemExit(f"tzoo: {exc}") from None
    _check_config_files(argv)
    try:
        TzooCLI(args=argv)
    except (ValueError, TypeError) as exc:
        if _WRAPPERS[0] not in str(exc):
            raise
        # a model or data module refused its arguments while being built: its own message, without
        # jsonargparse's wrapper and traceback (nothing has run yet)
        raise SystemExit(f"tzoo: the configuration does not build: {_root_cause(exc)}") from None


if __name__ == "__main__":
    main()
