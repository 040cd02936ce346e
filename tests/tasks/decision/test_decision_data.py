"""Collection, the Minari round trip, K-step windows, and the data module's bad-input errors."""

import numpy as np
import pytest
import torch

from tzoo.tasks.decision.collect import collect_episodes, load_episodes, return_distribution, write_dataset
from tzoo.tasks.decision.data import TrajectoryDataModule


def test_minari_round_trip(tmp_path):
    buffers = collect_episodes("CartPole-v1", 5, seed=3)
    assert [b.seed for b in buffers] == [3, 4, 5, 6, 7]
    path = write_dataset("test/roundtrip-v0", buffers, "CartPole-v1", data_dir=tmp_path)
    assert (path / "data" / "metadata.json").is_file() and path.is_relative_to(tmp_path)
    episodes = load_episodes("test/roundtrip-v0", tmp_path)
    assert len(episodes) == 5 and episodes.env_id == "CartPole-v1"
    for b, obs, act, rew in zip(buffers, episodes.observations, episodes.actions, episodes.rewards):
        assert np.array_equal(obs, b.observations[:-1]) and np.array_equal(act, b.actions) and np.array_equal(rew, b.rewards)
    assert episodes.ref_scores is not None and episodes.ref_scores[1] == 500.0
    assert load_episodes(str(path)).returns.tolist() == episodes.returns.tolist()  # a dataset folder works too


def test_random_rate_sweep_spans_expert_to_random():
    returns = [b.rewards.sum() for b in collect_episodes("CartPole-v1", 6, seed=0, random_rate=(0.0, 1.0))]
    assert returns[0] == 500.0 and returns[-1] < 100  # episode 0: the expert alone; the last: random play
    dist = return_distribution(returns)
    assert dist["max"] == 500.0 and dist["episodes"] == 6 and dist["min"] <= dist["median"] <= dist["max"]


def test_windows_carry_returns_to_go_and_pad_at_the_episode_end(minari_root):
    data = TrajectoryDataModule("CartPole-v1", dataset="test/cartpole-v0", data_dir=str(minari_root), context_length=6, batch_size=3)
    data.setup("fit")
    windows = data._train
    last = int(windows.episode_end[0]) - 2  # two steps before the end of the first episode
    batch = windows[np.array([0, last])]
    assert batch["states"].shape == (2, 6, 4) and batch["actions"].dtype == torch.int64
    assert batch["mask"][0].all() and batch["mask"][1].tolist() == [True, True, False, False, False, False]
    length = int(windows.episode_end[0])
    assert batch["returns_to_go"][0, :3].tolist() == [length, length - 1, length - 2]  # reward 1 per step
    assert batch["returns_to_go"][1, :2].tolist() == [2.0, 1.0]
    assert batch["timesteps"][1, :2].tolist() == [last, last + 1]
    assert data.obs_dim == 4 and data.act_dim == 2 and data.discrete and data.max_timestep == 500
    assert 0 < data.statistics.return_max <= 500 and data.reference_scores == (22.4, 500.0)


def test_continuous_actions(minari_root):
    data = TrajectoryDataModule("Pendulum-v1", dataset="test/pendulum-v0", data_dir=str(minari_root), context_length=4, batch_size=2)
    batch = next(iter(data.train_dataloader()))
    assert batch["actions"].shape == (2, 4, 1) and batch["actions"].dtype == torch.float32
    assert not data.discrete and data.act_dim == 1 and data.statistics.action_high.tolist() == [2.0]


def test_default_dataset_is_collected_once_into_data_dir(tmp_path):
    data = TrajectoryDataModule("CartPole-v1", data_dir=str(tmp_path), episodes=3)
    assert not any(tmp_path.iterdir())  # nothing happens in __init__
    data.prepare_data()
    (folder,) = [p for p in tmp_path.rglob("data") if p.is_dir()]
    stamp = folder.stat().st_mtime_ns
    data.prepare_data()
    assert folder.stat().st_mtime_ns == stamp
    meta = folder / "metadata.json"  # as an interrupted collection leaves it: fewer episodes than asked
    meta.write_text(meta.read_text().replace('"total_episodes": 3', '"total_episodes": 1'))
    with pytest.raises(ValueError, match=r"holds 1 episodes, not 3: an interrupted collection\? delete that folder"):
        data.prepare_data()


def test_unknown_environment_id():
    with pytest.raises(ValueError, match=r"unknown environment id 'CartPol-v1'.*did you mean CartPole-v1"):
        TrajectoryDataModule("CartPol-v1")


def test_dataset_spaces_must_match_the_environment(minari_root):
    data = TrajectoryDataModule("CartPole-v1", dataset="test/pendulum-v0", data_dir=str(minari_root))
    with pytest.raises(ValueError, match=r"dataset 'test/pendulum-v0' has observation space Box.*\(3,\).*but the environment CartPole-v1 has Box.*\(4,\).*Pendulum-v1"):
        data.setup("fit")


@pytest.mark.filterwarnings("ignore:`.*` is set to None:UserWarning")
def test_empty_dataset(tmp_path):
    import minari

    from tzoo.tasks.decision.collect import _root

    with _root(tmp_path):
        minari.create_dataset_from_buffers("test/empty-v0", [], env="CartPole-v1", algorithm_name="none", author="test", description="empty")
    with pytest.raises(ValueError, match=r"Minari dataset 'test/empty-v0' is empty"):
        TrajectoryDataModule("CartPole-v1", dataset="test/empty-v0", data_dir=str(tmp_path)).setup("fit")


def test_context_length_below_one():
    with pytest.raises(ValueError, match=r"context_length \(K\) must be >= 1 step, got 0"):
        TrajectoryDataModule("CartPole-v1", context_length=0)


def test_missing_dataset_names_the_path_and_how_to_create_it(tmp_path):
    data = TrajectoryDataModule("CartPole-v1", dataset="test/nowhere-v0", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"Minari dataset 'test/nowhere-v0' not found: no folder '.*nowhere-v0/data'.*python -m tzoo.tasks.decision.collect --env ENV_ID --dataset test/nowhere-v0 --data-dir"):
        data.setup("fit")


def test_training_batches_are_keyed_so_a_resumed_epoch_draws_the_same_remaining_ones(minari_root, monkeypatch):
    """Batch i of epoch e comes from an RNG keyed by (data seed, seed_everything's seed, e, i): a
    pass resumed after 2 batches yields the last 3 of the uninterrupted pass, and 2 ranks share out
    the batch one process with twice the batch size draws."""
    from tzoo.tasks.sampling import Position

    monkeypatch.setenv("PL_GLOBAL_SEED", "7")

    def batches(position, batch_size=4):
        data = TrajectoryDataModule("CartPole-v1", dataset="test/cartpole-v0", data_dir=str(minari_root), context_length=3,
                                    batch_size=batch_size, train_batches=5)  # fmt: skip
        data._position = lambda: position
        return [b["states"] for b in data.train_dataloader()]

    full = batches(Position(epoch=3, done=0))
    assert len(full) == 5 and all(b.shape == (4, 3, 4) for b in full)
    assert all(torch.equal(a, b) for a, b in zip(batches(Position(epoch=3, done=0)), full))  # the same key: the same batches
    resumed = batches(Position(epoch=3, done=2))
    assert len(resumed) == 3 and all(torch.equal(a, b) for a, b in zip(resumed, full[2:]))
    ranks = batches(Position(3, 0, rank=0, world=2), 2), batches(Position(3, 0, rank=1, world=2), 2)
    assert all(torch.equal(torch.cat([a, b]), f) for a, b, f in zip(*ranks, full))
    assert not torch.equal(batches(Position(epoch=4, done=0))[0], full[0])  # another epoch, other windows
    monkeypatch.setenv("PL_GLOBAL_SEED", "8")
    assert not torch.equal(batches(Position(epoch=3, done=0))[0], full[0])  # another run seed, other windows
