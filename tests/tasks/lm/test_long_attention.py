"""The LM with attention that costs less: sliding windows decoded with rolling KV caches and linear
attention decoded with fixed-size states, past block_size; trained, checked and sampled from the CLI."""

from pathlib import Path

import pytest
import torch

from tzoo.core import LinearAttentionState, RollingKVCache, TransformerConfig
from tzoo.tasks.cli import main
from tzoo.tasks.loading import load_module
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


@pytest.mark.parametrize("position", ["rope", "none"])
def test_linear_attention_greedy_equals_the_reference_within_the_block_and_a_full_read_past_it(position, monkeypatch):
    """Within block_size the state-cached tokens equal the recompute reference; past it (relative
    positions: unbounded) the model keeps its fixed-size states, and reading the whole text at once
    predicts the same tokens."""
    model = gpt(position=position, attention="linear")
    assert model.unbounded
    prompt = torch.randint(0, 29, (2, 5), generator=torch.Generator().manual_seed(1))
    within = model.generate(prompt, 11, temperature=0)
    assert torch.equal(within, model.generate(prompt, 11, temperature=0, use_cache=False))
    made = spy_caches(model, monkeypatch)
    fast = model.generate(prompt, 59, temperature=0)
    (caches,) = made
    assert all(isinstance(c, LinearAttentionState) and c.length == 63 and c.kv.shape == (2, 4, 8, 8) for c in caches)
    with torch.no_grad():
        logits = model(fast[:, :-1].clone())
    assert torch.equal(logits[:, 4:].argmax(-1), fast[:, 5:])


CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 30
ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "attention",
    [["attention=linear"], ["attention=linear", "position=rope"], ["window=4", "position=rope"]],
    ids=["linear", "linear-rope", "banded-window-rope"],
)
def test_fit_check_and_generate_past_the_block_from_the_cli(attention, tmp_path, capsys):
    """2 training steps on blocks of 140 (the banded path and three linear-attention chunks), tzoo check,
    then tzoo generate 300 tokens, past block_size: the model is unbounded (no learned positions)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    # no learned positions, in a file: on the command line tzoo reads net.position=none as null
    overlay = tmp_path / "relative.yaml"
    overlay.write_text("model:\n  init_args:\n    net:\n      position: none\n")
    args = [
        "--config", str(ROOT / "configs/lm/shakespeare_char.yaml"), f"--data.init_args.corpus={corpus}",
        f"--data.init_args.cache_dir={tmp_path / 'cache'}", "--data.init_args.block_size=140", "--data.init_args.batch_size=2",
        "--model.init_args.net.block_size=140", "--model.init_args.sample_tokens=0", "--config", str(overlay),
        "--model.init_args.net.transformer.dim=16", "--model.init_args.net.transformer.depth=1",
        "--model.init_args.net.transformer.num_heads=2", *(f"--model.init_args.net.transformer.{a}" for a in attention),
    ]  # fmt: skip
    main(["fit", *args, "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=2",
          "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path / 'runs'}"])  # fmt: skip
    (ckpt,) = (tmp_path / "runs").rglob("last.ckpt")
    capsys.readouterr()
    main(["check", *args])
    out = capsys.readouterr().out
    assert "tzoo check: all checks passed" in out and ("attention linear" in out or "attention window 4" in out), out
    main(["generate", "--ckpt", str(ckpt), "--prompt", "First", "--max_new_tokens", "300", "--seed", "0"])
    assert capsys.readouterr().out.startswith("First")  # an untrained model may end early with end-of-text
    text = load_module(str(ckpt)).sample("First", max_new_tokens=300, seed=0, stop_at_eot=False)
    assert text.startswith("First") and len(text) >= 300
