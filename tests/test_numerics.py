"""Numerical faults: a NaN/Inf loss stops the run naming the step, or skips the step by config;
gradient clipping is on by default; the CLI adds these guards to every run."""

import math

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tzoo.tasks.base import TaskModule
from tzoo.tasks.cli import TzooCLI
from tzoo.tasks.reliability import (
    DEFAULT_GRADIENT_CLIP,
    NonFiniteLossGuard,
    RNGStateCallback,
    SafeCheckpointIO,
    add_reliability_defaults,
)


class Regression(TaskModule):
    """A linear model whose loss turns ``bad`` (nan or inf) at the steps in ``bad_steps``."""

    task_name = "regression"

    def __init__(self, bad_steps: tuple[int, ...] = (), bad: float = math.nan) -> None:
        super().__init__(optim={"lr": 1e-2, "warmup_steps": 0})
        self.layer = torch.nn.Linear(4, 1)
        self.bad_steps, self.bad = bad_steps, bad
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def training_step(self, batch, batch_idx):
        self.snapshots[self.global_step] = {k: v.clone() for k, v in self.state_dict().items()}
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        return loss * self.bad if self.global_step in self.bad_steps else loss


def _fit(module, guard, steps=6, tmp_path=None):
    data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    trainer = pl.Trainer(
        max_steps=steps, callbacks=[guard], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, DataLoader(data, batch_size=8))
    return trainer


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_stops_the_run_naming_the_step(tmp_path, bad):
    module = Regression(bad_steps=(3,), bad=bad)
    with pytest.raises(FloatingPointError, match=rf"the training loss is {bad} at step 3 \(epoch 0, batch 3\): stopped"):
        _fit(module, NonFiniteLossGuard(), tmp_path=tmp_path)
    assert all(torch.isfinite(p).all() for p in module.parameters())  # never trained on it


def test_skip_leaves_weights_and_optimizer_untouched_by_the_bad_batch(tmp_path):
    module = Regression(bad_steps=(2,))
    guard = NonFiniteLossGuard("skip")
    with pytest.warns(UserWarning, match=r"skipped the optimizer step at step 2 \(epoch 0, batch 2\): the training loss is nan"):
        trainer = _fit(module, guard, steps=6, tmp_path=tmp_path)
    assert guard.skipped == 1 and trainer.global_step == 6
    before, after = module.snapshots[2], module.snapshots[3]
    assert all(torch.equal(before[k], after[k]) for k in before)  # step 2 moved nothing
    assert not torch.equal(module.snapshots[3]["layer.weight"], module.snapshots[4]["layer.weight"])  # step 3 did
    optimizer = trainer.optimizers[0]
    assert all(int(optimizer.state[p]["step"]) == 5 for p in module.parameters())  # 6 steps, one skipped
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_too_many_skips_in_a_row_stop(tmp_path):
    module = Regression(bad_steps=(1, 2, 3))
    with pytest.warns(UserWarning), pytest.raises(FloatingPointError, match=r"3 optimizer steps in a row .* max_skips=2"):
        _fit(module, NonFiniteLossGuard("skip", max_skips=2), tmp_path=tmp_path)


def test_guard_arguments_are_checked():
    with pytest.raises(ValueError, match=r"action='ignore' is not one of \('stop', 'skip'\)"):
        NonFiniteLossGuard("ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"max_skips must be >= 1, got 0"):
        NonFiniteLossGuard(max_skips=0)


def test_defaults_clip_at_one_unless_the_config_says_otherwise():
    trainer: dict = {}
    add_reliability_defaults(trainer)
    assert trainer["gradient_clip_val"] == DEFAULT_GRADIENT_CLIP == 1.0
    assert [type(c) for c in trainer["callbacks"]] == [NonFiniteLossGuard, RNGStateCallback]
    assert [type(p) for p in trainer["plugins"]] == [SafeCheckpointIO]
    own = NonFiniteLossGuard("skip")
    trainer = {"gradient_clip_val": 0.0, "callbacks": [own], "strategy": "fsdp"}
    add_reliability_defaults(trainer)
    assert trainer["gradient_clip_val"] == 0.0  # 0 turns clipping off
    assert trainer["callbacks"][0] is own and len(trainer["callbacks"]) == 2
    assert "plugins" not in trainer  # a sharded strategy writes its own checkpoints


def test_the_cli_trainer_has_the_guards(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 20)
    args = [
        "--model=tzoo.tasks.lm.module.LanguageModel", "--model.init_args.net.transformer.dim=16",
        "--model.init_args.net.transformer.depth=1", "--model.init_args.net.transformer.num_heads=2", "--model.init_args.net.block_size=8",
        "--data=tzoo.tasks.lm.data.TextDataModule", f"--data.init_args.corpus={corpus}", "--data.init_args.block_size=8",
        f"--data.init_args.cache_dir={tmp_path}", f"--trainer.default_root_dir={tmp_path}",
    ]  # fmt: skip
    trainer = TzooCLI(args=args, run=False).trainer
    assert trainer.gradient_clip_val == 1.0
    assert any(isinstance(c, NonFiniteLossGuard) for c in trainer.callbacks)
    assert isinstance(trainer.strategy.checkpoint_io, SafeCheckpointIO)
    trainer = TzooCLI(args=[*args, "--trainer.gradient_clip_val=0.5"], run=False).trainer
    assert trainer.gradient_clip_val == 0.5
