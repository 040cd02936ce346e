"""The ``tzoo`` command.

    tzoo fit|validate|test|predict --config configs/<task>/<name>.yaml [--section.key value ...]
    tzoo fit --task NAME [...]        the task's default config (later flags override it)
    tzoo tasks                        registered tasks: name, status, default config, description
    tzoo generate --ckpt FILE ...     sample from a checkpoint of a task that generates (lm)

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
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI

from tzoo.tasks.registry import get_task, list_tasks

__all__ = ["TzooCLI", "main"]

RUNS_DIR = "runs"

TRAINER_DEFAULTS: dict[str, Any] = {
    "default_root_dir": RUNS_DIR,
    "logger": [
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": RUNS_DIR, "name": "tzoo"}},
        {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": RUNS_DIR, "name": "tzoo"}},
    ],
    "callbacks": [
        {"class_path": "lightning.pytorch.callbacks.RichProgressBar"},
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "step"}},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
    ],
}


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

    def before_instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand), self.config)
        _name_default_loggers(config)

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


def _instantiate(spec: Namespace) -> Any:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(pl.LightningDataModule, "data", required=True)
    return parser.instantiate_classes(Namespace(data=spec)).data


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


def _name_default_loggers(config: Namespace) -> None:
    """Default loggers write to runs/<task>/version_N rather than runs/tzoo/version_N."""
    from jsonargparse._util import import_object  # type: ignore[attr-defined]

    model = config.get("model")
    loggers = config.get("trainer", Namespace()).get("logger")
    if model is None or not isinstance(loggers, list):
        return
    task = getattr(import_object(model.class_path), "task_name", "") or "tzoo"
    for logger in loggers:
        init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
        if init_args is not None and init_args.get("name") == "tzoo":
            init_args["name"] = task


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
    try:
        argv = _expand_task(argv)
    except ValueError as exc:
        raise SystemExit(f"tzoo: {exc}") from None
    _check_config_files(argv)
    TzooCLI(args=argv)


if __name__ == "__main__":
    main()
