"""TrajectoryTokenizer: node order R, s, a per step, shapes, statistics; returns-to-go by hand."""

import numpy as np
import pytest
import torch

from tzoo.tasks.decision.tokenizer import DatasetStatistics, TrajectoryTokenizer, returns_to_go

B, K, S = 2, 4, 3


def make(discrete=True, act_dim=2, dim=8):
    torch.manual_seed(0)
    tok = TrajectoryTokenizer(S, act_dim, discrete=discrete, dim=dim, max_timestep=10)
    bounds = (None, None) if discrete else (-2 * np.ones(act_dim), 2 * np.ones(act_dim))
    tok.set_statistics(DatasetStatistics.from_arrays(np.random.randn(50, S), np.array([10.0, -40.0]), *bounds))
    return tok


def inputs(discrete=True, act_dim=2):
    g = torch.Generator().manual_seed(1)
    actions = torch.randint(0, act_dim, (B, K), generator=g) if discrete else torch.rand(B, K, act_dim, generator=g) * 4 - 2
    return torch.randn(B, K, generator=g) * 10, torch.randn(B, K, S, generator=g), actions, torch.arange(K).expand(B, K).clone()


def test_returns_to_go_hand_checked():
    # rewards 1, 0, 2, -1 -> R_t = sum of r_t..r_3
    assert returns_to_go(np.array([1.0, 0.0, 2.0, -1.0])).tolist() == [2.0, 1.0, 1.0, -1.0]
    assert returns_to_go(np.ones(3)).tolist() == [3.0, 2.0, 1.0]  # CartPole: steps left


@pytest.mark.parametrize("discrete", [True, False])
def test_nodes_interleave_return_state_action(discrete):
    tok = make(discrete)
    rtg, states, actions, timesteps = inputs(discrete)
    base = tok(rtg, states, actions, timesteps)
    assert base.shape == (B, 3 * K, 8)
    step = 2
    changed = {
        0: (rtg.index_put((torch.tensor([0]), torch.tensor([step])), torch.tensor(99.0)), states, actions),
        1: (rtg, states.index_put((torch.tensor([0]), torch.tensor([step])), torch.tensor(5.0)), actions),
        2: (rtg, states, actions.clone().index_put_((torch.tensor([0]), torch.tensor([step])), 1 - actions[0, step] if discrete else -actions[0, step])),
    }
    for role, (r, s, a) in changed.items():  # changing one value of step 2 changes exactly node 3*2 + role
        diff = (tok(r, s, a, timesteps) - base).abs().amax(-1)  # (B, 3K)
        assert diff[0].nonzero().flatten().tolist() == [3 * step + role]
        assert diff[1].max() == 0
    later = timesteps.clone()
    later[0, step] = 7  # a step's timestep embedding is shared by its three nodes
    diff = (tok(rtg, states, actions, later) - base).abs().amax(-1)
    assert diff[0].nonzero().flatten().tolist() == [3 * step, 3 * step + 1, 3 * step + 2]


def test_statistics_are_buffers_and_required():
    tok = TrajectoryTokenizer(S, 2, discrete=True, dim=8, max_timestep=10)
    assert not tok.has_statistics
    with pytest.raises(ValueError, match=r"no normalisation statistics"):
        tok(*inputs())
    tok = make()
    state = tok.state_dict()
    assert {"state_mean", "state_std", "return_scale", "return_max"} <= set(state)
    assert state["return_scale"] == 40.0 and state["return_max"] == 10.0  # scale = largest |return|


def test_continuous_actions_map_bounds_to_unit_interval():
    tok = make(discrete=False, act_dim=1)
    a = torch.tensor([[-2.0], [0.0], [2.0]])
    assert tok.normalize_action(a).flatten().tolist() == [-1.0, 0.0, 1.0]
    assert torch.equal(tok.denormalize_action(tok.normalize_action(a)), a)


def test_sizes_must_be_positive():
    with pytest.raises(ValueError, match=r"obs_dim must be >= 1, got 0"):
        TrajectoryTokenizer(0, 2, discrete=True, dim=8, max_timestep=10)
