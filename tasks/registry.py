"""The task registry: built-in tasks registered explicitly, third-party ones through entry points.

A task is a name, a LightningModule class, a LightningDataModule class, a default config and a
one-line description. The two classes may be given by dotted path (``"pkg.module.Class"``): they are
imported on first use of ``task.module`` / ``task.datamodule``, so reading what tasks exist (``tzoo
tasks``, ``tzoo fit --task NAME``) imports neither Lightning nor any task's code. Each built-in
task's ``task.py`` holds its ``TASK`` that way. Plugins expose a ``Task`` (or a function returning
one) in the entry-point group ``tzoo.tasks``, best from a module as light as that::

    [project.entry-points."tzoo.tasks"]
    sort = "tzoo_sort.task:TASK"

    # tzoo_sort/task.py
    TASK = Task("sort", module="tzoo_sort.module.SortModule", datamodule="tzoo_sort.data.SortData",
                config=Path(__file__).with_name("sort.yaml"), description="...")

A duplicate name is an error. A plugin that fails to load is reported (a warning, and status
``failed`` in ``tzoo tasks``) while every other task keeps working; a class path that does not
import is reported by ``tzoo tasks --check`` and by the first use of the class.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = ["ENTRY_POINT_GROUP", "Task", "TaskLoadError", "get_task", "list_tasks", "register_task"]

ENTRY_POINT_GROUP = "tzoo.tasks"

# Built-in tasks: name -> module that defines TASK. Imported explicitly, on first use of the registry.
_BUILTINS = {"lm": "tzoo.tasks.lm.task", "decision": "tzoo.tasks.decision.task", "vision": "tzoo.tasks.vision.task", "speech": "tzoo.tasks.speech.task", "bert": "tzoo.tasks.bert.task"}

_KINDS = {"module": ("LightningModule", "a LightningModule subclass (a tzoo.tasks.base.TaskModule)"),
          "datamodule": ("LightningDataModule", "a LightningDataModule subclass")}  # fmt: skip


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_class(task: str, kind: str, obj: object) -> type:
    """``obj`` as the task's ``kind`` class, or a TypeError naming the task and what is wanted."""
    import lightning.pytorch as pl

    base_name, wanted = _KINDS[kind]
    if not (isinstance(obj, type) and issubclass(obj, getattr(pl, base_name))):
        raise TypeError(f"task {task!r}: {kind} must be {wanted}, got {obj!r}")
    return obj


def _import_path(task: str, kind: str, path: str) -> type:
    """``"pkg.mod.Class"`` or ``"pkg.mod:Class"`` -> the class, checked; ImportError naming the task."""
    module_name, _, attr = path.rpartition(":") if ":" in path else path.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"task {task!r}: its {kind} class {path!r} does not import: {type(exc).__name__}: {exc}") from exc
    return _check_class(task, kind, obj)


class Task:
    """A registered task. ``module`` and ``datamodule`` are classes, or their dotted paths
    (imported and checked on first use, so that listing tasks imports none of their code)."""

    __slots__ = ("name", "config", "description", "source", "_given", "_classes")

    def __init__(
        self,
        name: str,
        module: type[pl.LightningModule] | str,
        datamodule: type[pl.LightningDataModule] | str,
        config: Path | str | None = None,
        description: str = "",
        source: str = "built-in",
    ) -> None:
        if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"task name {name!r} must be non-empty letters, digits, '-' or '_'")
        self.name, self.description, self.source = name, description, source
        self.config = Path(config) if config is not None else None
        self._given: dict[str, type | str] = {"module": module, "datamodule": datamodule}
        self._classes: dict[str, type] = {}
        for kind, value in self._given.items():
            if isinstance(value, str):
                if "." not in value.replace(":", "."):
                    raise ValueError(f"task {name!r}: {kind} {value!r} is not a dotted path such as 'package.module.Class'")
            else:  # a class given directly is checked now
                self._classes[kind] = _check_class(name, kind, value)

    def _resolve(self, kind: str) -> type:
        if kind not in self._classes:
            self._classes[kind] = _import_path(self.name, kind, str(self._given[kind]))
        return self._classes[kind]

    @property
    def module(self) -> type[pl.LightningModule]:
        """The task's LightningModule class (imported on first use when given by path)."""
        return self._resolve("module")

    @property
    def datamodule(self) -> type[pl.LightningDataModule]:
        """The task's LightningDataModule class (imported on first use when given by path)."""
        return self._resolve("datamodule")

    @property
    def module_path(self) -> str:
        """``pkg.mod.Class`` of the module class, without importing it."""
        given = self._given["module"]
        return given.replace(":", ".") if isinstance(given, str) else _class_path(given)

    @property
    def datamodule_path(self) -> str:
        given = self._given["datamodule"]
        return given.replace(":", ".") if isinstance(given, str) else _class_path(given)

    def with_source(self, source: str) -> Task:
        task = Task(self.name, self._given["module"], self._given["datamodule"], self.config, self.description, source)
        task._classes.update(self._classes)
        return task

    def __repr__(self) -> str:
        return (f"Task(name={self.name!r}, module={self.module_path!r}, datamodule={self.datamodule_path!r}, "
                f"config={self.config!r}, description={self.description!r}, source={self.source!r})")  # fmt: skip


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
    # Built-ins load like plugins: one whose registration fails is reported and the others keep working.
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


def _not_a_task(cls: type) -> TypeError:
    import lightning.pytorch as pl

    what = "a LightningModule, not a task" if issubclass(cls, pl.LightningModule) else "not a task"
    return TypeError(
        f"it names the class {cls.__module__}.{cls.__qualname__}, {what}; it must name a "
        f"tzoo.tasks.registry.Task(name, module=<a TaskModule subclass or its dotted path>, datamodule=...) "
        f"or a function returning one"
    )


def _register_from(name: str, source: str, load: Callable[[], object]) -> None:
    try:
        obj = load()
        if isinstance(obj, type):  # a class is not a task, even one that could be called
            raise _not_a_task(obj)
        task = obj() if callable(obj) and not isinstance(obj, Task) else obj
        if not isinstance(task, Task):
            raise TypeError(f"expected a tzoo.tasks.registry.Task (or a function returning one), got {type(task).__name__}: {task!r}")
        if not source.startswith("built-in"):
            task = task.with_source(source)
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


def check_task(task: Task) -> str | None:
    """Import the task's classes: None when both import and are the right kind, else what failed."""
    try:
        task.module, task.datamodule  # noqa: B018 - imported and checked on access
    except (ImportError, TypeError) as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a task module that fails while being imported
        return f"task {task.name!r}: importing its classes failed: {type(exc).__name__}: {exc}"
    return None


def _reset_for_tests() -> None:
    global _loaded
    _tasks.clear()
    _failed.clear()
    _loaded = False
