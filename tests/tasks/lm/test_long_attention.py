"""The LM with attention that costs less: sliding windows decoded with rolling KV caches past block_size."""

import pytest
import torch

from tzoo.core import RollingKVCache, TransformerConfig
from tzoo.tasks.lm.model import GPT, GPTConfig


def gpt(block_size=16, position="none", **kw) -> GPT:
    torch.manual_seed(0)
    relative = position if position in ("rope", "alibi") else "none"
    stack = TransformerConfig(dim=32, depth=2, num_heads=4, position=relative, bias=False, **kw)
    model = GPT(GPTConfig(29, block_size=block_size, position="learned" if position == "learned" else "none", transformer=stack)).eval()
    for p in model.parameters():  # trained-scale weights: varied greedy tokens, not one repeated token
        torch.nn.init.normal_(p, std=0.3)
    return model


def spy_caches(model: GPT, monkeypatch) -> list:
    made = []
    original = model.decoder.make_cache

    def make_cache(*args, **kw):
        made.append(original(*args, **kw))
        return made[-1]

    monkeypatch.setattr(model.decoder, "make_cache", make_cache)
    return made


@pytest.mark.parametrize("position", ["rope", "alibi", "none"])
def test_windowed_greedy_equals_the_reference_past_block_size_with_o_w_caches(position, monkeypatch):
    """block_size 16 >= depth * (window - 1) + 1 = 7: the reference's cropped block still holds the last
    node's whole receptive field, so the rolling caches must give its tokens, 4x block_size long,
    without ever starting over, and keep 2 * window keys per layer."""
    model = gpt(position=position, window=4)
    assert model.unbounded
    prompt = torch.randint(0, 29, (2, 5), generator=torch.Generator().manual_seed(1))
    made = spy_caches(model, monkeypatch)
    fast = model.generate(prompt, 59, temperature=0)
    slow = model.generate(prompt, 59, temperature=0, use_cache=False)
    assert fast.shape == (2, 64) and torch.equal(fast, slow)
    assert len(set(fast[0].tolist())) > 3  # not a degenerate repetition
    (caches,) = made
    assert all(isinstance(c, RollingKVCache) and c.length == 63 and c.k.shape[2] == 8 for c in caches)
    # the whole text read at once (past block_size: positions are relative) predicts the same tokens
    with torch.no_grad():
        logits = model(fast[:, :-1].clone())  # generate's tokens are inference tensors
    assert torch.equal(logits[:, 4:].argmax(-1), fast[:, 5:])


def test_a_windowed_model_with_learned_positions_still_starts_over_at_block_size():
    model = gpt(position="learned", window=4)
    assert not model.unbounded
    prompt = torch.randint(0, 29, (1, 3), generator=torch.Generator().manual_seed(1))
    fast = model.generate(prompt, 13, temperature=0)  # within the block: equal to the reference
    assert torch.equal(fast, model.generate(prompt, 13, temperature=0, use_cache=False))
    assert model.generate(prompt, 40, temperature=0).shape == (1, 43)
    with pytest.raises(ValueError, match=r"20 tokens at position 0 exceed the model's block_size=16"):
        model(torch.zeros(1, 20, dtype=torch.long))
