"""Task registry: built-ins, entry-point plugins (a throwaway package made here), broken plugins,
duplicate names, unknown names."""

import sys
import textwrap
import warnings

import pytest

from tzoo.tasks import registry

PLUGIN = '''
import torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset
from tzoo.core import Encoder, TransformerConfig
from tzoo.tasks.base import TaskModule
from tzoo.tasks.config import OptimConfig
from tzoo.tasks.registry import Task


class ToyData(pl.LightningDataModule):
    model_links = ("num_classes",)
    num_classes = 3

    def __init__(self, batch_size: int = 8):
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 5, 16, generator=g)
        return DataLoader(TensorDataset(x, (x.sum((1, 2)) > 0).long()), batch_size=self.batch_size)


class ToyModule(TaskModule):
    task_name = "toy"

    def __init__(self, num_classes: int | None = None, dim: int = 16):
        super().__init__(optim=OptimConfig(lr=1e-3, warmup_steps=1))
        self.save_hyperparameters()
        self.encoder = Encoder(TransformerConfig(dim=dim, depth=1, num_heads=2))
        self.head = torch.nn.Linear(dim, num_classes)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.head(self.encoder(x).mean(1)), y)
        self.log("train/loss", loss)
        return loss


TASK = Task("toy", ToyModule, ToyData, config=CONFIG, description="a throwaway plugin")
'''


def make_distribution(root, dist, entry_points, modules):
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[tzoo.tasks]\n{lines}\n")
    for name, source in modules.items():
        (root / f"{name}.py").write_text(source)


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """Installs throwaway plugin distributions on sys.path and gives a fresh registry."""
    config = tmp_path / "toy.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            model:
              class_path: toy_plugin.ToyModule
            data:
              class_path: toy_plugin.ToyData
            trainer:
              max_steps: 3
              logger: false
              enable_checkpointing: false
              enable_progress_bar: false
              default_root_dir: {tmp_path / "runs"}
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._reset_for_tests()
    yield tmp_path, config
    for name in ("toy_plugin", "broken_plugin", "dup_plugin"):
        sys.modules.pop(name, None)
    registry._reset_for_tests()


def test_builtin_lm_is_registered():
    tasks, _ = registry.list_tasks()
    lm = registry.get_task("lm")
    assert lm in tasks and lm.config is not None and lm.config.is_file()


def test_entry_point_plugin_registers_and_trains(plugins):
    root, config = plugins
    make_distribution(root, "toy-plugin", {"toy": "toy_plugin:TASK"}, {"toy_plugin": f"CONFIG = {str(config)!r}\n" + PLUGIN})
    task = registry.get_task("toy")
    assert task.source.startswith("entry point toy") and task.description == "a throwaway plugin"

    from tzoo.tasks.cli import main

    main(["fit", "--task", "toy"])  # the plugin's default config, through the tzoo CLI
    assert (root / "runs").exists()


def test_broken_plugin_is_reported_and_others_keep_working(plugins):
    root, config = plugins
    make_distribution(root, "toy-plugin", {"toy": "toy_plugin:TASK"}, {"toy_plugin": f"CONFIG = {str(config)!r}\n" + PLUGIN})
    make_distribution(root, "broken-plugin", {"broken": "broken_plugin:TASK"}, {"broken_plugin": "raise RuntimeError('boom at import')\n"})
    with pytest.warns(RuntimeWarning, match=r"task 'broken'.*failed to load.*boom at import"):
        tasks, failed = registry.list_tasks()
    assert {t.name for t in tasks} >= {"lm", "toy"}
    assert [(f.name, "boom at import" in f.error) for f in failed] == [("broken", True)]
    with pytest.raises(ValueError, match=r"task 'broken' failed to load: RuntimeError: boom at import"):
        registry.get_task("broken")


def test_duplicate_name_is_an_error(plugins):
    root, _ = plugins
    make_distribution(root, "dup-plugin", {"lm": "dup_plugin:TASK"}, {"dup_plugin": "from tzoo.tasks.lm.task import TASK\n"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, failed = registry.list_tasks()
    assert "already registered" in failed[0].error and "'lm'" in failed[0].error
    assert any("already registered" in str(w.message) for w in caught)
    lm = registry.get_task("lm")
    with pytest.raises(ValueError, match=r"a task named 'lm' is already registered \(from built-in\)"):
        registry.register_task(lm)


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown task 'nope'; registered tasks: .*lm"):
        registry.get_task("nope")


def test_task_checks_its_classes():
    with pytest.raises(TypeError, match="module must be a LightningModule subclass"):
        registry.Task("x", object, object)  # type: ignore[arg-type]
