"""Trajectory -> nodes: each step's return-to-go, state and action become three nodes, interleaved.

For K steps the node sequence is ``R_0, s_0, a_0, R_1, s_1, a_1, ..., R_{K-1}, s_{K-1}, a_{K-1}``
(3K nodes). Each node is its role's projection of its value, plus a learned embedding of the step's
timestep in the episode (shared by the step's three nodes), plus a learned role embedding.

The tokenizer also holds what it normalises with, computed from the dataset and kept as buffers
so that they travel in every checkpoint and evaluation needs no dataset: state mean and std, the
return scale (returns-to-go are divided by it), and for continuous actions the action bounds
(actions are mapped to [-1, 1]).

Shape legend: B batch, K steps, N = 3K nodes, S state size, A action size (continuous), D width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["ROLES", "DatasetStatistics", "TrajectoryTokenizer", "returns_to_go"]

ROLES = ("return", "state", "action")  # the order of a step's nodes


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
    """R_t = r_t + r_{t+1} + ... + r_{T-1} (undiscounted, as in the decision transformer). (T,) -> (T,)."""
    return np.cumsum(np.asarray(rewards, dtype=np.float64)[::-1])[::-1].copy()


@dataclass
class DatasetStatistics:
    """What the tokenizer normalises with, and the returns the dataset holds."""

    state_mean: np.ndarray  # (S,)
    state_std: np.ndarray  # (S,)
    return_scale: float
    action_low: np.ndarray  # (A,), continuous actions only (empty for discrete)
    action_high: np.ndarray  # (A,)
    return_max: float  # the best episode return in the dataset (the default target)

    @classmethod
    def from_arrays(
        cls, states: np.ndarray, returns: np.ndarray, action_low: np.ndarray | None = None, action_high: np.ndarray | None = None
    ) -> DatasetStatistics:
        """states (T, S) of every step, returns (E,) of every episode."""
        std = states.std(axis=0)
        scale = float(np.abs(returns).max())
        return cls(
            state_mean=states.mean(axis=0),
            # a constant state feature would divide by zero: leave it unscaled
            state_std=np.where(std > 1e-6, std, 1.0),
            return_scale=scale if scale > 0 else 1.0,
            action_low=np.zeros(0) if action_low is None else np.asarray(action_low, dtype=np.float64),
            action_high=np.zeros(0) if action_high is None else np.asarray(action_high, dtype=np.float64),
            return_max=float(returns.max()),
        )


class TrajectoryTokenizer(nn.Module):
    """(returns-to-go, states, actions, timesteps) of K steps -> (B, 3K, D) interleaved nodes.

    ``discrete``: ``act_dim`` actions embedded by id; otherwise ``act_dim``-vector actions projected
    linearly (after mapping the action bounds to [-1, 1]). ``max_timestep`` is the number of
    timestep embeddings; later timesteps share the last one.
    """

    def __init__(self, obs_dim: int, act_dim: int, *, discrete: bool, dim: int, max_timestep: int) -> None:
        super().__init__()
        for name, value in (("obs_dim", obs_dim), ("act_dim", act_dim), ("dim", dim), ("max_timestep", max_timestep)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.obs_dim, self.act_dim, self.discrete, self.max_timestep = obs_dim, act_dim, discrete, max_timestep
        self.embed_return = nn.Linear(1, dim)
        self.embed_state = nn.Linear(obs_dim, dim)
        self.embed_action: nn.Module = nn.Embedding(act_dim, dim) if discrete else nn.Linear(act_dim, dim)
        self.embed_timestep = nn.Embedding(max_timestep, dim)
        self.embed_role = nn.Embedding(len(ROLES), dim)
        self.norm = nn.LayerNorm(dim)
        # NaN until set from a dataset (or loaded from a checkpoint): `has_statistics` tells which
        self.register_buffer("state_mean", torch.full((obs_dim,), float("nan")))
        self.register_buffer("state_std", torch.full((obs_dim,), float("nan")))
        self.register_buffer("return_scale", torch.tensor(float("nan")))
        self.register_buffer("return_max", torch.tensor(float("nan")))
        bounds = 0 if discrete else act_dim
        self.register_buffer("action_low", torch.full((bounds,), float("nan")))
        self.register_buffer("action_high", torch.full((bounds,), float("nan")))

    # --- normalisation ------------------------------------------------------------------------

    @property
    def has_statistics(self) -> bool:
        return bool(torch.isfinite(self.state_mean).all() and torch.isfinite(self.return_scale))

    def set_statistics(self, stats: DatasetStatistics) -> None:
        if stats.state_mean.shape != (self.obs_dim,):
            raise ValueError(f"state statistics of shape {stats.state_mean.shape} do not fit obs_dim={self.obs_dim}")
        if not self.discrete and stats.action_low.shape != (self.act_dim,):
            raise ValueError(f"action bounds of shape {stats.action_low.shape} do not fit act_dim={self.act_dim}")
        with torch.no_grad():
            self.state_mean.copy_(torch.as_tensor(stats.state_mean))
            self.state_std.copy_(torch.as_tensor(stats.state_std))
            self.return_scale.fill_(stats.return_scale)
            self.return_max.fill_(stats.return_max)
            if not self.discrete:
                self.action_low.copy_(torch.as_tensor(stats.action_low))
                self.action_high.copy_(torch.as_tensor(stats.action_high))

    def _check_statistics(self) -> None:
        if not self.has_statistics:
            raise ValueError(
                "the trajectory tokenizer has no normalisation statistics: set them from a dataset "
                "(set_statistics, done by fit) or load a checkpoint that has them"
            )

    def normalize_action(self, action: Tensor) -> Tensor:
        """Continuous actions in their bounds -> [-1, 1]. (..., A) -> (..., A)."""
        return (2 * (action - self.action_low) / (self.action_high - self.action_low) - 1).clamp(-1, 1)

    def denormalize_action(self, action: Tensor) -> Tensor:
        """[-1, 1] -> the environment's bounds. (..., A) -> (..., A)."""
        return self.action_low + (action + 1) * 0.5 * (self.action_high - self.action_low)

    # --- nodes --------------------------------------------------------------------------------

    def forward(self, returns_to_go: Tensor, states: Tensor, actions: Tensor, timesteps: Tensor) -> Tensor:
        """returns_to_go (B, K), states (B, K, S), actions (B, K) ids or (B, K, A), timesteps (B, K)
        -> nodes (B, 3K, D) in the order R_0, s_0, a_0, R_1, ..."""
        self._check_statistics()
        B, K = returns_to_go.shape
        r = self.embed_return((returns_to_go / self.return_scale).unsqueeze(-1))  # (B, K, D)
        s = self.embed_state((states - self.state_mean) / self.state_std)  # (B, K, D)
        a = self.embed_action(actions.long() if self.discrete else self.normalize_action(actions))  # (B, K, D)
        t = self.embed_timestep(timesteps.clamp(0, self.max_timestep - 1))  # (B, K, D)
        nodes = torch.stack([r, s, a], dim=2) + t.unsqueeze(2) + self.embed_role.weight  # (B, K, 3, D)
        return self.norm(nodes.reshape(B, 3 * K, -1))  # (B, 3K, D)
