"""DecisionTransformer through the tzoo CLI (fit, evaluation in the environment, test from a
checkpoint), playing continuous actions, and the checkpoint checks. Tiny sizes throughout."""

import csv
import textwrap

import pytest
import torch
from lightning.pytorch import Trainer

from tzoo.core import TransformerConfig
from tzoo.tasks.cli import main
from tzoo.tasks.decision.data import TrajectoryDataModule
from tzoo.tasks.decision.model import DTConfig
from tzoo.tasks.decision.module import DecisionTransformer
from tzoo.tasks.loading import load_module

TINY_STACK = TransformerConfig(dim=16, depth=1, num_heads=2, dropout=0.0)


def tiny(obs_dim, act_dim, discrete, env_id, max_timestep, context_length, **options):
    net = DTConfig(obs_dim=obs_dim, act_dim=act_dim, discrete=discrete, max_timestep=max_timestep, context_length=context_length, transformer=TINY_STACK)
    return DecisionTransformer(net, env_id=env_id, eval_episodes=2, **options)


def tiny_config(tmp_path, minari_root, dataset="test/cartpole-v0", env_id="CartPole-v1"):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            seed_everything: 0
            trainer:
              max_steps: 4
              val_check_interval: 2
              limit_val_batches: 1
              default_root_dir: {tmp_path / "runs"}
              enable_progress_bar: false
              enable_model_summary: false
              log_every_n_steps: 1
            model:
              class_path: tzoo.tasks.decision.module.DecisionTransformer
              init_args: {{net: {{transformer: {{dim: 16, depth: 1, num_heads: 2}}}}, optim: {{warmup_steps: 2}}, eval_episodes: 2, eval_target_return: 500}}
            data:
              class_path: tzoo.tasks.decision.data.TrajectoryDataModule
              init_args:
                env_id: {env_id}
                dataset: {dataset}
                data_dir: {minari_root}
                context_length: 5
                batch_size: 4
            """
        )
    )
    return config


def metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_fit_evaluate_and_test_from_the_checkpoint(tmp_path, minari_root):
    config = tiny_config(tmp_path, minari_root)
    main(["fit", "--config", str(config)])
    (ckpt,) = (tmp_path / "runs").rglob("last.ckpt")
    rows = metrics(ckpt.parent.parent)
    evals = [r for r in rows if r.get("eval/return_mean")]
    assert len(evals) == 2  # after each validation, not the sanity check
    assert all(float(r["eval/return_mean"]) >= 8 and r["eval/normalized_return"] and r["eval/return_std"] for r in evals)
    assert any(r.get("train/loss") for r in rows) and any(r.get("val/loss") for r in rows)
    assert any(r.get("data/return_mean") for r in rows)  # the dataset's return distribution

    # the checkpoint plays without the dataset: statistics and reference scores are in it
    module = load_module(ckpt, task="decision")
    assert module.model.tokenizer.has_statistics and module.reference_scores.tolist() == pytest.approx([22.4, 500.0])
    result = module.evaluate(500, episodes=2, seed=5)
    assert set(result) == {"return_mean", "return_std", "normalized_return"}
    main(["test", "--config", str(config), "--ckpt_path", str(ckpt), "--trainer.logger=false"])
    longer = TrajectoryDataModule("CartPole-v1", dataset="test/cartpole-v0", data_dir=str(minari_root), context_length=9)
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, limit_test_batches=1)
    with pytest.raises(ValueError, match=r"the data's context_length=9 exceeds the model's 5"):
        trainer.test(module, datamodule=longer)


def test_continuous_actions_play_pendulum(minari_root):
    data = TrajectoryDataModule("Pendulum-v1", dataset="test/pendulum-v0", data_dir=str(minari_root), context_length=3)
    data.setup("fit")
    module = tiny(data.obs_dim, data.act_dim, data.discrete, data.env_id, data.max_timestep, data.context_length)
    module.model.tokenizer.set_statistics(data.statistics)
    rollouts = module.rollouts(-150.0, episodes=2, record=True)
    assert rollouts.lengths.tolist() == [200, 200] and rollouts.returns.max() < 0
    actions = rollouts.trajectory["actions"]
    assert actions.shape == (200, 1) and abs(actions).max() <= 1  # the model's [-1, 1] outputs
    assert rollouts.trajectory["returns_to_go"][1] == pytest.approx(-150.0 - rollouts.trajectory["rewards"][0], abs=1e-3)


def test_linked_arguments_are_needed_outside_the_cli():
    with pytest.raises(ValueError, match=r"net.obs_dim, net.act_dim, net.discrete, net.max_timestep, net.context_length, env_id not set: the tzoo CLI links them"):
        DecisionTransformer()


def test_checkpoint_without_normalisation_statistics(tmp_path):
    module = tiny(4, 2, True, "CartPole-v1", 500, 5)  # never saw a dataset
    state = {k: v for k, v in module.state_dict().items()}
    hparams = dict(module.hparams)
    path = tmp_path / "fresh.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": hparams, "tzoo": {"task": "decision"}}, path)
    with pytest.raises(ValueError, match=r"checkpoint has no normalisation statistics \(model.tokenizer.state_mean unset \(NaN\), model.tokenizer.state_std unset"):
        load_module(path, task="decision")
    del state["model.tokenizer.state_mean"]
    torch.save({"state_dict": state, "hyper_parameters": hparams, "tzoo": {"task": "decision"}}, path)
    with pytest.raises(ValueError, match=r"checkpoint has no normalisation statistics \(model.tokenizer.state_mean missing, model.tokenizer.state_std unset"):
        load_module(path, task="decision")
    with pytest.raises(ValueError, match=r"no normalisation statistics"):
        module.evaluate(500)


def test_a_checkpoint_with_an_older_tzoos_flat_arguments_loads_through_the_migration(tmp_path):
    """Before net/optim, DecisionTransformer took obs_dim, dim, lr ... flat: such a checkpoint still
    loads (DecisionTransformer.upgrade_hparams) and gives the same model."""
    import numpy as np

    from tzoo.tasks.decision.tokenizer import DatasetStatistics

    module = tiny(4, 2, True, "CartPole-v1", 500, 5, eval_temperature=0.5)
    module.model.tokenizer.set_statistics(DatasetStatistics.from_arrays(np.ones((10, 4)), np.array([20.0, 30.0])))
    hparams = dict(module.hparams)
    net, optim = hparams.pop("net"), hparams.pop("optim")
    stack = {k: net["transformer"][k] for k in ("dim", "depth", "num_heads", "dropout")}
    optim = {k: optim[k] for k in ("lr", "min_lr", "weight_decay", "betas", "warmup_steps")}  # the fields of that time
    flat = {**hparams, **{k: v for k, v in net.items() if k != "transformer"}, **stack, **optim}
    path = tmp_path / "flat.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": flat, "tzoo": {"task": "decision"}}, path)
    loaded = load_module(path, task="decision")
    assert loaded.hparams["net"] == net
    assert {k: loaded.hparams["optim"][k] for k in optim} == {**optim, "betas": tuple(optim["betas"])}
    assert loaded.eval_temperature == 0.5 and loaded.env_id == "CartPole-v1"
    for name, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_the_model_must_fit_the_data_it_meets(minari_root):
    """obs_dim, act_dim, discrete and env_id must be the data's; the data's window must fit the model's."""
    data = TrajectoryDataModule("CartPole-v1", dataset="test/cartpole-v0", data_dir=str(minari_root), context_length=5)
    with pytest.raises(ValueError, match=r"the model has obs_dim=3 but the data \(test/cartpole-v0\) has obs_dim=4"):
        tiny(3, 2, True, "CartPole-v1", 500, 5).check_links(data)
    with pytest.raises(ValueError, match=r"the model has env_id='CartPole-v0' but the data \(test/cartpole-v0\) has env_id='CartPole-v1'"):
        tiny(4, 2, True, "CartPole-v0", 500, 5).check_links(data)
    tiny(4, 2, True, "CartPole-v1", 200, 9).check_links(data)  # another episode limit or window: not checked here
