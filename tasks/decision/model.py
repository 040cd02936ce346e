"""The decision transformer (Chen et al. 2021): interleaved (R, s, a) nodes -> causal core decoder ->
an action read from each state node.

The state node of step t sees R_0, s_0, a_0, ..., R_t, s_t and not a_t, so the action predicted
there is a policy conditioned on the return still wanted and on the trajectory so far.

Short windows (the end of an episode, the first steps of a rollout) are padded on the right and
masked with a key-padding mask. Padding on the right keeps node 0 real in every row, so no query
ever has every key masked (a fully masked row would make softmax return NaN), and real nodes never
see padding anyway: it comes after them.

Shape legend: B batch, K steps, N = 3K nodes, S state size, A actions (logits) or action size, D width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from torch import Tensor, nn

from tzoo.core import Decoder, TransformerConfig, init_gpt2
from tzoo.tasks.decision.tokenizer import TrajectoryTokenizer

__all__ = ["LINKED", "DTConfig", "DTPredictions", "DecisionTransformerModel"]

LINKED = ("obs_dim", "act_dim", "discrete", "max_timestep", "context_length")  # DTConfig's fields the data sets


def _dt_transformer() -> TransformerConfig:
    return TransformerConfig(dim=128, depth=3, num_heads=1, dropout=0.1)


@dataclass
class DTConfig:
    """The decision transformer: its own fields and the core stack's ``TransformerConfig``.

    ``obs_dim``, ``act_dim``, ``discrete``, ``max_timestep`` and ``context_length`` are linked from
    the data by the CLI (the environment's spaces and episode limit, the data's window). ``act_dim``
    counts the discrete actions, or is the size of a continuous action; ``max_timestep`` is the number
    of timestep embeddings; ``context_length`` (K) is the most steps the model reads (3K nodes).
    ``transformer.dropout`` also drops the node embeddings. ``state_return_heads`` adds the heads of
    Hugging Face's ``DecisionTransformerModel`` that predict the next state and return from each
    action node (``predict``); training uses the action loss only, as in the paper, so they stay as
    loaded (an imported HF model keeps them for an exact export)."""

    obs_dim: int | None = None
    act_dim: int | None = None
    discrete: bool | None = None
    max_timestep: int | None = None
    context_length: int | None = None
    state_return_heads: bool = False
    transformer: TransformerConfig = field(default_factory=_dt_transformer)

    def __post_init__(self) -> None:
        if self.context_length is not None and self.context_length < 1:
            raise ValueError(f"context_length (K) must be >= 1 step, got {self.context_length}")
        for name in ("obs_dim", "act_dim", "max_timestep"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"net.{name} must be >= 1, got {value}")


class DTPredictions(NamedTuple):
    """``DecisionTransformerModel.predict``: actions (B, K, A) read at the state nodes; the next
    states (B, K, S) and returns (B, K, 1) read at the action nodes (None without
    ``state_return_heads``)."""

    actions: Tensor
    states: Tensor | None
    returns: Tensor | None


class DecisionTransformerModel(nn.Module):
    """Trajectory tokenizer -> causal decoder -> action head on the state nodes.

    Discrete actions: logits over ``act_dim`` actions. Continuous: ``tanh`` outputs in [-1, 1]
    (the tokenizer maps them to the action bounds). Every core option of ``cfg.transformer`` applies:
    the decoder always reads a whole window of at most K steps, in training and when playing.
    """

    def __init__(self, cfg: DTConfig) -> None:
        super().__init__()
        missing = [name for name in LINKED if getattr(cfg, name) is None]
        if missing:
            raise ValueError(
                f"net.{', net.'.join(missing)} not set: the tzoo CLI links them from TrajectoryDataModule; when building "
                f"the model yourself pass DTConfig(obs_dim=data.obs_dim, act_dim=data.act_dim, discrete=data.discrete, "
                f"max_timestep=data.max_timestep, context_length=data.context_length)"
            )
        assert cfg.obs_dim is not None and cfg.act_dim is not None and cfg.max_timestep is not None and cfg.context_length is not None
        self.cfg = cfg
        t = cfg.transformer
        self.context_length, self.discrete = cfg.context_length, bool(cfg.discrete)
        self.tokenizer = TrajectoryTokenizer(cfg.obs_dim, cfg.act_dim, discrete=self.discrete, dim=t.dim, max_timestep=cfg.max_timestep)
        self.drop = nn.Dropout(t.dropout) if t.dropout else None
        self.decoder = Decoder(t)
        self.head = nn.Linear(t.dim, cfg.act_dim)
        self.head_state = nn.Linear(t.dim, cfg.obs_dim) if cfg.state_return_heads else None
        self.head_return = nn.Linear(t.dim, 1) if cfg.state_return_heads else None
        init_gpt2(self, t.depth)

    def forward(
        self, returns_to_go: Tensor, states: Tensor, actions: Tensor, timesteps: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        """returns_to_go (B, K), states (B, K, S), actions (B, K) or (B, K, A), timesteps (B, K), mask
        (B, K) bool, True = real step, padding only on the right -> (B, K, A): action logits, or
        actions in [-1, 1], predicted at each step's state node."""
        return self._action(self._features(returns_to_go, states, actions, timesteps, mask))

    def predict(
        self, returns_to_go: Tensor, states: Tensor, actions: Tensor, timesteps: Tensor, mask: Tensor | None = None
    ) -> DTPredictions:
        """The inputs of ``forward`` -> its actions, and with ``state_return_heads`` the next states
        (in the tokenizer's normalised units) and returns (divided by its return scale)."""
        x = self._features(returns_to_go, states, actions, timesteps, mask)  # (B, 3K, D)
        if self.head_state is None or self.head_return is None:
            return DTPredictions(self._action(x), None, None)
        return DTPredictions(self._action(x), self.head_state(x[:, 2::3]), self.head_return(x[:, 2::3]))

    def _action(self, x: Tensor) -> Tensor:
        out = self.head(x[:, 1::3])  # (B, K, A): read at the state nodes
        return out if self.discrete else out.tanh()

    def _features(self, returns_to_go: Tensor, states: Tensor, actions: Tensor, timesteps: Tensor, mask: Tensor | None) -> Tensor:
        B, K = returns_to_go.shape
        if K > self.context_length:
            raise ValueError(f"{K} steps exceed the model's context_length={self.context_length}; pass the last {self.context_length}")
        key_padding_mask = None
        if mask is not None:
            _check_right_padded(mask, B, K)
            key_padding_mask = mask.repeat_interleave(3, dim=1)  # (B, 3K): a step's three nodes share its flag
        x = self.tokenizer(returns_to_go, states, actions, timesteps)  # (B, 3K, D)
        if self.drop is not None:
            x = self.drop(x)
        return self.decoder(x, key_padding_mask=key_padding_mask)  # (B, 3K, D)


def _check_right_padded(mask: Tensor, B: int, K: int) -> None:
    if mask.shape != (B, K) or mask.dtype.is_floating_point:
        raise ValueError(f"mask must be a bool tensor of shape (B, K) = ({B}, {K}), got {mask.dtype} {tuple(mask.shape)}")
    # real steps first, then padding: every row's first step is real and a row never turns real again
    if not bool(mask[:, 0].all()) or bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("mask must pad on the right only (True for the first real steps, then False), with >= 1 real step per row")
