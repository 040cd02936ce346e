"""The ``tzoo`` command.

    tzoo fit|validate|test|predict --config configs/<task>/<name>.yaml [--section.key value ...]
    tzoo fit --task NAME [...]        the task's default config (later flags override it)
    tzoo tasks [--check]              registered tasks: name, status, default config, description
    tzoo generate --ckpt FILE ...     sample from a checkpoint of a task that generates (lm)
    tzoo compare DIR...               run cards (run_card.json, written by every fit) side by side
    tzoo check --config FILE          build, step and verify a model configuration before a long run
    tzoo export CKPT --to FORMAT OUT  a checkpoint's weights as an HF folder (lm, decision), timm (vision), safetensors
    tzoo ... --traceback              a one-line `tzoo: error:` with its traceback (or TZOO_TRACEBACK=1)

Model and data are given in subclass mode (``class_path`` / ``init_args``). Values the model needs
from the data (vocabulary size, number of classes, ...) are linked at instantiation: a datamodule
lists them in ``model_links`` and the CLI copies each into the model's arguments. A link the model
cannot take is an error, and a value of the user's own that a link replaces is reported.

This module is the command's entry point and imports neither Lightning nor torch: ``tzoo --help``,
``tzoo tasks``, ``tzoo compare`` and the ``--help`` of ``generate`` and ``check`` answer at once. The Lightning subcommands live in
``tzoo.tasks.lightning_cli`` (imported when one runs); its public names are also reachable here
(``from tzoo.tasks.cli import TzooCLI``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import linecache
import os
import sys
import traceback
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tzoo.tasks.registry import check_task, get_task, list_tasks

if TYPE_CHECKING:
    from tzoo.tasks.lightning_cli import TzooCLI

__all__ = ["TzooCLI", "UsageError", "main"]

SUBCOMMANDS = ("fit", "validate", "test", "predict", "tasks", "generate", "compare", "check", "export")
_LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

# Names of tzoo.tasks.lightning_cli reachable from here, imported on first use (Lightning with them).
_LIGHTNING_NAMES = (
    "RUNS_DIR", "TRAINER_DEFAULTS", "TzooCLI", "explicit_model_args", "link_target", "_add_trainer_defaults",
    "_builds_weights_later", "_check_checkpoint_fits", "_link_data_to_model",
)  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LIGHTNING_NAMES:
        return getattr(importlib.import_module("tzoo.tasks.lightning_cli"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class UsageError(Exception):
    """A bad command line, config value or input file that tzoo recognises. ``main`` ends the run
    with one line, ``tzoo: error: <message>``, and exit status 2 (argparse's status for a bad
    option); the message names the value and what would be valid."""


def _import_class(path: str | None) -> type | None:
    from jsonargparse._util import import_object  # type: ignore[attr-defined]

    try:
        return import_object(path) if path else None
    except Exception:  # noqa: BLE001 - a class that is gone: the checkpoint check reports it later
        return None


def expand_task(args: list[str]) -> list[str]:
    """``--task NAME`` (or ``--task=NAME``) -> ``--config <that task's default config>``, in place,
    so flags after it still override the config. ``--task`` with ``--config`` (or a second
    ``--task``) is refused: the files would be layered in command-line order, so another task's
    config, or the task's defaults over the user's own settings, would win without a word."""
    out: list[str] = []
    configs, tasks = _config_paths(args), []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--task" or arg.startswith("--task="):
            if arg == "--task":
                if i + 1 >= len(args):
                    raise UsageError("--task needs a task name (see `tzoo tasks`)")
                name, i = args[i + 1], i + 2
            else:
                name, i = arg.split("=", 1)[1], i + 1
            try:
                task = get_task(name)
            except ValueError as exc:  # unknown task: the registry lists the valid ones
                raise UsageError(str(exc)) from None
            if task.config is None:
                raise UsageError(f"task {name!r} has no default config; use --config FILE")
            given = [f"--task {t}" for t in tasks] + [f"--config {c}" for c in configs]
            if given:
                raise UsageError(
                    f"--task {name} cannot be combined with {given[0]}: --task {name} stands for --config {task.config}, "
                    f"and which file's settings win would depend on their order; give --config files only "
                    f"(later ones override earlier ones), or --task with --section.key overrides"
                )
            tasks.append(name)
            out += ["--config", str(task.config)]
            continue
        out.append(arg)
        i += 1
    return out


def _print_tasks(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="tzoo tasks", description="List the registered tasks: name, status, default config, description.")
    parser.add_argument("--check", action="store_true", help="also import each task's module and data classes and report those that fail (slower: imports Lightning and every task)")
    check = parser.parse_args(argv).check
    tasks, failed = list_tasks()
    rows = [("name", "status", "default config", "description")]
    for task in tasks:
        problem = check_task(task) if check else None
        rows.append((task.name, "ok", str(task.config or "-"), task.description) if problem is None else (task.name, "failed", "-", problem))
    rows += [(f.name, "failed", "-", f"{f.source}: {f.error}") for f in failed]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])


def _config_paths(args: list[str]) -> list[str]:
    """The files given as ``--config FILE``, ``-c FILE`` or ``--config=FILE``, in order."""
    paths = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            paths.append(args[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def check_config_files(args: list[str]) -> None:
    """Each config file exists, is a file and is YAML (an error names the file and the line), and
    together they configure one task's model."""
    models: list[tuple[str, str]] = []  # (file, its model's class_path)
    for path in _config_paths(args):
        document = _read_config(path)
        model = document.get("model") if isinstance(document, dict) else None
        class_path = model.get("class_path") if isinstance(model, dict) else model
        if isinstance(class_path, str):
            models.append((path, class_path))
    for path, class_path in models[1:]:
        first, first_class = models[0]
        if class_path != first_class:
            raise UsageError(
                f"--config {first} configures {_describe_model(first_class)} but --config {path} configures "
                f"{_describe_model(class_path)}: one run trains one model; give the configs of one task"
            )
    check_model_keys(args, models[-1][1] if models else None)


def check_model_keys(args: list[str], class_path: str | None) -> None:
    """Every nested model key of the command line and the config files names a field that exists:
    ``--model.init_args.net.transformer.windw 4`` is a UsageError naming ``windw`` and listing the
    fields of ``net.transformer`` (jsonargparse's own refusal is a page of usage)."""
    for arg in args:  # --model=CLASS or --model.class_path=CLASS on the command line wins
        key, _, value = arg.partition("=")
        if key in ("--model", "--model.class_path") and value and not value.lstrip().startswith("{"):
            class_path = value
    model_cls = _import_class(class_path)
    if model_cls is None:
        return
    for path in _config_paths(args):
        document = _read_config(path)
        init_args = (document.get("model") or {}).get("init_args") if isinstance(document, dict) else None
        for key in _dotted_keys(init_args or {}):
            _check_model_key(model_cls, key, where=f"--config {path}: model.init_args")
    for arg in args:
        key = arg.split("=", 1)[0]
        if key.startswith("--model.init_args."):
            _check_model_key(model_cls, key.removeprefix("--model.init_args."), where="--model.init_args")


def _dotted_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        keys += _dotted_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return keys


def _check_model_key(model_cls: type, dotted: str, *, where: str) -> None:
    """Walks ``a.b.c`` through the model's parameters and its config dataclasses' fields."""
    from tzoo.tasks.config import _dataclass_in, config_fields

    first, *rest = dotted.split(".")
    try:
        hints = typing.get_type_hints(model_cls.__init__)
    except Exception:  # noqa: BLE001 - unresolvable annotations: jsonargparse will judge
        return
    node = _dataclass_in(hints.get(first))
    path = first
    for part in rest:
        if node is None:  # a parameter that is not a config: a dict argument, a subclass spec ...
            return
        fields = config_fields(node)
        if part not in fields:
            raise UsageError(
                f"{where}.{path} has no field {part!r} (valid fields of {node.__name__}: {', '.join(fields)})"
            )
        node, path = _dataclass_in(fields[part]), f"{path}.{part}"


def _read_config(path: str) -> Any:
    import yaml

    file = Path(path)
    if file.is_dir():
        examples = sorted(p.name for p in file.glob("*.y*ml"))[:3]
        hint = f" such as {', '.join(examples)}" if examples else ""
        raise UsageError(f"--config {path!r} is a folder, not a config file: give a YAML file{hint}")
    if not file.is_file():
        raise UsageError(f"config file {path!r} does not exist (try one under configs/, or `tzoo tasks`)")
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"config file {path!r} is not UTF-8 text (byte {raw[exc.start : exc.start + 1]!r} at offset {exc.start}); "
            f"a config is a YAML text file"
        ) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        after = f" ({context} that starts at line {start.line + 1})" if context and start is not None else ""
        raise UsageError(f"config file {path!r} is not valid YAML{where}: {problem}{after}") from None
    if document is not None and not isinstance(document, dict):
        raise UsageError(
            f"config file {path!r} holds a {type(document).__name__} at its top level, not sections "
            f"(trainer:, model:, data:, ...)"
        )
    return document


def _describe_model(class_path: str) -> str:
    """'the 'lm' task's model (LanguageModel)', or the class path of a model no task registers."""
    for task in list_tasks()[0]:
        if task.module_path == class_path:
            return f"the {task.name!r} task's model ({class_path.rsplit('.', 1)[-1]})"
    return class_path


_WRAPPERS = ("Does not validate against any of the Union subtypes", "Problem with given class_path")


def _is_wrapper(exc: BaseException) -> bool:
    return any(marker in str(exc) for marker in _WRAPPERS)


def root_cause(exc: BaseException) -> str:
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


_OWN_CODE = (Path(__file__).resolve().parent, Path(__file__).resolve().parent.parent / "core")


def _input_error(exc: BaseException) -> str | None:
    """The one-line message for an error about the user's input, None for anything else (whose
    traceback stays): a UsageError; a model or data module refusing its arguments while being built
    (its own message, without jsonargparse's wrappers); a ValueError or OSError that a ``raise``
    statement in tzoo's own code raised (bad input, by the house style, names the value and what
    would be valid; an error some library or a Python operation raised is not one of these)."""
    if isinstance(exc, UsageError):
        return str(exc)
    if isinstance(exc, (ValueError, TypeError)) and _is_wrapper(exc):
        return f"the configuration does not build: {root_cause(exc)}"
    if isinstance(exc, (ValueError, OSError)) and _raised_by_tzoo(exc):
        return str(exc)
    return None


def _raised_by_tzoo(exc: BaseException) -> bool:
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    file = Path(tb.tb_frame.f_code.co_filename).resolve()
    if not any(file.is_relative_to(folder) for folder in _OWN_CODE):
        return False
    return linecache.getline(str(file), tb.tb_lineno).lstrip().startswith("raise")


TRACEBACK_FLAG, TRACEBACK_ENV = "--traceback", "TZOO_TRACEBACK"


def wants_traceback(args: list[str]) -> tuple[bool, list[str]]:
    """(show the traceback of a one-line error?, the arguments without ``--traceback``): the flag
    anywhere on the command line (no tzoo option takes it as a value), or ``TZOO_TRACEBACK`` set to
    anything but empty, ``0``, ``false`` or ``no``."""
    env = os.environ.get(TRACEBACK_ENV, "").strip().lower() not in ("", "0", "false", "no")
    return env or TRACEBACK_FLAG in args, [a for a in args if a != TRACEBACK_FLAG]


def main(args: list[str] | None = None) -> None:
    """The ``tzoo`` command. A bad input it recognises ends it with one line on stderr,
    ``tzoo: error: <message>``, and exit status 2; with ``--traceback`` (or ``TZOO_TRACEBACK=1``)
    the traceback comes first. Any other exception keeps its traceback."""
    show_traceback, argv = wants_traceback(list(sys.argv[1:] if args is None else args))
    try:
        _main(argv)
    except Exception as exc:
        message = _input_error(exc)
        if message is None:
            raise
        if show_traceback:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"tzoo: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


_NULLS = ("null", "Null", "NULL", "~")  # YAML's nulls: "none" is a value (net.position none)


def nested_nulls(args: list[str]) -> list[str]:
    """``--model.init_args.net.transformer.window=null`` -> ``--model {"init_args": {"net":
    {"transformer": {"window": null}}}}``: jsonargparse (4.53) turns a null given to a nested field
    of a subclass's argument into the string "None" and refuses it; the same value given as a
    nested dict merges into the config as intended."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        key, value, used = arg, None, 1
        if "=" in arg:
            key, value = arg.split("=", 1)
        elif i + 1 < len(args):
            value, used = args[i + 1], 2
        head, _, rest = key.partition(".init_args.")
        if head in ("--model", "--data") and "." in rest and value in _NULLS:
            nested: Any = None
            for part in reversed(rest.split(".")):
                nested = {part: nested}
            out += [head, json.dumps({"init_args": nested})]
            i += used
            continue
        out.append(arg)
        i += 1
    return out


def _main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage:\n" + __doc__.split("\n\n")[1].rstrip() + "\n\n`tzoo SUBCOMMAND --help` for a subcommand's options")
        return
    if argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        raise UsageError(f"unknown subcommand {argv[0]!r}; the subcommands are {', '.join(SUBCOMMANDS)} (`tzoo --help`)")
    if argv[:1] == ["tasks"]:
        _print_tasks(argv[1:])
        return
    if argv[:1] == ["generate"]:
        from tzoo.tasks.generate import generate_main

        generate_main(argv[1:])
        return
    if argv[:1] == ["compare"]:
        from tzoo.tasks.compare import compare_main

        compare_main(argv[1:])
        return
    if argv[:1] == ["check"]:
        from tzoo.tasks.check import check_main

        check_main(argv[1:])
        return
    if argv[:1] == ["export"]:
        from tzoo.tasks.export import export_main

        export_main(argv[1:])
        return
    argv = nested_nulls(expand_task(argv))
    check_config_files(argv)
    from tzoo.tasks.lightning_cli import TzooCLI

    TzooCLI(args=argv)


if __name__ == "__main__":
    # `python -m tzoo.tasks.cli`: run the imported module's main, so that the UsageError the other
    # modules raise (tzoo.tasks.cli.UsageError) is the class main() recognises, not __main__'s copy
    from tzoo.tasks.cli import main as _main_of_the_module

    _main_of_the_module()
