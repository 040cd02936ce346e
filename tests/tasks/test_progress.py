"""The default progress bar counts steps of max_steps in a step-limited run (Lightning's own shows
``Epoch 3/-2`` there), with the time left; epoch-limited runs keep Lightning's description."""

import re

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import RichProgressBar
from torch.utils.data import DataLoader, TensorDataset

from tzoo.tasks.progress import StepProgressBar, format_seconds


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Recording(StepProgressBar):
    """Keeps every description the training bar showed."""

    def __init__(self):
        super().__init__()
        self.shown = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.shown.append(self.progress.tasks[self.train_progress_bar_id].description)


def fit(bar, **limits):
    loader = DataLoader(TensorDataset(torch.randn(12, 4)), batch_size=4)  # 3 steps an epoch
    trainer = pl.Trainer(callbacks=[bar], logger=False, enable_checkpointing=False, enable_model_summary=False,
                         accelerator="cpu", **limits)
    trainer.fit(Tiny(), loader)
    return trainer


def test_step_limited_run_shows_steps_of_max_steps_and_time_left():
    bar = Recording()
    fit(bar, max_steps=7)
    assert bar.shown[0].startswith("Step 1/7 · epoch 0 · ") and bar.shown[0].endswith(" left")
    assert re.fullmatch(r"Step 7/7 · epoch 2 · 0:00 left", bar.shown[-1]), bar.shown[-1]
    assert [int(re.match(r"Step (\d+)/7", s).group(1)) for s in bar.shown] == list(range(1, 8))
    assert not any("-" in s.split("·")[1] for s in bar.shown)  # no negative epoch count (Epoch 3/-2)


def test_epoch_limited_run_keeps_lightnings_description():
    bar, reference = Recording(), RichProgressBar()
    trainer = fit(bar, max_epochs=2)
    reference._trainer = trainer  # Lightning's own wording for the same trainer state
    assert bar.shown[-1].strip() == reference._get_train_description(1).strip() == "Epoch 1/1"


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 59.6, 151, 3725)] == ["0:00", "1:00", "2:31", "1:02:05"]


def test_the_cli_adds_it_by_default_unless_the_config_has_a_bar(tmp_path):
    from tzoo.tasks.cli import _add_trainer_defaults

    trainer = {"default_root_dir": str(tmp_path)}
    _add_trainer_defaults(trainer, "toy", fingerprint="0")
    assert [type(c) for c in trainer["callbacks"] if isinstance(c, RichProgressBar)] == [StepProgressBar]
    own = RichProgressBar()
    trainer = {"default_root_dir": str(tmp_path), "callbacks": [own]}
    _add_trainer_defaults(trainer, "toy", fingerprint="0")
    assert [c for c in trainer["callbacks"] if isinstance(c, RichProgressBar)] == [own]
