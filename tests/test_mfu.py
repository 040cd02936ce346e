"""MFU from PyTorch's FLOP counter (``tzoo.tasks.flops``): every built-in task's run card and logged
metrics report it after a 2-step ``tzoo fit``."""

from __future__ import annotations

import csv
import json

import pytest
from test_core_options import TASKS, _shared_cache  # noqa: F401 - the fixture sets the shared corpus cache

from tzoo.tasks.cli import main


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_reports_mfu_from_counted_flops(task, tmp_path, monkeypatch):
    monkeypatch.setenv("TZOO_PEAK_FLOPS", "1e12")  # no peak measurement in a test
    base, _ = TASKS[task](tmp_path)
    main(["fit", *base, "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=2",
          "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path / 'runs'}"])  # fmt: skip
    (run,) = (tmp_path / "runs").glob("*/version_0")
    card = json.loads((run / "run_card.json").read_text())
    assert card["flops_per_node"] > 0 and card["peak_flops_per_s"] == 1e12 and 0 < card["mfu"] < 1, card
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [float(r["train/mfu"]) > 0 for r in rows if r.get("train/mfu")] == [True, True]
