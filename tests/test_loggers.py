"""A logger given with ``--trainer.logger`` (W&B, MLflow, ... ; here Lightning's CSVLogger, which
needs no network) is added to tzoo's loggers, not put in their place: tzoo's CSV history
(resume), TensorBoard logs, LR monitor, checkpoints and run card stay in runs/<task>/version_N."""

from __future__ import annotations

import csv

from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from test_core_options import TASKS, _shared_cache  # noqa: F401 - the fixture sets the shared corpus cache

from tzoo.tasks.cli import _add_trainer_defaults, main
from tzoo.tasks.runs import HistoryCSVLogger


def columns(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k for row in rows for k, v in row.items() if v}


def test_a_users_logger_is_added_to_tzoos_in_a_fit(tmp_path):
    base, _ = TASKS["lm"](tmp_path)
    mine = tmp_path / "my_logs"
    main(["fit", *base, "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=2",
          "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path / 'runs'}",
          "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={mine}"])  # fmt: skip
    (theirs,) = mine.glob("lightning_logs/version_0/metrics.csv")
    assert {"train/loss", "val/loss"} <= columns(theirs)
    run = tmp_path / "runs" / "lm" / "version_0"
    ours = columns(run / "metrics.csv")  # tzoo's history, with the LR monitor's learning rates
    assert {"train/loss", "val/loss"} <= ours and any(c.startswith("lr-") for c in ours), ours
    assert list(run.glob("events.out.tfevents.*")) and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "run_card.json").is_file() and (run / "run_state.json").is_file()


def test_default_loggers_with_and_without_a_users_logger(tmp_path):
    plain = {"default_root_dir": str(tmp_path)}
    _add_trainer_defaults(plain, "toy", fingerprint="0")
    assert [type(x) for x in plain["logger"]] == [HistoryCSVLogger, TensorBoardLogger]

    mine = CSVLogger(tmp_path / "mine")
    added = {"default_root_dir": str(tmp_path), "logger": mine}
    _add_trainer_defaults(added, "toy", fingerprint="0")
    assert [type(x) for x in added["logger"]] == [HistoryCSVLogger, TensorBoardLogger, CSVLogger] and added["logger"][2] is mine
    assert sum(isinstance(c, LearningRateMonitor) for c in added["callbacks"]) == 1

    board = TensorBoardLogger(tmp_path / "board")  # a TensorBoard logger of the user's replaces tzoo's
    listed = {"default_root_dir": str(tmp_path), "logger": [board, mine]}
    _add_trainer_defaults(listed, "toy", fingerprint="0")
    assert listed["logger"][1:] == [board, mine] and isinstance(listed["logger"][0], HistoryCSVLogger)

    off = {"default_root_dir": str(tmp_path), "logger": False}
    _add_trainer_defaults(off, "toy", fingerprint="0")
    assert off["logger"] is False and not any(isinstance(c, LearningRateMonitor) for c in off["callbacks"])
