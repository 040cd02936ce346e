"""The task registry: built-in tasks registered explicitly, third-party ones through entry points.

A task is a name, a LightningModule class, a LightningDataModule class, a default config and a
one-line description. Plugins expose a ``Task`` (or a function returning one) in the entry-point
group ``tzoo.tasks``::

    [project.entry-points."tzoo.tasks"]
    sort = "tzoo_sort:TASK"

A duplicate name is an error. A plugin that fails to load is reported (a warning, and status
``failed`` in ``tzoo tasks``) while every other task keeps working.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import lightning.pytorch as pl

__all__ = ["ENTRY_POINT_GROUP", "Task", "TaskLoadError", "get_task", "list_tasks", "register_task"]

ENTRY_POINT_GROUP = "tzoo.tasks"

# Built-in tasks: name -> module that defines TASK. Imported explicitly, on first use of the registry.
_BUILTINS = {"lm": "tzoo.tasks.lm.task", "decision": "tzoo.tasks.decision.task", "vision": "tzoo.tasks.vision.task", "speech": "tzoo.tasks.speech.task"}


@dataclass(frozen=True)
class Task:
    name: str
    module: type[pl.LightningModule]
    datamodule: type[pl.LightningDataModule]
    config: Path | None = None
    description: str = ""
    source: str = "built-in"

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"task name {self.name!r} must be non-empty letters, digits, '-' or '_'")
        if not (isinstance(self.module, type) and issubclass(self.module, pl.LightningModule)):
            raise TypeError(
                f"task {self.name!r}: module must be a LightningModule subclass (a tzoo.tasks.base.TaskModule), got {self.module!r}"
            )
        if not (isinstance(self.datamodule, type) and issubclass(self.datamodule, pl.LightningDataModule)):
            raise TypeError(f"task {self.name!r}: datamodule must be a LightningDataModule subclass, got {self.datamodule!r}")


@dataclass(frozen=True)
class TaskLoadError:
    """A plugin that could not be loaded: its entry point and what went wrong."""

    name: str
    source: str
    error: str


_tasks: dict[str, Task] = {}
_failed: dict[str, TaskLoadError] = {}
_loaded = False


def register_task(task: Task) -> Task:
    """Add a task; a name already taken is an error (never silently replaced)."""
    if task.name in _tasks:
        other = _tasks[task.name]
        raise ValueError(
            f"a task named {task.name!r} is already registered (from {other.source}); "
            f"cannot register it again from {task.source}"
        )
    _tasks[task.name] = task
    return task


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    # Built-ins load like plugins: one whose import fails (a missing optional dependency, say) is
    # reported and the other tasks keep working.
    for name, module_name in _BUILTINS.items():
        _register_from(name, f"built-in {module_name}", lambda m=module_name: importlib.import_module(m).TASK)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        _register_from(ep.name, f"entry point {ep.name} = {ep.value}", lambda ep=ep: _load_entry_point(ep))


def _load_entry_point(ep: EntryPoint) -> object:
    """``ep.load()``, with an error that says what is missing when the module lacks the object."""
    module = importlib.import_module(ep.module)
    obj: object = module
    for part in (ep.attr or "").split("."):
        if not part:
            continue
        if not hasattr(obj, part):
            tasks = sorted(n for n, v in vars(module).items() if isinstance(v, Task))
            raise LookupError(
                f"module {ep.module!r} has no object {ep.attr!r}; the entry point must name a "
                f"tzoo.tasks.registry.Task in it (or a function returning one), e.g. '{ep.module}:TASK'"
                + (f" (Task objects there: {', '.join(tasks)})" if tasks else "")
            )
        obj = getattr(obj, part)
    return obj


def _register_from(name: str, source: str, load: Callable[[], object]) -> None:
    try:
        obj = load()
        if isinstance(obj, type):  # a class is not a task, even one that could be called
            what = "a LightningModule, not a task" if issubclass(obj, pl.LightningModule) else "not a task"
            raise TypeError(
                f"it names the class {obj.__module__}.{obj.__qualname__}, {what}; it must name a "
                f"tzoo.tasks.registry.Task(name, module=<a TaskModule subclass>, datamodule=...) or a function returning one"
            )
        task = obj() if callable(obj) and not isinstance(obj, Task) else obj
        if not isinstance(task, Task):
            raise TypeError(f"expected a tzoo.tasks.registry.Task (or a function returning one), got {type(task).__name__}: {task!r}")
        if not source.startswith("built-in"):
            task = replace(task, source=source)
        register_task(task)
    except Exception as exc:  # a broken task must not take the others down
        message = f"{type(exc).__name__}: {exc}"
        _failed[name] = TaskLoadError(name, source, message)
        warnings.warn(f"tzoo task {name!r} ({source}) failed to load and is skipped: {message}", RuntimeWarning, stacklevel=3)


def get_task(name: str) -> Task:
    _load()
    if name in _tasks:
        return _tasks[name]
    if name in _failed:
        raise ValueError(f"task {name!r} failed to load: {_failed[name].error}")
    raise ValueError(f"unknown task {name!r}; registered tasks: {', '.join(sorted(_tasks)) or '(none)'}")


def list_tasks() -> tuple[list[Task], list[TaskLoadError]]:
    """Every registered task and every plugin that failed to load."""
    _load()
    return sorted(_tasks.values(), key=lambda t: t.name), sorted(_failed.values(), key=lambda f: f.name)


def _reset_for_tests() -> None:
    global _loaded
    _tasks.clear()
    _failed.clear()
    _loaded = False
