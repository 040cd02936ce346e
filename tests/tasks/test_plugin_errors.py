"""A broken plugin is reported with what is wrong and what would be valid: an entry point naming an
object its module lacks, one naming a class that is not a task, a Task whose module class is not a
task module. The other tasks keep working."""

import sys

import pytest

from tzoo.tasks import registry


def add_distribution(root, dist, entry_point, module, source):
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[tzoo.tasks]\n{entry_point}\n")
    (root / f"{module}.py").write_text(source)


@pytest.fixture
def plugin_root(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._reset_for_tests()
    yield tmp_path
    for name in ("ghost_plugin", "classy_plugin", "wrong_plugin"):
        sys.modules.pop(name, None)
    registry._reset_for_tests()


def load_failure(name):
    with pytest.warns(RuntimeWarning, match=rf"tzoo task {name!r}.*failed to load"):
        tasks, failed = registry.list_tasks()
    assert "lm" in {t.name for t in tasks}  # the others keep working
    return {f.name: f for f in failed}[name]


def test_entry_point_naming_a_missing_object(plugin_root):
    add_distribution(plugin_root, "ghost-plugin", "ghost = ghost_plugin:TSK", "ghost_plugin",
                     "from tzoo.tasks.lm.task import TASK as TASK\n")
    failure = load_failure("ghost")
    assert "LookupError" in failure.error and "'TSK'" in failure.error
    assert "must name a tzoo.tasks.registry.Task" in failure.error and "Task objects there: TASK" in failure.error
    with pytest.raises(ValueError, match=r"task 'ghost' failed to load: LookupError: module 'ghost_plugin' has no object 'TSK'"):
        registry.get_task("ghost")


def test_entry_point_naming_a_class_that_is_not_a_task(plugin_root):
    add_distribution(plugin_root, "classy-plugin", "classy = classy_plugin:Model", "classy_plugin",
                     "from tzoo.tasks.lm.module import LanguageModel as Model\n")
    failure = load_failure("classy")
    assert "TypeError" in failure.error and "LanguageModel, a LightningModule, not a task" in failure.error
    assert "must name a tzoo.tasks.registry.Task(name, module=" in failure.error
    with pytest.raises(ValueError, match=r"task 'classy' failed to load: TypeError: it names the class"):
        registry.get_task("classy")


def test_task_whose_module_is_not_a_task_module(plugin_root):
    source = (
        "from tzoo.tasks.lm.data import TextDataModule\n"
        "from tzoo.tasks.registry import Task\n"
        "class NotAModule:\n    pass\n"
        "TASK = Task('wrong', module=NotAModule, datamodule=TextDataModule)\n"
    )
    add_distribution(plugin_root, "wrong-plugin", "wrong = wrong_plugin:TASK", "wrong_plugin", source)
    failure = load_failure("wrong")
    assert "module must be a LightningModule subclass (a tzoo.tasks.base.TaskModule)" in failure.error
    assert "NotAModule" in failure.error
    with pytest.raises(TypeError, match=r"task 'x': module must be a LightningModule subclass .*got <class 'int'>"):
        registry.Task("x", int, int)  # type: ignore[arg-type]
