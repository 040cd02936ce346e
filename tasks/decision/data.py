"""Minari episodes -> random K-step windows of (return-to-go, state, action, timestep).

A window starts at a step drawn uniformly from all steps of the split (so longer episodes give
more windows, as in the decision transformer) and runs K steps or to the episode's end; shorter
windows are padded on the right and flagged in ``mask``. Training batch ``i`` of epoch ``e`` is
drawn with an RNG keyed by (data seed, ``seed_everything``'s seed, e, i) (``tzoo.tasks.sampling``),
so a run resumed mid-epoch trains on the batches the interrupted run would have, and data-parallel
ranks share out one global batch. Episodes, not steps, are split between
training and validation, at random (the collector sweeps its random-action rate across episodes,
so a contiguous split would validate on the noisiest play only).

Shape legend: B batch, K steps, S state size, A action size (continuous actions).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import gymnasium as gym
import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from tzoo.tasks.decision.collect import (
    REFERENCE_SCORES,
    Episodes,
    collect_episodes,
    dataset_path,
    default_dataset_id,
    load_episodes,
    make_env,
    return_distribution,
    write_dataset,
)
from tzoo.tasks.decision.tokenizer import DatasetStatistics, returns_to_go
from tzoo.tasks.sampling import KeyedBatches, KeyedLoader, LoopPosition, run_seed

__all__ = ["RandomSteps", "TrajectoryDataModule", "TrajectoryWindows"]


class TrajectoryWindows(Dataset):
    """The steps of some episodes laid end to end; ``windows[starts]`` gathers a whole batch of
    K-step windows, each cut at the end of its episode, as a dict of tensors:
    ``returns_to_go`` (B, K), ``states`` (B, K, S), ``actions`` (B, K) int64 or (B, K, A),
    ``timesteps`` (B, K) int64 and ``mask`` (B, K) bool (True = real step, padding on the right)."""

    def __init__(self, episodes: Episodes, indices: np.ndarray, *, context_length: int, discrete: bool) -> None:
        chosen = [int(i) for i in indices]
        self.states = np.concatenate([episodes.observations[i] for i in chosen]).astype(np.float32)  # (T, S)
        actions = np.concatenate([episodes.actions[i] for i in chosen])
        self.actions = actions.astype(np.int64).reshape(-1) if discrete else actions.astype(np.float32).reshape(len(actions), -1)
        self.returns_to_go = np.concatenate([returns_to_go(episodes.rewards[i]) for i in chosen]).astype(np.float32)  # (T,)
        lengths = np.array([len(episodes.rewards[i]) for i in chosen])
        ends = np.cumsum(lengths)
        self.timesteps = np.concatenate([np.arange(n) for n in lengths])  # (T,)
        self.episode_end = np.repeat(ends, lengths)  # (T,): one past the last step of each step's episode
        self.context_length = context_length

    def __len__(self) -> int:
        return len(self.timesteps)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` window starts, uniform over every step (the training batches' ``draw``)."""
        return rng.integers(0, len(self), n, dtype=np.int64)

    def __getitem__(self, starts: np.ndarray) -> dict[str, Tensor]:
        index = starts[:, None] + np.arange(self.context_length)  # (B, K)
        end = self.episode_end[starts][:, None]  # (B, 1)
        mask = index < end
        index = np.minimum(index, end - 1)  # padding repeats the last real step; it is masked anyway
        return {
            "returns_to_go": torch.from_numpy(self.returns_to_go[index]),
            "states": torch.from_numpy(self.states[index]),
            "actions": torch.from_numpy(self.actions[index]),
            "timesteps": torch.from_numpy(self.timesteps[index]),
            "mask": torch.from_numpy(mask),
        }


class RandomSteps(Sampler[np.ndarray]):
    """``num_batches`` arrays of ``batch_size`` step indices in ``[0, num_steps)``, uniform, the same
    ones every pass (validation losses compare across evaluations)."""

    def __init__(self, num_steps: int, *, batch_size: int, num_batches: int, seed: int) -> None:
        self.num_steps, self.batch_size, self.num_batches, self.seed = num_steps, batch_size, num_batches, seed

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[np.ndarray]:
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(self.num_batches):
            yield torch.randint(0, self.num_steps, (self.batch_size,), generator=generator).numpy()


def _only_item(batch: list[Any]) -> Any:
    return batch[0]


class TrajectoryDataModule(pl.LightningDataModule):
    """Random K-step windows of a Minari dataset's episodes for the environment ``env_id``.

    ``dataset``: a Minari dataset id (looked up under ``data_dir``) or a dataset folder. Left
    unset, ``prepare_data`` collects one with the environment's scripted expert (``episodes``
    episodes from reset seed ``seed`` on, random-action rate swept over ``random_rate``) into
    ``data_dir``, named after those settings, once. ``data_dir`` defaults to
    ``$MINARI_DATASETS_PATH``, else ``$TZOO_CACHE/minari`` when ``TZOO_CACHE`` is set, else
    Minari's ``~/.minari/datasets``.

    The environment gives the sizes the model is built with (``model_links``); the dataset must
    have the same observation and action spaces. ``train_batches`` is the length of an epoch;
    ``batch_size`` is per process (under data parallelism with W processes a step trains on the
    W * batch_size windows one process would draw).
    """

    model_links = ("obs_dim", "act_dim", "discrete", "env_id", "max_timestep", "context_length")

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        *,
        dataset: str | None = None,
        data_dir: str | None = None,
        episodes: int = 300,
        random_rate: tuple[float, float] = (0.0, 1.0),
        seed: int = 0,
        context_length: int = 20,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        train_batches: int = 500,
        val_batches: int = 10,
        num_workers: int = 0,
        predict_episodes: int = 10,
        predict_target_returns: list[float] | None = None,
        predict_seed: int = 2_000_000,
    ) -> None:
        """``predict_*``: what ``tzoo predict`` plays: ``predict_episodes`` episodes (reset seeds
        ``predict_seed``, ``predict_seed + 1``, ...) at each target return of
        ``predict_target_returns`` (None: the model's ``eval_target_return``, else the dataset's
        best return); the returns go to returns.csv in the run folder."""
        super().__init__()
        if context_length < 1:
            raise ValueError(f"context_length (K) must be >= 1 step, got {context_length}")
        for name, value in dict(episodes=episodes, batch_size=batch_size, train_batches=train_batches, val_batches=val_batches).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
        if predict_episodes < 1:
            raise ValueError(f"predict_episodes must be >= 1, got {predict_episodes}")
        for target in predict_target_returns or ():
            if not math.isfinite(target):
                raise ValueError(f"predict_target_returns must be finite numbers (returns to ask the model for), got {target}")
        low, high = random_rate
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"random_rate must be (low, high) with 0 <= low <= high <= 1, got {tuple(random_rate)}")
        if not isinstance(env_id, str) or env_id not in gym.registry:
            make_env(env_id)  # raises the unknown-id error, with close matches
        self.save_hyperparameters()
        self.env_id, self.dataset, self.episodes, self.seed = env_id, dataset, episodes, seed
        self.random_rate = (float(low), float(high))
        self.context_length, self.batch_size, self.val_fraction = context_length, batch_size, val_fraction
        self.train_batches, self.val_batches, self.num_workers = train_batches, val_batches, num_workers
        self.predict_episodes, self.predict_seed = predict_episodes, predict_seed
        self.predict_target_returns = None if predict_target_returns is None else [float(t) for t in predict_target_returns]
        if data_dir is None and not os.environ.get("MINARI_DATASETS_PATH") and os.environ.get("TZOO_CACHE"):
            data_dir = str(Path(os.environ["TZOO_CACHE"]) / "minari")
        self.data_dir = data_dir
        self._spaces: tuple[gym.Space, gym.Space, int | None] | None = None
        self._train: TrajectoryWindows | None = None
        self._val: TrajectoryWindows | None = None
        self.statistics: DatasetStatistics | None = None  # set by setup()
        self.reference_scores: tuple[float, float] | None = None  # (random, expert) returns, if known
        self.returns: dict[str, float] = {}  # the dataset's return distribution
        self._position = LoopPosition(self, train_batches)  # where a training pass starts

    # --- what the model needs (from the environment: no data is read) --------------------------

    def _env_spaces(self) -> tuple[gym.Space, gym.Space, int | None]:
        if self._spaces is None:
            env = make_env(self.env_id)
            self._spaces = (env.observation_space, env.action_space, env.spec.max_episode_steps if env.spec else None)
            env.close()
        obs_space, act_space, _ = self._spaces
        if not isinstance(obs_space, gym.spaces.Box):
            raise ValueError(f"{self.env_id} has observation space {obs_space}; the decision transformer reads Box observations")
        if not isinstance(act_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise ValueError(f"{self.env_id} has action space {act_space}; the decision transformer acts in Discrete or Box spaces")
        return self._spaces

    @property
    def obs_dim(self) -> int:
        return int(np.prod(self._env_spaces()[0].shape))

    @property
    def discrete(self) -> bool:
        return isinstance(self._env_spaces()[1], gym.spaces.Discrete)

    @property
    def act_dim(self) -> int:
        """Number of discrete actions, or the size of a continuous action."""
        space = self._env_spaces()[1]
        return int(space.n) if isinstance(space, gym.spaces.Discrete) else int(np.prod(space.shape))

    @property
    def max_timestep(self) -> int:
        """Timestep embeddings the model needs: the environment's episode limit (1000 without one)."""
        return int(self._env_spaces()[2] or 1000)

    @property
    def dataset_id(self) -> str:
        return self.dataset or default_dataset_id(self.env_id, self.episodes, self.seed, self.random_rate)

    # --- Lightning hooks --------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Collect the default dataset unless it exists (a named ``dataset`` is never written);
        ``tzoo predict`` plays the environment and reads no dataset."""
        if self.dataset is not None or self._predicting():
            return
        folder = dataset_path(self.dataset_id, self.data_dir) / "data"
        if not folder.is_dir():
            buffers = collect_episodes(self.env_id, self.episodes, seed=self.seed, random_rate=self.random_rate)
            write_dataset(self.dataset_id, buffers, self.env_id, data_dir=self.data_dir)
            return
        # Minari counts the episodes in its metadata once they are written: fewer means a collection
        # was interrupted, and reading on would train on part of the data
        meta = folder / "metadata.json"
        written = json.loads(meta.read_text(encoding="utf-8")).get("total_episodes") if meta.is_file() else None
        if written != self.episodes:
            raise ValueError(
                f"the collected dataset {str(folder.parent)!r} holds {written} episodes, not {self.episodes}: "
                f"an interrupted collection? delete that folder and it is collected again"
            )

    def _predicting(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.state.fn == "predict"

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None or stage == "predict":  # playing needs the model's statistics only
            return
        if self.dataset is None:
            self.prepare_data()  # Lightning calls it on one process per node; cheap when done
        episodes = load_episodes(self.dataset_id, self.data_dir)
        self._check_spaces(episodes)
        if len(episodes) < 2:
            raise ValueError(f"dataset {self.dataset_id!r} has {len(episodes)} episode; training and validation need >= 2")
        order = np.random.default_rng(self.seed).permutation(len(episodes))
        n_val = min(max(1, round(self.val_fraction * len(episodes))), len(episodes) - 1)
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
        kw = dict(context_length=self.context_length, discrete=self.discrete)
        self._train, self._val = TrajectoryWindows(episodes, train, **kw), TrajectoryWindows(episodes, val, **kw)
        returns = episodes.returns
        act_space = self._env_spaces()[1]
        bounds = (None, None) if self.discrete else (act_space.low.reshape(-1), act_space.high.reshape(-1))
        self.statistics = DatasetStatistics.from_arrays(self._train.states, returns[train], *bounds)
        self.reference_scores = episodes.ref_scores or REFERENCE_SCORES.get(self.env_id)
        self.returns = return_distribution(returns)
        rank_zero_info(
            f"dataset {self.dataset_id}: {len(episodes)} episodes ({len(train)} train, {len(val)} val), "
            f"{sum(len(r) for r in episodes.rewards)} steps; returns "
            + ", ".join(f"{k} {v:.1f}" for k, v in self.returns.items() if k != "episodes")
        )

    def _check_spaces(self, episodes: Episodes) -> None:
        env_obs, env_act, _ = self._env_spaces()
        for what, ours, theirs in (("observation", episodes.observation_space, env_obs), ("action", episodes.action_space, env_act)):
            if ours != theirs:
                raise ValueError(
                    f"dataset {self.dataset_id!r} has {what} space {ours}, but the environment {self.env_id} has {theirs}: "
                    f"use a dataset collected in {self.env_id} (or set env_id to the dataset's environment"
                    + (f", {episodes.env_id})" if episodes.env_id else ")")
                )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """The validation episodes: the test that matters is playing the environment (the module's)."""
        return self._loader("val")

    def predict_dataloader(self) -> DataLoader:
        """One batch per target return: ``{"target_return": float or None, "episodes": N, "seed": S}``
        (None: the model's own target)."""
        targets: list[float | None] = list(self.predict_target_returns) if self.predict_target_returns else [None]
        plays = [{"target_return": t, "episodes": self.predict_episodes, "seed": self.predict_seed} for t in targets]
        # batches of one, unwrapped: a batch sampler lets Lightning's prediction writer know the indices
        return DataLoader(plays, batch_size=1, collate_fn=_only_item)  # type: ignore[arg-type]

    def _loader(self, split: str) -> DataLoader:
        if self._train is None:
            self.setup()
        windows = self._train if split == "train" else self._val
        assert windows is not None
        sampler: Sampler[np.ndarray]
        if split == "train":  # keyed by the data seed and seed_everything's seed, like the rest of the run
            key = (self.seed, run_seed())
            sampler = KeyedBatches(batch_size=self.batch_size, num_batches=self.train_batches, key=key, position=self._position, draw=windows.draw)
        else:
            sampler = RandomSteps(len(windows), batch_size=self.batch_size, num_batches=self.val_batches, seed=self.seed)
        # batch_size=None: each sampled item is a whole batch of starts, gathered with one numpy index.
        # Its own generator: otherwise each new iterator draws a worker seed from the global RNG, and a
        # resumed run (which makes one more iterator) would shift dropout's random stream.
        workers = self.num_workers
        return (KeyedLoader if split == "train" else DataLoader)(
            windows,
            sampler=sampler,
            batch_size=None,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )
