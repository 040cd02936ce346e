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
import torch
from jsonargparse import Namespace
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.cli import LightningCLI

from tzoo.tasks.registry import get_task, list_tasks
from tzoo.tasks.run_card import RunCard
from tzoo.tasks.reliability import add_reliability_defaults, latest_resumable_version, read_checkpoint

__all__ = ["TzooCLI", "main"]

RUNS_DIR = "runs"

TRAINER_DEFAULTS: dict[str, Any] = {"default_root_dir": RUNS_DIR}


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
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Lay --ckpt_path's hyperparameters over the model config (as LightningCLI does: a training
        config rebuilds the trained model), except the model arguments given explicitly on the
        command line (``--model.init_args.beam_size=8``, ``--model.tta_hflip true``): those are the
        user's test-time settings and win. The checkpoint is read with weights_only=True before the
        trainer exists; on failure, read_checkpoint says why (unsafe, truncated, ...) and names it."""
        if not self.config.get("subcommand"):
            return
        ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        try:
            hparams = dict(torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {}))
        except Exception:
            read_checkpoint(ckpt_path)
            raise
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
        _add_trainer_defaults(trainer, getattr(self.model, "task_name", "") or "tzoo", resume_last=resume_last)
        add_reliability_defaults(trainer)
        return super().instantiate_trainer(**kwargs)


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


def _add_trainer_defaults(trainer: dict[str, Any], task: str, *, resume_last: bool = False) -> None:
    """Loggers and callbacks a user expects, unless the config chose its own (or turned them off):
    CSV + TensorBoard logs in <default_root_dir>/<task>/version_N (one N for both; left alone the
    two loggers pick their versions independently and can disagree), a learning-rate monitor, a
    rich progress bar and a checkpoint callback that also keeps ``last.ckpt``. With ``resume_last``
    (``--ckpt_path last``) the loggers continue the newest version that has a ``last.ckpt``, which
    is where Lightning then finds it."""
    callbacks = list(trainer.get("callbacks") or [])
    if trainer.get("logger") in (None, True):
        root = Path(trainer.get("default_root_dir") or RUNS_DIR)
        taken = [p.name.removeprefix("version_") for p in (root / task).glob("version_*")]
        version = latest_resumable_version(root, task) if resume_last else None
        if version is None:
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
        path = args[i + 1] if arg == "--config" and i + 1 < len(args) else arg.split("=", 1)[1] if arg.startswith("--config=") else None
        if path is not None and not Path(path).is_file():
            raise SystemExit(f"tzoo: config file {path!r} does not exist (try one under configs/, or `tzoo tasks`)")


def main(args: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
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
    TzooCLI(args=argv)


if __name__ == "__main__":
    main()
