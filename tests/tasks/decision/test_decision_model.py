"""DecisionTransformerModel: causality over the node sequence, right padding, shapes, bad input."""

import pytest
import torch

from tzoo.core import TransformerConfig
from tzoo.tasks.decision.model import DecisionTransformerModel, DTConfig
from tzoo.tasks.decision.tokenizer import DatasetStatistics

B, K, S = 2, 5, 4


def config(discrete=True, **transformer):
    stack = TransformerConfig(**{"dim": 16, "depth": 2, "num_heads": 2, **transformer})
    return DTConfig(obs_dim=S, act_dim=3, discrete=discrete, context_length=K, max_timestep=50, transformer=stack)


def make(discrete=True, **transformer):
    import numpy as np

    torch.manual_seed(0)
    model = DecisionTransformerModel(config(discrete, **transformer))
    bounds = (None, None) if discrete else (-np.ones(3), np.ones(3))
    model.tokenizer.set_statistics(DatasetStatistics.from_arrays(np.random.randn(20, S), np.array([5.0, 20.0]), *bounds))
    return model.eval()


def inputs(discrete=True):
    g = torch.Generator().manual_seed(1)
    actions = torch.randint(0, 3, (B, K), generator=g) if discrete else torch.rand(B, K, 3, generator=g) * 2 - 1
    return [torch.rand(B, K, generator=g) * 20, torch.randn(B, K, S, generator=g), actions, torch.arange(K).expand(B, K).clone()]


@pytest.mark.parametrize("discrete", [True, False])
def test_an_action_prediction_never_sees_later_nodes(discrete):
    model = make(discrete)
    x = inputs(discrete)
    base = model(*x)
    assert base.shape == (B, K, 3)
    j = 2
    for which in range(3):  # the return, the state, then the action of step j
        y = [t.clone() for t in x]
        y[which][:, j] = (y[which][:, j] + 1) % 3 if (which == 2 and discrete) else y[which][:, j] + 3.0
        out = model(*y)
        assert torch.equal(out[:, :j], base[:, :j])  # earlier steps: untouched
        # step j's action is read at its state node: it sees R_j and s_j but not a_j
        assert torch.equal(out[:, j], base[:, j]) == (which == 2)


def test_right_padding_leaves_real_steps_alone_and_never_yields_nan():
    model = make()
    x = inputs()
    mask = torch.tensor([[True] * K, [True, True, False, False, False]])
    out = model(*x, mask=mask)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[1, :2], model(*[t[1:, :2] for t in x])[0], atol=1e-6)  # same as the short window alone
    # on the right, the mask hides only what causality hides already from the real steps
    assert torch.allclose(out[1, :2], model(*x)[1, :2], atol=1e-6)


def test_padding_on_the_left_is_refused():
    model = make()
    with pytest.raises(ValueError, match=r"mask must pad on the right only"):
        model(*inputs(), mask=torch.tensor([[False, True, True, True, True]] * B))


def test_context_length_checks():
    with pytest.raises(ValueError, match=r"context_length \(K\) must be >= 1 step, got 0"):
        DTConfig(obs_dim=S, act_dim=3, discrete=True, context_length=0)
    model = make()
    longer = [torch.cat([t, t], dim=1) for t in inputs()]
    with pytest.raises(ValueError, match=r"10 steps exceed the model's context_length=5"):
        model(*longer)


def test_the_sizes_linked_from_the_data_are_needed():
    with pytest.raises(ValueError, match=r"net.act_dim, net.discrete, net.max_timestep, net.context_length not set: the tzoo CLI links them from TrajectoryDataModule"):
        DecisionTransformerModel(DTConfig(obs_dim=S))


@pytest.mark.parametrize(
    "option", [dict(window=2), dict(top_k=2), dict(num_memory=2), dict(position="alibi"), dict(position="rope"), dict(num_kv_heads=1)], ids=str
)
def test_every_core_option_keeps_the_policy_causal_and_padding_harmless(option):
    """Playing recomputes the whole window each step (no KV cache), so every core option serves
    training and rollouts alike: an action never sees its own or later nodes, and right padding
    (also under a window that sees only padding) gives finite outputs and gradients."""
    model = make(**option)
    x = inputs()
    base = model(*x)
    y = [t.clone() for t in x]
    y[2][:, 2] = (y[2][:, 2] + 1) % 3  # step 2's action
    out = model(*y)
    assert torch.equal(out[:, :3], base[:, :3]) and not torch.equal(out[:, 3:], base[:, 3:])
    mask = torch.tensor([[True] * K, [True, False, False, False, False]])
    model.train()
    padded = model(*x, mask=mask)
    padded[mask].sum().backward()
    assert torch.isfinite(padded).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
