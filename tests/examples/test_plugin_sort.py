"""The third-party plugin in examples/plugin_sort: its set encoder is permutation-equivariant, and
once pip-installed it is listed by `tzoo tasks` and trains through `tzoo fit --task sort`."""

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tzoo.tasks import registry

PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "plugin_sort"


@pytest.fixture
def sort_source(monkeypatch):
    """tzoo_sort importable from the example folder, without installing it."""
    monkeypatch.syspath_prepend(str(PLUGIN))
    yield
    for name in [m for m in sys.modules if m == "tzoo_sort" or m.startswith("tzoo_sort.")]:
        del sys.modules[name]


def test_permuting_the_set_permutes_the_encoder_output(sort_source):
    from tzoo.core import TransformerConfig
    from tzoo_sort.model import SetSorter, SortConfig

    torch.manual_seed(0)
    stack = dict(dim=32, depth=2, num_heads=4)
    model = SetSorter(SortConfig(32, encoder=TransformerConfig(**stack), decoder=TransformerConfig(**stack, position="rope"))).eval()
    numbers = torch.rand(4, 32).argsort(1)[:, :8]  # (B, N) distinct values
    perm = torch.randperm(8)
    with torch.no_grad():
        encoded = model.encode(numbers)  # (B, N, D)
        assert torch.allclose(model.encode(numbers[:, perm]), encoded[:, perm], atol=1e-5)
        # ...so the decoder, which sees the set only through cross-attention, gives the same logits
        ordered = numbers.sort(1).values
        assert torch.allclose(model(numbers[:, perm], ordered), model(numbers, ordered), atol=1e-5)


def test_sort_data_rejects_a_set_larger_than_its_values(sort_source):
    from tzoo_sort.task import SortData

    with pytest.raises(ValueError, match=r"set_size=9 must be between 1 and num_values=8"):
        SortData(num_values=8, set_size=9)


def test_the_module_takes_its_config_and_gets_the_checkpoint_stamp_check_from_taskmodule(sort_source):
    from tzoo_sort.task import SortModule

    stacks = {"encoder": {"dim": 16, "num_heads": 2}, "decoder": {"dim": 16, "num_heads": 2, "position": "rope", "window": 2}}
    module = SortModule({"num_values": 8, **stacks})  # as a checkpoint holds it
    assert module.model.decoder.config.window == 2 and module.hparams["net"]["decoder"]["window"] == 2
    with pytest.raises(ValueError, match=r"this checkpoint was written by the 'lm' task .*not by SortModule \(the 'sort' task\)"):
        module.on_load_checkpoint({"tzoo": {"task": "lm", "class_path": "tzoo.tasks.lm.module.LanguageModel"}})
    with pytest.raises(ValueError, match=r"net.num_values must be >= 2 \(the tzoo CLI links it from the data\), got None"):
        SortModule()


@pytest.fixture
def installed_plugin(tmp_path):
    """pip-installs a copy of the plugin into this environment (offline: no deps, no build isolation)
    and uninstalls it afterwards."""
    source = tmp_path / "plugin_sort"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", str(source)], check=True)
    importlib.invalidate_caches()
    registry._reset_for_tests()
    try:
        yield
    finally:
        subprocess.run([*pip, "uninstall", "--quiet", "--yes", "tzoo-sort"], check=True)
        for name in [m for m in sys.modules if m == "tzoo_sort" or m.startswith("tzoo_sort.")]:
            del sys.modules[name]
        importlib.invalidate_caches()
        registry._reset_for_tests()


def tzoo(*args, cwd):
    return subprocess.run([sys.executable, "-m", "tzoo.tasks.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_installed_plugin_is_listed_and_trains_to_95_percent(installed_plugin, tmp_path):
    task = registry.get_task("sort")  # through the entry point, in this process too
    assert task.source.startswith("entry point sort") and task.config is not None and task.config.is_file()

    listed = tzoo("tasks", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("sort "))
    assert " ok " in row and "sort.yaml" in row

    fit = tzoo("fit", "--task", "sort", f"--trainer.default_root_dir={tmp_path / 'runs'}",
               "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    card = json.loads(next((tmp_path / "runs" / "sort").glob("version_*/run_card.json")).read_text())
    assert card["task"] == "sort" and card["metric"]["name"] == "val/seq_acc"
    assert card["metric"]["value"] >= 0.95, card
