"""`tzoo check`: a good config passes every check; a broken KV cache, a leak of the future and a
conflicting pair of options are each caught and named."""

import textwrap

import pytest
import torch

from tzoo.core import Decoder, Encoder, KVCache, TransformerBlock, TransformerConfig
from tzoo.tasks.check import check_decoder_cache, check_decoder_causality, check_main, run_checks
from tzoo.tasks.cli import main

CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 40


@pytest.fixture
def config(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    path = tmp_path / "lm.yaml"
    path.write_text(textwrap.dedent(f"""\
        seed_everything: 0
        model:
          class_path: tzoo.tasks.lm.module.LanguageModel
          init_args: {{sample_tokens: 0, net: {{block_size: 16, position: none, transformer: {{dim: 16, depth: 2, num_heads: 4, num_kv_heads: 2, position: rope}}}}}}
        data:
          class_path: tzoo.tasks.lm.data.TextDataModule
          init_args: {{corpus: {corpus}, block_size: 16, batch_size: 8, cache_dir: {tmp_path / "cache"}}}
        """))
    return path


def test_a_good_config_passes(config, capsys, tmp_path, monkeypatch):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    model, checks = run_checks(["--config", str(config)])
    assert [c.name for c in checks] == ["config", "kv cache", "causality", "train step", "memory"]
    assert all(c.ok for c in checks), checks
    assert f"{sum(p.numel() for p in model.parameters()):,} parameters" in checks[0].detail
    assert "position rope" in checks[1].detail and "2 kv heads" in checks[1].detail
    assert "at batch 8" in checks[4].detail
    main(["check", "--config", str(config)])
    assert "all checks passed" in capsys.readouterr().out
    assert list(workdir.iterdir()) == []  # nothing written where it was run


def test_a_broken_kv_cache_fails_the_check(config, monkeypatch, capsys):
    # the planted bug: the cache forgets everything but the newest keys/values
    monkeypatch.setattr(KVCache, "append", lambda self, k, v: (k, v))
    with pytest.raises(SystemExit) as exit_:
        check_main(["--config", str(config)])
    assert exit_.value.code == 1
    out = capsys.readouterr()
    assert "FAIL  kv cache    model.decoder: incremental decoding DIFFERS FROM the full forward" in out.out
    assert "check(s) failed: kv cache" in out.err


def test_a_decoder_that_sees_the_future_fails_causality(monkeypatch):
    decoder = Decoder(TransformerConfig(dim=16, depth=1, num_heads=2, window=4, num_memory=2, position="alibi"))
    assert check_decoder_causality(decoder) == (True, None) and check_decoder_cache(decoder)[0]
    forward = TransformerBlock.forward
    monkeypatch.setattr(TransformerBlock, "forward", lambda self, *a, **k: forward(self, *a, **{**k, "is_causal": False}))
    assert check_decoder_causality(decoder) == (False, 0)
    assert not check_decoder_cache(decoder)[0]


@pytest.mark.parametrize("combo", [
    dict(window=3, top_k=2, num_memory=2, position="rope", num_kv_heads=1),
    dict(window=None, top_k=None, num_memory=3, position="alibi", num_kv_heads=2),
])
def test_cache_matches_for_attention_position_memory_combinations(combo):
    torch.manual_seed(0)
    decoder = Decoder(TransformerConfig(dim=16, depth=2, num_heads=2, **combo), cross_attention=True, context_dim=8)
    ok, diff = check_decoder_cache(decoder)
    assert ok and diff < 1e-4
    assert check_decoder_causality(decoder) == (True, None)


@pytest.mark.parametrize("override, message", [
    ("--model.init_args.net.transformer.num_kv_heads=3", r"num_kv_heads=3 conflicts with num_heads=4: .* \(valid: \[1, 2, 4\]\)"),
    ("--model.init_args.net.transformer.dim=12", r"position='rope' conflicts with dim=12 and num_heads=4: .* dim / num_heads = 3 must be even"),
])
def test_conflicting_options_are_rejected_at_config_time(config, override, message):
    with pytest.raises(SystemExit, match=r"tzoo check: the configuration is invalid: " + message):
        check_main(["--config", str(config), override])


def test_conflicting_options_in_the_core_config():
    with pytest.raises(ValueError, match=r"feed_forward='swiglu' conflicts with mlp_ratio=0.01 at dim=16"):
        Encoder(TransformerConfig(dim=16, num_heads=2, feed_forward="swiglu", mlp_ratio=0.01))


def test_check_needs_an_existing_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--config", str(tmp_path / "nope.yaml")])
    assert exit_info.value.code == 2
    assert "tzoo: error: config file '" in capsys.readouterr().err
