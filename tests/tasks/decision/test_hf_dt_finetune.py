"""Fine-tuning an HF Decision Transformer through the CLI: `model.init_args.pretrained` (a local
folder built here) gives the model its stack and weights, the data its normalisation, two steps
train and the checkpoint reloads without the folder; discrete data is one line naming why."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from test_hf_dt import K, _hf_dt, _hf_outputs, _inputs  # noqa: E402

from tzoo.tasks.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def dt_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_dt") / "dt"
    _hf_dt().save_pretrained(folder)
    return folder


def _args(tmp_path, minari_root, folder, dataset="test/pendulum-v0", env="Pendulum-v1"):
    return ["fit", "--config", "configs/decision/pendulum.yaml", "--model.init_args.pretrained", str(folder),
            "--data.init_args.env_id", env, "--data.init_args.dataset", dataset, "--data.init_args.data_dir", str(minari_root),
            "--data.init_args.context_length", "5", "--data.init_args.batch_size", "4", "--model.init_args.eval_episodes", "0",
            "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path / "runs")]  # fmt: skip


def test_an_hf_decision_transformer_fine_tunes_through_the_cli(dt_folder, minari_root, tmp_path):
    from tzoo.tasks.decision.model import DTConfig
    from tzoo.tasks.decision.module import DecisionTransformer
    from tzoo.tasks.decision.tokenizer import DatasetStatistics
    from tzoo.tasks.loading import load_module

    start = DecisionTransformer(net=DTConfig(obs_dim=3, act_dim=1, discrete=False, max_timestep=50, context_length=K),
                                env_id="Pendulum-v1", pretrained=str(dt_folder)).eval()  # fmt: skip
    assert not start.model.tokenizer.has_statistics  # an HF folder has none: the data's will be set
    assert start.model.cfg.max_timestep == 200 and start.model.head_state is None  # the folder's table; no state/return heads
    start.model.tokenizer.set_statistics(DatasetStatistics(np.zeros(3), np.ones(3), 1.0, -np.ones(1), np.ones(1), 0.0))
    inputs = _inputs()
    states, actions, returns, timesteps, mask = inputs
    with torch.no_grad():
        ours = start.model(returns.squeeze(-1), states, actions, timesteps, mask)
    assert (ours[mask] - _hf_outputs(transformers.DecisionTransformerModel.from_pretrained(dt_folder).eval(), inputs)[0][mask]).abs().max() < 1e-4

    main(_args(tmp_path, minari_root, dt_folder))
    (ckpt,) = (tmp_path / "runs").rglob("last.ckpt")
    moved = shutil.move(str(dt_folder), str(dt_folder.with_name("moved")))
    try:
        module = load_module(ckpt)
    finally:
        shutil.move(moved, str(dt_folder))
    assert module.pretrained is None and module.model.cfg.transformer.feed_forward == "relu"
    assert module.model.tokenizer.has_statistics and not torch.allclose(module.model.tokenizer.state_std, torch.ones(3))  # the data's


def test_discrete_data_cannot_fine_tune_an_hf_decision_transformer(dt_folder, minari_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(_args(tmp_path, minari_root, dt_folder, dataset="test/cartpole-v0", env="CartPole-v1"))
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("tzoo: error: ") and f"pretrained={str(dt_folder)!r} is a Decision Transformer of continuous actions" in line
