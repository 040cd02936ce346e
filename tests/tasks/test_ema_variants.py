"""EMAVariants: each decay's average equals Lightning's EMAWeightAveraging with that decay on the same
run (and a hand-computed EMA of the weights after every step), is written beside last.ckpt as a
checkpoint tzoo's loader reads, goes on across a resume, and refuses bad decays by name."""

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint

from tzoo.tasks.ema_variants import EMAVariants, variant_path, write_current
from tzoo.tasks.reliability import read_checkpoint


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 6, generator=g)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


class Record(pl.Callback):
    """The weights after every optimizer step (the sequence the averages must follow)."""

    def __init__(self) -> None:
        self.states = []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.states.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def _fit(root, callbacks, max_steps=12, ckpt_path=None):
    pl.seed_everything(0)
    trainer = pl.Trainer(max_steps=max_steps, default_root_dir=root, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[*callbacks, ModelCheckpoint(dirpath=root, save_last=True)])
    trainer.fit(Tiny(), ckpt_path=ckpt_path)
    return trainer


def test_each_decay_matches_lightnings_ema_and_the_hand_computed_average(tmp_path):
    record = Record()
    _fit(tmp_path, [EMAWeightAveraging(decay=0.9), EMAVariants(decays=[0.9, 0.5]), record])
    last = tmp_path / "last.ckpt"
    lightning_average = read_checkpoint(last)["state_dict"]  # EMAWeightAveraging puts its average there
    ours = {d: read_checkpoint(variant_path(last, d))["state_dict"] for d in (0.9, 0.5)}
    assert variant_path(last, 0.9).name == "ema-0.9.ckpt"
    # last.ckpt keeps the averages for a resume; the files to evaluate do not carry them again
    assert any("EMAVariants" in key for key in read_checkpoint(last)["callbacks"])
    assert not any("EMAVariants" in key for key in read_checkpoint(variant_path(last, 0.5))["callbacks"])
    assert "current_model_state" not in read_checkpoint(variant_path(last, 0.5))  # nor the run's own weights
    for name, value in lightning_average.items():
        torch.testing.assert_close(ours[0.9][name], value, rtol=0, atol=1e-6)
    expected = {k: v.clone() for k, v in record.states[0].items()}
    for state in record.states[1:]:
        expected = {k: 0.5 * expected[k] + 0.5 * state[k] for k in expected}
    assert len(record.states) == 12
    for name, value in expected.items():
        torch.testing.assert_close(ours[0.5][name], value, rtol=0, atol=1e-6)
    # the averages differ from each other and from the final weights: the test compares something
    assert not torch.allclose(ours[0.5]["net.0.weight"], ours[0.9]["net.0.weight"])
    assert not torch.allclose(ours[0.5]["net.0.weight"], record.states[-1]["net.0.weight"])


def test_a_resumed_run_goes_on_with_its_averages(tmp_path):
    first, second = Record(), Record()
    _fit(tmp_path, [EMAVariants(decays=[0.8]), first], max_steps=5)
    assert any("EMAVariants" in key for key in read_checkpoint(tmp_path / "last.ckpt")["callbacks"])
    _fit(tmp_path, [EMAVariants(decays=[0.8]), second], max_steps=10, ckpt_path=tmp_path / "last.ckpt")
    states = first.states + second.states  # the weights after each of the 10 steps, across the resume
    assert len(states) == 10
    expected = {k: v.clone() for k, v in states[0].items()}
    for state in states[1:]:
        expected = {k: 0.8 * expected[k] + 0.2 * state[k] for k in expected}
    resumed = read_checkpoint(tmp_path / "ema-0.8.ckpt")["state_dict"]
    for name, value in expected.items():  # restarted averages would hold only steps 6-10
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6)


def test_current_ckpt_holds_the_optimizers_weights_not_the_average(tmp_path):
    record = Record()
    _fit(tmp_path, [EMAWeightAveraging(decay=0.9), record])
    out = write_current(tmp_path / "last.ckpt")
    assert out == tmp_path / "current.ckpt"
    current = read_checkpoint(out)
    assert "current_model_state" not in current and "averaging_state" not in current
    assert not any("WeightAveraging" in key for key in current["callbacks"])
    average = read_checkpoint(tmp_path / "last.ckpt")["state_dict"]
    for name, value in record.states[-1].items():  # the weights after the last step, exactly
        torch.testing.assert_close(current["state_dict"][name], value, rtol=0, atol=0)
    assert not torch.allclose(current["state_dict"]["net.0.weight"], average["net.0.weight"])


def test_current_ckpt_from_a_run_without_an_average_is_refused_by_name(tmp_path):
    _fit(tmp_path, [], max_steps=2)
    with pytest.raises(ValueError, match="current_model_state") as info:
        write_current(tmp_path / "last.ckpt")
    assert "last.ckpt" in str(info.value) and "evaluate it as it is" in str(info.value)
    assert not (tmp_path / "current.ckpt").exists()


@pytest.mark.parametrize("decays, named", [([], "[]"), (0.999, "0.999"), ([1.0], "1.0"), ([0.9, -0.1], "-0.1"),
                                           ([float("nan")], "nan"), (["0.9"], "'0.9'"), ([0.9, 0.9], "[0.9, 0.9]")])
def test_bad_decays_are_refused_by_name(decays, named):
    with pytest.raises(ValueError, match="EMAVariants") as info:
        EMAVariants(decays=decays)
    assert named in str(info.value) and ("(0, 1)" in str(info.value) or "differ" in str(info.value))
