"""GPT-2 in and out: an HF GPT2LMHeadModel with weights of trained scale, saved in its own format,
imported into tzoo's GPT, gives the same logits and the same greedy generation; tzoo's export
loads back into HF with the same logits; a nanoGPT checkpoint imports too. Bad folders are named."""

from __future__ import annotations

import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tzoo.tasks.lm.gpt2 import load_gpt2, save_gpt2  # noqa: E402


def _trained_scale(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights whose activations are of order 1 (at the libraries' 0.02-std init, tanh GELU and
    exact GELU differ by ~3e-6 and an equality test would pass by accident)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                base = 1.0 if name.endswith("weight") else 0.0  # LayerNorm gains around 1, biases around 0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(min(p.shape)))


def _hf_gpt2(activation: str = "gelu_new") -> torch.nn.Module:
    config = transformers.GPT2Config(
        vocab_size=97, n_positions=32, n_embd=64, n_layer=2, n_head=4, activation_function=activation,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config).eval()
    _trained_scale(model)
    return model


IDS = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(1))


def test_hf_gpt2_imports_with_the_same_logits_and_exports_back(tmp_path):
    reference = _hf_gpt2()
    reference.save_pretrained(tmp_path / "hf")
    model = load_gpt2(tmp_path / "hf")
    with torch.no_grad():
        theirs = reference(IDS).logits
        ours = model(IDS)
    assert theirs.abs().mean() > 0.5  # trained scale: the comparison can see small differences
    assert (ours - theirs).abs().max() < 1e-5  # the same arithmetic (measured ~1e-6)
    assert model.cfg.transformer.feed_forward == "gelu_tanh"

    save_gpt2(model, tmp_path / "out")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        assert (back(IDS).logits - theirs).abs().max() < 1e-5
    assert (load_gpt2(tmp_path / "out")(IDS) - ours).abs().max() == 0  # export -> re-import is exact


def test_the_activation_matters_at_trained_scale(tmp_path):
    """Guards the test above: exact GELU where GPT-2 has tanh GELU is visible at this scale."""
    reference = _hf_gpt2()
    reference.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["activation_function"] = "gelu"
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with torch.no_grad():
        assert (load_gpt2(tmp_path / "hf")(IDS) - reference(IDS).logits).abs().max() > 2e-4  # measured ~7e-4, 700x the parity


def test_greedy_generation_with_the_kv_cache_equals_hf_token_for_token(tmp_path):
    reference = _hf_gpt2()
    reference.save_pretrained(tmp_path / "hf")
    model = load_gpt2(tmp_path / "hf")
    prompt = IDS[:1, :4]
    theirs = reference.generate(prompt, max_new_tokens=24, do_sample=False, pad_token_id=0)
    ours = model.generate(prompt, 24, temperature=0, use_cache=True)
    assert torch.equal(ours, theirs[:, : ours.shape[1]]) and ours.shape[1] == 28


def test_a_nanogpt_checkpoint_imports(tmp_path):
    reference = _hf_gpt2(activation="gelu")  # nanoGPT's MLP is exact GELU, its layers nn.Linear
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    state = {k: (v.t() if k.endswith(conv1d) else v) for k, v in reference.state_dict().items() if not k.endswith(".attn.bias")}
    args = dict(n_layer=2, n_head=4, n_embd=64, block_size=32, bias=True, vocab_size=97, dropout=0.0)
    torch.save({"model_args": args, "model": {f"_orig_mod.{k}": v for k, v in state.items()}, "iter_num": 5}, tmp_path / "ckpt.pt")
    model = load_gpt2(tmp_path / "ckpt.pt")
    with torch.no_grad():
        assert (model(IDS) - reference(IDS).logits).abs().max() < 1e-5


def test_bad_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'.*nothing' do not exist: give an HF GPT-2 folder, a hub id \(owner/name\) or a nanoGPT ckpt\.pt"):
        load_gpt2(tmp_path / "nothing")
    reference = _hf_gpt2()
    reference.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    with pytest.raises(FileNotFoundError, match=r"holds no weights \(model\.safetensors or pytorch_model\.bin\)"):
        load_gpt2(tmp_path / "hf")
    (tmp_path / "elsewhere.safetensors").rename(tmp_path / "hf" / "model.safetensors")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "n_embd": 32}))  # weights of another size
    with pytest.raises(ValueError, match=r"wte\.weight|embed\.weight is \[97, 64\] in the weights but \[97, 32\]"):
        load_gpt2(tmp_path / "hf")
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "model_type": "vit"}))
    with pytest.raises(ValueError, match=r"describes a 'vit' model, not GPT-2"):
        load_gpt2(tmp_path / "hf")


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    folder = tmp_path / "hf"
    _hf_gpt2().config.save_pretrained(folder)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"refused to load checkpoint .*pytorch_model\.bin"):
        load_gpt2(folder)


def test_a_model_gpt2_cannot_hold_is_not_exported(tmp_path):
    from tzoo.core import TransformerConfig
    from tzoo.tasks.lm.model import GPT, GPTConfig

    rope = GPT(GPTConfig(10, block_size=8, position="none", transformer=TransformerConfig(dim=16, depth=1, num_heads=2, position="rope")))
    with pytest.raises(ValueError, match=r"only a GPT-2-shaped model exports .* transformer.position='rope'"):
        save_gpt2(rope, tmp_path / "out")
