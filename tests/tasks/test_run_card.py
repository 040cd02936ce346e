"""Run cards: a fit writes run_card.json/.md with the task's numbers; `tzoo compare` prints runs side
by side and says which directory has no card."""

import json

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from tzoo.tasks.base import TaskModule
from tzoo.tasks.cli import _add_trainer_defaults, main
from tzoo.tasks.run_card import CARD_JSON, CARD_MD, RunCard, compare, find_cards, load_card


class Toy(TaskModule):
    task_name = "toy"
    card_metric = "val/acc"

    def __init__(self):
        super().__init__(optim={"lr": 1e-2, "warmup_steps": 1})
        self.net = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/acc", (self.net(x).argmax(-1) == y).float().mean())
        self.log("val/loss", torch.nn.functional.cross_entropy(self.net(x), y))

    def count_nodes(self, batch):
        return batch[0].shape[0] * 3  # pretend each example is 3 nodes


def fit_toy(root, version, **card):
    x = torch.randn(64, 4)
    loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)
    trainer = pl.Trainer(max_steps=4, logger=CSVLogger(root, name="toy", version=version), callbacks=[RunCard(**card)],
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         limit_val_batches=2, val_check_interval=2, accelerator="cpu")
    trainer.fit(Toy(), loader, loader)
    return root / "toy" / f"version_{version}"


def test_fit_writes_a_run_card(tmp_path):
    run = fit_toy(tmp_path, 0, peak_flops=1e12)
    card = json.loads((run / CARD_JSON).read_text())
    assert card["task"] == "toy" and card["status"] == "finished" and card["steps"] == 4
    assert card["params"] == 10 and card["trainable_params"] == 10
    assert card["nodes"] == 4 * 8 * 3 and card["nodes_per_s"] > 0
    assert card["metric"]["name"] == "val/acc" and 0 <= card["metric"]["value"] <= 1
    assert set(card["metrics"]) == {"val/acc", "val/loss"}
    assert card["peak_memory_bytes"] > 0 and card["device"].startswith("cpu") and card["precision"] == "32-true"
    # counted (tzoo.tasks.flops): 2 x 4 x 2 forward + the same for the weight gradient, per example of 3 nodes
    assert card["flops_per_node"] == pytest.approx(32 / 3, rel=1e-4) and card["peak_flops_per_s"] == 1e12
    assert card["mfu"] == pytest.approx(card["nodes_per_s"] * 32 / 3 / 1e12, rel=1e-3)
    markdown = (run / CARD_MD).read_text()
    assert markdown.startswith("# Run card: toy") and "| val/acc |" in markdown


def test_no_flop_count_means_no_mfu(tmp_path, monkeypatch):
    from tzoo.tasks import flops

    monkeypatch.setattr(flops, "count_training_flops", lambda *args: None)
    card = json.loads((fit_toy(tmp_path, 0) / CARD_JSON).read_text())
    assert card["mfu"] is None and card["peak_flops_per_s"] is None


def test_a_modules_own_flop_count_stands_in_where_counting_gives_none(tmp_path, monkeypatch):
    from tzoo.tasks import flops

    monkeypatch.setattr(flops, "count_training_flops", lambda *args: None)
    monkeypatch.setattr(Toy, "flops_per_node", lambda self: 1e6, raising=False)
    card = json.loads((fit_toy(tmp_path, 0, peak_flops=1e12) / CARD_JSON).read_text())
    assert card["flops_per_node"] == 1e6 and card["mfu"] == pytest.approx(card["nodes_per_s"] * 1e6 / 1e12, rel=1e-3)


def test_cli_defaults_add_the_run_card():
    trainer = {}
    _add_trainer_defaults(trainer, "toy", fingerprint="0")
    assert sum(isinstance(c, RunCard) for c in trainer["callbacks"]) == 1


def test_compare_prints_runs_side_by_side(tmp_path, capsys):
    fit_toy(tmp_path, 0, peak_flops=1e12)
    fit_toy(tmp_path, 1, peak_flops=1e12)
    assert len(find_cards([tmp_path])) == 2  # a folder of runs is searched
    table = compare([tmp_path / "toy" / "version_0", tmp_path / "toy" / "version_1"])
    lines = table.splitlines()
    assert "toy/version_0" in lines[0] and "toy/version_1" in lines[0]
    assert any(line.startswith("metric") and line.count("val/acc") == 2 for line in lines)
    main(["compare", str(tmp_path / "toy")])
    assert "toy/version_1" in capsys.readouterr().out


def test_compare_a_directory_without_a_run_card(tmp_path):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no run card \(run_card.json\) in '.*not_a_run' or below it; give a directory"):
        compare([empty])
    with pytest.raises(SystemExit, match=r"tzoo compare: no run card .*not_a_run"):
        main(["compare", str(empty)])
    with pytest.raises(FileNotFoundError, match=r"'.*missing' does not exist; give a run's log directory"):
        compare([tmp_path / "missing"])


def test_compare_a_file_that_is_not_a_card(tmp_path):
    bad = tmp_path / "run" / CARD_JSON
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"run_card.json' is not a run card \(not valid JSON"):
        load_card(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"is not a run card \(a JSON object with a 'task' field"):
        compare([bad.parent])
