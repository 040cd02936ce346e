"""The decode-step fast paths compute what the plain layers compute, follow weight updates, and
never run while training."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tzoo.core import Linear, gelu


@pytest.mark.parametrize("bias", [True, False])
def test_linear_fast_path_matches_f_linear_and_keeps_nn_linear_keys(bias):
    torch.manual_seed(0)
    layer = Linear(16, 24, bias=bias)
    assert isinstance(layer, nn.Linear)
    assert set(layer.state_dict()) == set(nn.Linear(16, 24, bias=bias).state_dict())
    x = torch.randn(1, 1, 16)
    with torch.inference_mode():
        fast = layer(x)
    assert layer._decode_weight is not None  # the decode path ran
    assert torch.allclose(fast, F.linear(x, layer.weight, layer.bias), atol=1e-6)
    big = torch.randn(4, 8, 16)  # 32 rows: the ordinary path
    with torch.no_grad():
        assert torch.equal(layer(big), F.linear(big, layer.weight, layer.bias))


def test_linear_decode_cache_follows_in_place_updates_and_loads():
    torch.manual_seed(0)
    layer = Linear(8, 8)
    x = torch.randn(1, 8)
    with torch.no_grad():
        before = layer(x)
        layer.weight.mul_(2.0)  # an optimizer step is an in-place update too
        after = layer(x)
        assert torch.allclose(after - layer.bias, 2 * (before - layer.bias), atol=1e-6)
        other = nn.Linear(8, 8)
        layer.load_state_dict(other.state_dict())
        assert torch.allclose(layer(x), other(x), atol=1e-6)
    twin = copy.deepcopy(layer)
    with torch.no_grad():
        twin.weight.zero_()
        assert torch.allclose(twin(x), twin.bias.expand(1, 8))
        assert torch.allclose(layer(x), other(x), atol=1e-6)  # the copy did not share the cache


def test_linear_built_under_inference_mode_takes_the_ordinary_path():
    with torch.inference_mode():
        layer = Linear(8, 4)  # inference tensors keep no version counter to follow
        x = torch.randn(1, 8)
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    assert layer._decode_weight is None


def test_linear_trains_through_the_ordinary_path():
    layer = Linear(8, 4)
    x = torch.randn(1, 8)
    layer(x).sum().backward()  # one row, but gradients are on
    assert layer._decode_weight is None and layer.weight.grad is not None


def test_gelu_matches_exact_gelu_at_every_size():
    torch.manual_seed(0)
    for n in (1, 512, 4096, 10000):
        x = torch.randn(n) * 4
        with torch.no_grad():
            assert torch.allclose(gelu(x), F.gelu(x), atol=1e-6, rtol=1e-6)
    x = torch.randn(64, requires_grad=True)
    gelu(x).sum().backward()  # with gradients: F.gelu itself
    assert torch.allclose(x.grad, torch.autograd.grad(F.gelu(x).sum(), x)[0])
