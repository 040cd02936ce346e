"""Logged episodes of mixed quality, written and read as Minari datasets, all offline.

A scripted controller per environment plays, and at each step a random action replaces its action
with probability ``random_rate``; the rate is swept linearly across episodes (episode i of n gets
``low + (high - low) * i / (n - 1)``), so one dataset spans expert to random play.

- CartPole-v1: push toward the side the pole falls to, ``angle + 0.5 * angular velocity > 0``.
  Alone it balances for all 500 steps; the swept random actions bring the dataset's mean return to
  about 210 (42% of the maximum).
- Pendulum-v1: energy-based swing-up (full torque along the velocity while the pendulum's energy is
  below that of standing still upright) and a PD balance near the top.

Datasets live under a Minari root folder (``data_dir``; ``None`` = Minari's own choice,
``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``) as ``<root>/<dataset id>/data/``. Each one we
write records its return distribution and the random / expert reference scores in its metadata.

    python -m tzoo.tasks.decision.collect --env CartPole-v1 --episodes 300 --data-dir DIR
"""

from __future__ import annotations

import argparse
import difflib
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = [
    "EXPERTS",
    "REFERENCE_SCORES",
    "Episodes",
    "collect_episodes",
    "dataset_path",
    "default_dataset_id",
    "load_episodes",
    "make_env",
    "measure_reference_scores",
    "return_distribution",
    "write_dataset",
]

Policy = Callable[[np.ndarray], Any]


def cartpole_expert(obs: np.ndarray) -> int:
    """Push right (1) when the pole leans or swings right: a linear rule on angle and angular velocity."""
    _, _, angle, angular_velocity = obs
    return int(angle + 0.5 * angular_velocity > 0)


def pendulum_expert(obs: np.ndarray) -> np.ndarray:
    """Swing up by pumping energy, balance with PD near the top. obs = (cos θ, sin θ, θ'), θ = 0 up."""
    cos, sin, velocity = (float(v) for v in obs)
    angle = np.arctan2(sin, cos)
    if cos > 0.8:  # within ~37° of upright: a PD controller holds it there
        torque = -(10.0 * angle + 2.0 * velocity)
    else:
        # Pendulum-v1 is a rod (inertia m l²/3, centre of mass at l/2, m = l = 1, g = 10): its energy
        # relative to resting upright is θ'²/6 + 5 (cos θ - 1). Below zero, push along the motion.
        energy = velocity**2 / 6 + 5.0 * (cos - 1.0)
        torque = 2.0 if velocity == 0 else 2.0 * np.sign(-velocity * energy)
    return np.array([np.clip(torque, -2.0, 2.0)], dtype=np.float32)


EXPERTS: dict[str, Policy] = {"CartPole-v1": cartpole_expert, "Pendulum-v1": pendulum_expert}

# (random policy, scripted expert) mean episode returns: 0 and 100 of the normalized return.
# Measured with `measure_reference_scores(env_id, episodes=200)` (seeds 2_000_000..2_000_199,
# apart from data and evaluation seeds); rerun it if an expert above changes.
REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "CartPole-v1": (22.4, 500.0),
    "Pendulum-v1": (-1222.0, -147.4),
}
_REFERENCE_SEED = 2_000_000


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make`` with a readable error for an id gymnasium does not know."""
    if not isinstance(env_id, str) or env_id not in gym.registry:
        close = difflib.get_close_matches(str(env_id), list(gym.registry), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else " (e.g. CartPole-v1, Pendulum-v1)"
        raise ValueError(f"unknown environment id {env_id!r}: gymnasium has no environment registered under it{hint}")
    return gym.make(env_id, **kwargs)


# --- collecting ---------------------------------------------------------------------------------


def _random_rates(episodes: int, low: float, high: float) -> np.ndarray:
    return np.linspace(low, high, episodes) if episodes > 1 else np.array([low])


def collect_episodes(
    env_id: str,
    episodes: int,
    *,
    seed: int = 0,
    random_rate: tuple[float, float] = (0.0, 1.0),
    policy: Policy | None = None,
) -> list[Any]:
    """Play ``episodes`` episodes (reset seeds ``seed``, ``seed + 1``, ...) with the scripted expert
    mixed with random actions at a rate swept from ``random_rate[0]`` to ``random_rate[1]``.
    Returns Minari ``EpisodeBuffer``s (observations hold one more entry than actions)."""
    from minari.data_collector import EpisodeBuffer

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    low, high = random_rate
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"random_rate must be (low, high) with 0 <= low <= high <= 1, got {tuple(random_rate)}")
    if policy is None:
        if env_id not in EXPERTS:
            make_env(env_id).close()  # an unknown id gets that error first
            raise ValueError(f"no scripted expert for {env_id!r} (there are for {', '.join(EXPERTS)}); pass policy=")
        policy = EXPERTS[env_id]
    env = make_env(env_id)
    env.action_space.seed(seed)
    rng = np.random.default_rng(seed)
    buffers = []
    for i, rate in enumerate(_random_rates(episodes, low, high)):
        obs, _ = env.reset(seed=seed + i)
        observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
        done = False
        while not done:
            action = env.action_space.sample() if rng.random() < rate else policy(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(float(reward))
            terminations.append(terminated)
            truncations.append(truncated)
            done = terminated or truncated
        buffers.append(
            EpisodeBuffer(
                id=i,
                seed=seed + i,
                observations=np.asarray(observations, dtype=np.float32),
                actions=np.asarray(actions),
                rewards=np.asarray(rewards, dtype=np.float64),
                terminations=np.asarray(terminations),
                truncations=np.asarray(truncations),
            )
        )
    env.close()
    return buffers


def measure_reference_scores(env_id: str, *, episodes: int = 200, seed: int = _REFERENCE_SEED) -> tuple[float, float]:
    """(random policy, scripted expert) mean returns over ``episodes`` episodes each."""
    random = collect_episodes(env_id, episodes, seed=seed, random_rate=(1.0, 1.0))
    expert = collect_episodes(env_id, episodes, seed=seed, random_rate=(0.0, 0.0))
    return float(np.mean([b.rewards.sum() for b in random])), float(np.mean([b.rewards.sum() for b in expert]))


def return_distribution(returns: np.ndarray | list[float]) -> dict[str, float]:
    """Count, mean, std and quantiles of episode returns."""
    r = np.asarray(returns, dtype=np.float64)
    q = np.quantile(r, [0.0, 0.25, 0.5, 0.75, 1.0])
    return {
        "episodes": float(len(r)),
        "mean": float(r.mean()),
        "std": float(r.std()),
        "min": float(q[0]),
        "p25": float(q[1]),
        "median": float(q[2]),
        "p75": float(q[3]),
        "max": float(q[4]),
    }


# --- Minari files -------------------------------------------------------------------------------


def default_dataset_id(env_id: str, episodes: int, seed: int, random_rate: tuple[float, float]) -> str:
    """``tzoo/<env>/mixed-<episodes>ep-s<seed>[-r<low>-<high>]-v0``: the settings are in the name, so
    changing one collects a new dataset instead of reusing another's."""
    env_name = env_id.split("/")[-1].split("-v")[0].lower()
    # Minari ids allow letters, digits, '-' and '_' only: 0.2 is written 0p2
    rates = "" if tuple(random_rate) == (0.0, 1.0) else "-r" + "-".join(f"{r:g}".replace(".", "p") for r in random_rate)
    return f"tzoo/{env_name}/mixed-{episodes}ep-s{seed}{rates}-v0"


def _minari_root(data_dir: str | os.PathLike[str] | None) -> Path:
    if data_dir is not None:
        return Path(data_dir).expanduser()
    return Path(os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets")


def dataset_path(dataset: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of a Minari dataset: ``dataset`` itself when it is a dataset folder (one holding
    ``data/``), else ``<Minari root>/<dataset id>``."""
    path = Path(dataset).expanduser()
    if (path / "data").is_dir():
        return path
    return _minari_root(data_dir) / dataset


@contextmanager
def _root(data_dir: str | os.PathLike[str] | None) -> Iterator[None]:
    """Point Minari (which reads ``MINARI_DATASETS_PATH`` on each call) at ``data_dir`` for a while."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(_minari_root(data_dir))
    try:
        yield
    finally:
        if old is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def write_dataset(dataset_id: str, buffers: list[Any], env_id: str, *, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write episode buffers as the Minari dataset ``dataset_id`` under ``data_dir``; return its folder.
    The reference scores (for envs with a scripted expert) and the return distribution go in its metadata."""
    import minari

    if not buffers:
        raise ValueError(f"no episodes to write to the Minari dataset {dataset_id!r}")
    returns = [float(np.sum(b.rewards)) for b in buffers]
    refs = REFERENCE_SCORES.get(env_id)
    dist = return_distribution(returns)
    description = "Scripted expert mixed with random actions at a swept rate (tzoo). Returns: " + ", ".join(
        f"{k} {v:.1f}" for k, v in dist.items()
    )
    with _root(data_dir), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is set to None", category=UserWarning)  # author, permalink, ...
        minari.create_dataset_from_buffers(
            dataset_id,
            buffers,
            env=env_id,
            algorithm_name="scripted expert + swept random actions",
            author="tzoo",
            description=description,
            ref_min_score=refs[0] if refs else None,
            ref_max_score=refs[1] if refs else None,
        )
    return dataset_path(dataset_id, data_dir)


@dataclass
class Episodes:
    """A dataset's episodes in memory: observations without the final one, so every row is a
    step (state, action, reward). Lists of arrays, one per episode."""

    observations: list[np.ndarray]  # (T, obs_dim) float32 each
    actions: list[np.ndarray]  # (T,) int64 (discrete) or (T, act_dim) float32 each
    rewards: list[np.ndarray]  # (T,) float64 each
    observation_space: gym.Space
    action_space: gym.Space
    env_id: str | None  # the environment the dataset says it was collected in
    ref_scores: tuple[float, float] | None  # (random, expert) from the metadata, if recorded

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def returns(self) -> np.ndarray:
        return np.array([r.sum() for r in self.rewards])


def load_episodes(dataset: str, data_dir: str | os.PathLike[str] | None = None) -> Episodes:
    """Read a Minari dataset (an id under ``data_dir``, or a dataset folder) with ``minari``."""
    import minari

    folder = Path(dataset).expanduser()
    if (folder / "data").is_dir():  # a dataset folder: open what load_dataset opens for an id
        data = minari.MinariDataset(folder / "data")
    else:
        root = _minari_root(data_dir)
        if not (root / dataset / "data").is_dir():
            raise FileNotFoundError(
                f"Minari dataset {dataset!r} not found: no folder {str(root / dataset / 'data')!r}. Create it with "
                f"`python -m tzoo.tasks.decision.collect --env ENV_ID --dataset {dataset} --data-dir {root}`, "
                f"or leave the data module's dataset unset to have one collected"
            )
        with _root(root):
            data = minari.load_dataset(dataset)
    observations, actions, rewards = [], [], []
    for episode in data.iterate_episodes():
        if len(episode.rewards) == 0:
            continue
        observations.append(np.asarray(episode.observations[:-1], dtype=np.float32).reshape(len(episode.rewards), -1))
        actions.append(np.asarray(episode.actions))
        rewards.append(np.asarray(episode.rewards, dtype=np.float64))
    if not rewards:
        raise ValueError(f"Minari dataset {dataset!r} is empty: it has no episode with at least one step")
    meta = data.storage.metadata
    env_spec = data.spec.env_spec
    refs = (float(meta["ref_min_score"]), float(meta["ref_max_score"])) if meta.get("ref_max_score") is not None else None
    return Episodes(
        observations,
        actions,
        rewards,
        data.observation_space,
        data.action_space,
        env_spec.id if env_spec is not None else None,
        refs,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tzoo.tasks.decision.collect", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="CartPole-v1", choices=sorted(EXPERTS))
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-rate", type=float, nargs=2, default=(0.0, 1.0), metavar=("LOW", "HIGH"))
    parser.add_argument("--dataset", default=None, help="Minari dataset id (default: named after the settings)")
    parser.add_argument("--data-dir", default=None, help="Minari root folder (default: $MINARI_DATASETS_PATH or ~/.minari/datasets)")
    args = parser.parse_args(argv)
    rates = (args.random_rate[0], args.random_rate[1])
    dataset = args.dataset or default_dataset_id(args.env, args.episodes, args.seed, rates)
    buffers = collect_episodes(args.env, args.episodes, seed=args.seed, random_rate=rates)
    path = write_dataset(dataset, buffers, args.env, data_dir=args.data_dir)
    dist = return_distribution([b.rewards.sum() for b in buffers])
    print(f"wrote {dataset} to {path}: returns " + ", ".join(f"{k} {v:.1f}" for k, v in dist.items()))


if __name__ == "__main__":
    main()
