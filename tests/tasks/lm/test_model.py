"""GPT model: KV-cache sampling against the recompute-the-window reference, filtering, bad input."""

import pytest
import torch

from tzoo.core import TransformerConfig
from tzoo.tasks.lm.model import GPT, GPTConfig, filter_logits, sample_next


def tiny(position="learned", **kw):
    torch.manual_seed(0)
    relative = "rope" if position == "rope" else "none"
    stack = TransformerConfig(dim=32, depth=2, num_heads=4, position=relative, **kw)
    return GPT(GPTConfig(23, block_size=32, position="learned" if position == "learned" else "none", transformer=stack)).eval()


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_greedy_identical_with_and_without_cache(position):
    model = tiny(position, num_kv_heads=2)
    prompt = torch.randint(0, 23, (3, 5), generator=torch.Generator().manual_seed(1))
    fast = model.generate(prompt, 27, temperature=0, use_cache=True)
    slow = model.generate(prompt, 27, temperature=0, use_cache=False)
    assert fast.shape == (3, 32)
    assert torch.equal(fast, slow)


def test_sampling_identical_with_and_without_cache_for_the_same_seed():
    model = tiny()
    prompt = torch.zeros(2, 1, dtype=torch.long)
    a = model.generate(prompt, 20, top_k=5, generator=torch.Generator().manual_seed(3))
    b = model.generate(prompt, 20, top_k=5, use_cache=False, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_compiled_generation_gives_the_eager_tokens_past_the_block_too():
    model = tiny("rope")
    prompt = torch.randint(0, 23, (2, 3), generator=torch.Generator().manual_seed(1))
    for use_cache in (True, False):  # 45 new tokens: the cache is refilled once past block_size 32
        eager = model.generate(prompt, 45, top_k=5, use_cache=use_cache, generator=torch.Generator().manual_seed(2))
        compiled = model.generate(prompt, 45, top_k=5, use_cache=use_cache, compile=True, generator=torch.Generator().manual_seed(2))
        assert torch.equal(eager, compiled), use_cache
    assert model.compiled_forward() is model.compiled_forward()  # compiled once per model
    assert "_compiled_forward" not in dict(model.named_modules()) and not any("compiled" in k for k in model.state_dict())


def test_cached_generation_runs_past_block_size():
    model = tiny("rope")
    out = model.generate(torch.zeros(1, 4, dtype=torch.long), 100, temperature=0)
    assert out.shape == (1, 104)


def test_stop_token_ends_generation_and_pads_finished_rows():
    model = tiny()
    # greedy from this prompt: make the first sampled token the stop token
    first = model.generate(torch.zeros(2, 1, dtype=torch.long), 1, temperature=0)[:, -1]
    out = model.generate(torch.zeros(2, 1, dtype=torch.long), 10, temperature=0, stop=int(first[0]))
    assert out.shape[1] < 11 or (out[0, 1:] == first[0]).all()
    assert out[0, 1] == first[0]


def test_filter_keeps_only_top_k_and_nucleus():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0, -1.0]])
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, False, True, False, False]]
    probs = torch.softmax(logits, -1)[0]  # ~[.64, .09, .24, .03, .01]
    kept = torch.isfinite(filter_logits(logits, top_p=0.7))[0].tolist()
    assert kept == [True, False, True, False, False]  # 0.64 < 0.7, so the second best is needed
    assert torch.isfinite(filter_logits(logits, top_p=float(probs[0]) - 1e-3))[0].tolist() == [True, False, False, False, False]
    torch.manual_seed(0)
    draws = torch.cat([sample_next(logits.expand(500, -1), top_k=2) for _ in range(4)])
    assert set(draws.flatten().tolist()) == {0, 2}
    draws = sample_next(logits.expand(2000, -1), top_p=0.7)
    assert set(draws.flatten().tolist()) == {0, 2}


def test_tied_head_and_param_count():
    model = tiny()
    assert model.head.weight is model.embed.weight
    assert model.num_params() < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(temperature=-0.5), r"temperature must be a finite number >= 0.*got -0.5"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\].*got 0.0"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\].*got 1.5"),
        (dict(top_k=0), r"top_k must be >= 1.*got 0"),
    ],
)
def test_bad_sampling_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny().generate(torch.zeros(1, 1, dtype=torch.long), 3, **kw)


def test_input_longer_than_block_size():
    with pytest.raises(ValueError, match=r"40 tokens at position 0 exceed the model's block_size=32"):
        tiny()(torch.zeros(1, 40, dtype=torch.long))
