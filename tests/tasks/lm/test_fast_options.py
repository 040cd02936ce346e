"""The LM's time-to-quality options (issue 23): logit soft-capping, an untied / zero-initialised
head, and all of the new core and optimizer options together through a 2-step `tzoo fit`."""

import json

import pytest
import torch

from tzoo.core import TransformerConfig
from tzoo.tasks.cli import main
from tzoo.tasks.lm.model import GPT, GPTConfig
from tzoo.tasks.optim import MuonWithAdamW

TINY = [
    "--model.init_args.net.transformer.dim=16", "--model.init_args.net.transformer.depth=1",
    "--model.init_args.net.transformer.num_heads=2", "--model.init_args.net.transformer.num_kv_heads=null",
    "--model.init_args.sample_tokens=4", "--data.init_args.block_size=16", "--model.init_args.net.block_size=16",
    "--data.init_args.batch_size=2",
]  # fmt: skip  (as tests/test_configs.py's TINY["lm"])


def gpt(**net) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(30, block_size=8, transformer=TransformerConfig(dim=16, depth=1, num_heads=2), **net))


def test_logit_softcap_bounds_the_logits_and_is_the_identity_near_zero():
    plain, capped = gpt(), gpt(logit_softcap=5.0)
    capped.load_state_dict(plain.state_dict())
    with torch.no_grad():
        plain.head.weight.mul_(200)  # tied: the embedding grows too, logits reach far past the cap
        capped.head.weight.mul_(200)
    idx = torch.randint(0, 30, (2, 8))
    raw, out = plain(idx), capped(idx)
    assert raw.abs().max() > 20
    assert out.abs().max() <= 5.0
    assert torch.allclose(out, 5.0 * torch.tanh(raw / 5.0), atol=1e-5)
    small = raw.abs() < 0.2  # tanh(x) ≈ x - x³/3: within 0.2³/3/25 · 5 of the raw logit
    assert small.any() and torch.allclose(out[small], raw[small], atol=1e-3)


def test_untied_and_zero_initialised_head():
    tied, untied, zero = gpt(), gpt(tie_embeddings=False), gpt(tie_embeddings=False, zero_init_head=True)
    assert tied.head.weight is tied.embed.weight
    assert untied.head.weight is not untied.embed.weight and untied.head.weight.abs().sum() > 0
    assert untied.num_params() == tied.num_params() + 30 * 16
    assert torch.count_nonzero(zero.head.weight) == 0 and zero.embed.weight.abs().sum() > 0
    logits = zero(torch.randint(0, 30, (1, 8)))
    assert torch.equal(logits, torch.zeros_like(logits))  # the uniform prediction: loss log(V) at step 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(logit_softcap=0.0), r"net.logit_softcap must be a finite number > 0 \(e.g. 15 or 30\) or None for no cap, got 0.0"),
        (dict(logit_softcap=-3), r"net.logit_softcap must be .* got -3"),
        (dict(logit_softcap=float("inf")), r"net.logit_softcap must be .* got inf"),
        (dict(zero_init_head=True), r"net.zero_init_head=True conflicts with net.tie_embeddings=True.*net.tie_embeddings=false"),
        (dict(tie_embeddings="no"), r"net.tie_embeddings must be True or False, got 'no'"),
    ],
)
def test_bad_head_values(fields, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(30, **fields)


def test_cli_fit_two_steps_with_every_new_option(tmp_path, monkeypatch):
    monkeypatch.setenv("TZOO_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "input.txt"
    corpus.write_text("ROMEO:\nBefore we proceed any further, hear me speak.\n\n" * 50)
    options = [
        "--model.init_args.optim.optimizer=muon", "--model.init_args.optim.muon_lr=0.02",
        "--model.init_args.optim.schedule=wsd", "--model.init_args.optim.decay_fraction=0.5",
        "--model.init_args.net.transformer.qk_norm=true", "--model.init_args.net.transformer.feed_forward=squared_relu",
        "--model.init_args.net.logit_softcap=15", "--model.init_args.net.tie_embeddings=false",
        "--model.init_args.net.zero_init_head=true",
    ]  # fmt: skip
    main([
        "fit", "--config", "configs/lm/shakespeare_char.yaml", *TINY, *options, f"--data.init_args.corpus={corpus}",
        "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
    ])  # fmt: skip
    (ckpt,) = tmp_path.rglob("last.ckpt")
    saved = torch.load(ckpt, weights_only=True)
    net, optim = saved["hyper_parameters"]["net"], saved["hyper_parameters"]["optim"]
    assert optim["optimizer"] == "muon" and optim["schedule"] == "wsd" and net["logit_softcap"] == 15
    assert net["transformer"]["qk_norm"] and net["transformer"]["feed_forward"] == "squared_relu"
    assert any(k.endswith("attn.q_norm.weight") for k in saved["state_dict"])
    assert any("momentum_buffer" in s for s in saved["optimizer_states"][0]["state"].values())
    card = json.loads(next(tmp_path.rglob("run_card.json")).read_text())
    assert card["steps"] == 2


def test_cli_refuses_an_unknown_optimizer(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["fit", "--config", "configs/lm/shakespeare_char.yaml", "--model.init_args.optim.optimizer=lion",
              f"--trainer.default_root_dir={tmp_path}"])  # fmt: skip
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "optim.optimizer='lion' is not one of ('adamw', 'muon')" in err, err


def test_cached_sampling_equals_recomputing_with_every_new_option():
    torch.manual_seed(0)
    stack = TransformerConfig(dim=16, depth=2, num_heads=2, position="rope", qk_norm=True, feed_forward="squared_relu")
    model = GPT(GPTConfig(30, block_size=32, position="none", transformer=stack, logit_softcap=5.0, tie_embeddings=False))
    prompt = torch.randint(0, 30, (2, 3))
    cached = model.generate(prompt, 20, temperature=0, use_cache=True)
    recomputed = model.generate(prompt, 20, temperature=0, use_cache=False)
    assert torch.equal(cached, recomputed)
