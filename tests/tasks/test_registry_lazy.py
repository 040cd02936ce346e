"""Tasks named by dotted path: listing them imports none of their code, the classes import on first
use, and a path that does not import (or names the wrong kind of class) is reported naming the task,
the path and what would be valid — by `tzoo tasks --check` and by the first use."""

import sys

import pytest

from tzoo.tasks import registry
from tzoo.tasks.cli import main
from tzoo.tasks.registry import Task

LIGHT_PLUGIN = """
from tzoo.tasks.registry import Task
TASK = Task("lazy", module="lazy_plugin_code.Module", datamodule="lazy_plugin_code.Data", description="a light registration")
BROKEN = Task("gone", module="lazy_plugin_code.Missing", datamodule="lazy_plugin_code.Data")
"""

CODE = """
import lightning.pytorch as pl
class Module(pl.LightningModule):
    pass
class Data(pl.LightningDataModule):
    pass
"""


@pytest.fixture
def light_plugins(tmp_path, monkeypatch):
    info = tmp_path / "lazy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lazy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tzoo.tasks]\nlazy = lazy_plugin:TASK\ngone = lazy_plugin:BROKEN\n")
    (tmp_path / "lazy_plugin.py").write_text(LIGHT_PLUGIN)
    (tmp_path / "lazy_plugin_code.py").write_text(CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._reset_for_tests()
    yield
    for name in ("lazy_plugin", "lazy_plugin_code"):
        sys.modules.pop(name, None)
    registry._reset_for_tests()


def test_listing_reads_metadata_without_importing_the_classes(light_plugins):
    task = registry.get_task("lazy")
    assert task.description == "a light registration" and task.source == "entry point lazy = lazy_plugin:TASK"
    assert task.module_path == "lazy_plugin_code.Module" and "lazy_plugin_code" not in sys.modules
    assert task.module.__name__ == "Module" and task.datamodule.__name__ == "Data"  # imported now
    assert "lazy_plugin_code" in sys.modules


def test_tasks_lists_a_bad_path_as_ok_and_check_reports_it(light_plugins, capsys):
    main(["tasks"])
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["gone"].split()[1] == "ok" and rows["lazy"].split()[1] == "ok"
    main(["tasks", "--check"])
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["lazy"].split()[1] == "ok" and rows["lm"].split()[1] == "ok"
    assert rows["gone"].split()[1] == "failed"
    assert "task 'gone': its module class 'lazy_plugin_code.Missing' does not import" in rows["gone"]
    assert "has no attribute 'Missing'" in rows["gone"]


def test_first_use_of_a_bad_path_names_the_task_and_the_path(light_plugins):
    with pytest.raises(ImportError, match=r"task 'gone': its module class 'lazy_plugin_code\.Missing' does not import"):
        registry.get_task("gone").module
    task = Task("nomod", module="no_such_package.Model", datamodule="lazy_plugin_code.Data")
    with pytest.raises(ImportError, match=r"'no_such_package\.Model' does not import: ModuleNotFoundError: No module named 'no_such_package'"):
        task.module


def test_a_path_to_the_wrong_kind_of_class_is_refused_on_use(light_plugins):
    task = Task("swapped", module="lazy_plugin_code.Data", datamodule="lazy_plugin_code.Module")
    with pytest.raises(TypeError, match=r"task 'swapped': module must be a LightningModule subclass .*got <class 'lazy_plugin_code\.Data'>"):
        task.module
    with pytest.raises(TypeError, match=r"task 'swapped': datamodule must be a LightningDataModule subclass, got <class 'lazy_plugin_code\.Module'>"):
        task.datamodule


def test_a_class_path_must_be_dotted():
    with pytest.raises(ValueError, match=r"task 'x': module 'Model' is not a dotted path such as 'package\.module\.Class'"):
        Task("x", module="Model", datamodule="a.B")


def test_builtin_classes_resolve_to_the_modules_classes():
    from tzoo.tasks.lm.data import TextDataModule
    from tzoo.tasks.lm.module import LanguageModel

    lm = registry.get_task("lm")
    assert lm.module is LanguageModel and lm.datamodule is TextDataModule
    assert lm.module_path == "tzoo.tasks.lm.module.LanguageModel"
    for task in registry.list_tasks()[0]:  # every built-in's paths import and are the right kind
        assert registry.check_task(task) is None, task.name
