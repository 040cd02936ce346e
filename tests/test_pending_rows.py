"""``PendingRows`` puts into each checkpoint exactly the rows Lightning logs just after that save
(a step's rows after an ``every_n_train_steps`` save, an epoch's aggregated rows after an
``on_train_epoch_end`` save or a validation that ends the epoch, nothing for a step that is not
logged or a mid-epoch validation), and a resume adds them to
``metrics.csv`` only where they are missing."""

from __future__ import annotations

import copy
import csv

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from tzoo.tasks.runs import PENDING_ROWS, HistoryCSVLogger, PendingRows


class _Logged(BoringModel):
    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("train/loss", out["loss"])
        self.log("train/epoch_mean", out["loss"] * 2, on_step=False, on_epoch=True)
        return out


class _Capture(Callback):
    """Keeps, per checkpoint saved, its global_step and the rows PendingRows put in."""

    def __init__(self) -> None:
        self.saved: list[tuple[int, list]] = []

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.saved.append((checkpoint["global_step"], copy.deepcopy(checkpoint.get(PENDING_ROWS, []))))


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if v} for row in csv.DictReader(f)]


@pytest.mark.parametrize("log_every", [1, 2])
def test_the_rows_in_a_checkpoint_are_the_rows_logged_after_it(tmp_path, log_every):
    torch.manual_seed(0)
    capture = _Capture()
    logger = HistoryCSVLogger(tmp_path, name="t", version=0)
    by_step = ModelCheckpoint(dirpath=tmp_path / "steps", every_n_train_steps=3, save_top_k=-1)
    by_epoch = ModelCheckpoint(dirpath=tmp_path / "epochs", save_on_train_epoch_end=True, save_top_k=-1)
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=5, limit_val_batches=0, log_every_n_steps=log_every, logger=logger,
                         callbacks=[PendingRows(), capture, by_step, by_epoch], enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(_Logged())
    logged = _rows(logger.experiment.metrics_file_path)
    steps = {global_step for global_step, _ in capture.saved}
    assert steps == {3, 5, 6, 9, 10}  # every 3 steps, and the two epoch ends
    for global_step, pending in capture.saved:
        # the rows logged at the checkpoint's step, after the save (all of them: nothing else is logged then)
        expected = [row for row in logged if row["step"] == str(global_step - 1) and ("train/loss" in row or "train/epoch_mean" in row)]
        if global_step in (5, 10):  # the epoch-end saves: the epoch's aggregate (the last batch's row came before)
            expected = [row for row in expected if "train/epoch_mean" in row]
        assert [{k: str(v) for k, v in row.items()} for row in pending] == expected, global_step
    # every save carries rows, except those of steps that are not logged (log_every 2: steps 2 and 8)
    assert [step for step, rows in capture.saved if not rows] == ([] if log_every == 1 else [3, 9])


def test_a_validation_that_ends_the_epoch_carries_the_epochs_rows_and_one_mid_epoch_none(tmp_path):
    torch.manual_seed(0)
    capture = _Capture()
    logger = HistoryCSVLogger(tmp_path, name="t", version=0)
    on_validation = ModelCheckpoint(dirpath=tmp_path / "val", save_top_k=-1)  # saves on every validation's end
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=1, val_check_interval=2, log_every_n_steps=1,
                         num_sanity_val_steps=0, logger=logger, callbacks=[PendingRows(), capture, on_validation],
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(_Logged())
    logged = _rows(logger.experiment.metrics_file_path)
    saved = dict(capture.saved)
    assert sorted(saved) == [2, 4, 6, 8] and saved[2] == saved[6] == []  # mid-epoch: its rows came before
    for global_step in (4, 8):  # the epoch's aggregate, logged after the save at the step of its last batch
        expected = [row for row in logged if row["step"] == str(global_step - 1) and "train/epoch_mean" in row]
        assert len(expected) == 1 and [{k: str(v) for k, v in row.items()} for row in saved[global_step]] == expected


def test_a_resume_adds_the_pending_rows_only_where_missing(tmp_path):
    history = tmp_path / "old.csv"
    history.write_text("epoch,step,train/loss\n0,0,1.5\n0,1,1.25\n0,2,1.0\n")
    pending = [{"train/loss": 0.75, "epoch": 0, "step": 3}, {"train/loss": 1.0, "epoch": 0, "step": 2}]
    logger = HistoryCSVLogger(tmp_path, name="t", version=0, history=history, resume_step=4, pending=pending)
    rows = _rows(logger.experiment.metrics_file_path)
    assert [(r["step"], r["train/loss"]) for r in rows] == [("0", "1.5"), ("1", "1.25"), ("2", "1.0"), ("3", "0.75")]
