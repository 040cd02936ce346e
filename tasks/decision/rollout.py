"""Play the real environment with a decision transformer asked for a target return.

All episodes run side by side, one environment each, and the model acts for every running one in
one batched forward pass. After each step the reward received is taken off that episode's
return-to-go, as in the decision transformer. The model reads the last K steps, recomputed every
step: its timestep embeddings are absolute, but which nodes a node attends to changes as the
window slides, so keys and values cached from an earlier window would be stale after K steps
(the core's KV cache fits a growing sequence, not a sliding one). Every running episode is at the
same step, so the windows all have the same length and need no padding.

Shape legend: E episodes, K steps, S state size, A action size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from tzoo.tasks.decision.collect import make_env
from tzoo.tasks.decision.model import DecisionTransformerModel

__all__ = ["Rollouts", "check_play_settings", "normalized_return", "play"]


@dataclass
class Rollouts:
    """Episode returns and lengths, (E,) each; with ``record``, the first episode's steps."""

    returns: np.ndarray
    lengths: np.ndarray
    trajectory: dict[str, np.ndarray] = field(default_factory=dict)  # states, actions, rewards, returns_to_go


def normalized_return(mean_return: float, reference: tuple[float, float] | None) -> float:
    """100 * (return - random) / (expert - random): 0 = random policy, 100 = the scripted expert
    (NaN without reference scores)."""
    if reference is None or not np.isfinite(reference).all() or reference[1] == reference[0]:
        return float("nan")
    random, expert = reference
    return 100.0 * (mean_return - random) / (expert - random)


def check_play_settings(*, target_return: float | None = None, temperature: float | None = None, episodes: int | None = None) -> None:
    """ValueError naming a setting the rollouts cannot use (None: not given). A NaN target or
    temperature would not fail on its own: the model would act on NaN and still return a score."""
    if target_return is not None and not math.isfinite(target_return):
        raise ValueError(f"target_return must be a finite number (the return to ask the model for), got {target_return}")
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = the most likely action), got {temperature}")
    if episodes is not None and episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")


@torch.inference_mode()
def play(
    model: DecisionTransformerModel,
    env_id: str,
    *,
    target_return: float,
    episodes: int = 10,
    seed: int = 1_000_000,
    temperature: float = 0.0,
    record: bool = False,
) -> Rollouts:
    """Play ``episodes`` episodes (reset seeds ``seed``, ``seed + 1``, ...) starting each from a
    return-to-go of ``target_return``. Discrete actions are drawn from softmax(logits / temperature)
    (seeded by ``seed``), or are the most likely one at ``temperature=0``; continuous ones are the
    model's output."""
    check_play_settings(target_return=target_return, temperature=temperature, episodes=episodes)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokenizer = model.tokenizer
    envs = [make_env(env_id) for _ in range(episodes)]
    limit = max(env.spec.max_episode_steps or 1000 for env in envs)  # episodes without a limit stop here
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]).reshape(episodes, -1)  # (E, S)
    S = obs.shape[1]
    K = model.context_length
    act_shape = () if model.discrete else (tokenizer.act_dim,)
    states = torch.zeros(episodes, limit, S, device=device)
    actions = torch.zeros(episodes, limit, *act_shape, device=device, dtype=torch.long if model.discrete else torch.float32)
    rtg = torch.zeros(episodes, limit, device=device)
    timesteps = torch.arange(limit, device=device).expand(episodes, limit)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    running = np.ones(episodes, dtype=bool)
    rewards0: list[float] = []
    generator = torch.Generator(device=device).manual_seed(seed)
    rtg[:, 0] = target_return
    for t in range(limit):
        live = np.flatnonzero(running)
        idx = torch.as_tensor(live, device=device)
        states[idx, t] = torch.as_tensor(obs[live], dtype=torch.float32, device=device)
        lo = max(0, t + 1 - K)
        out = model(rtg[idx, lo : t + 1], states[idx, lo : t + 1], actions[idx, lo : t + 1], timesteps[idx, lo : t + 1])[:, -1]  # (E', A)
        if model.discrete:
            if temperature > 0:
                act = torch.multinomial((out / temperature).softmax(-1), 1, generator=generator)[:, 0]  # (E',)
            else:
                act = out.argmax(-1)
            env_actions = act.cpu().numpy()
        else:
            act = out  # (E', A) in [-1, 1]
            env_actions = tokenizer.denormalize_action(out).cpu().numpy().astype(np.float32)
        actions[idx, t] = act
        for j, i in enumerate(live):
            o, reward, terminated, truncated, _ = envs[i].step(env_actions[j])
            obs[i] = np.asarray(o, dtype=np.float32).reshape(-1)
            returns[i] += float(reward)
            lengths[i] += 1
            if i == 0:
                rewards0.append(float(reward))
            if t + 1 < limit:
                rtg[i, t + 1] = rtg[i, t] - float(reward)
            if terminated or truncated:
                running[i] = False
        if not running.any():
            break
    for env in envs:
        env.close()
    model.train(was_training)
    trajectory = {}
    if record:
        n = int(lengths[0])
        trajectory = {
            "states": states[0, :n].cpu().numpy(),
            "actions": actions[0, :n].cpu().numpy(),
            "rewards": np.array(rewards0),
            "returns_to_go": rtg[0, :n].cpu().numpy(),
        }
    return Rollouts(returns, lengths, trajectory)
