"""HF Decision Transformer in and out: a DecisionTransformerModel of Pendulum-v1's sizes with weights
of trained scale, saved in its own format, imported into tzoo's decision model, gives the same
actions, states and returns; tzoo's export loads back into HF with the same outputs. Bad folders
are named."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tzoo.tasks.decision.hf_dt import load_hf_dt, save_hf_dt  # noqa: E402

STATE_DIM, ACT_DIM = 3, 1  # Pendulum-v1, the decision task's continuous environment
B, K = 3, 10


def _trained_scale(model: torch.nn.Module, seed: int = 0) -> None:
    """Activations of order 1, biases and LayerNorm gains away from 0 and 1 (at the 0.02-std init
    ReLU vs GELU or a missing position vector would hide below the tolerance)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
            else:  # the heads by their fan-in: a saturated tanh would hide differences in the actions
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(4 * p.shape[1] if name.startswith("predict") else min(p.shape)))


def _hf_dt(activation: str = "relu") -> torch.nn.Module:
    config = transformers.DecisionTransformerConfig(
        state_dim=STATE_DIM, act_dim=ACT_DIM, hidden_size=64, n_layer=2, n_head=2, max_ep_len=200, n_positions=64,
        activation_function=activation, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    model = transformers.DecisionTransformerModel(config).eval()
    _trained_scale(model)
    return model


def _inputs():
    g = torch.Generator().manual_seed(1)
    states = torch.randn(B, K, STATE_DIM, generator=g)
    actions = torch.rand(B, K, ACT_DIM, generator=g) * 2 - 1  # in [-1, 1]: tzoo's identity bounds leave them as they are
    returns = torch.randn(B, K, 1, generator=g)
    timesteps = torch.randint(0, 200, (B, K), generator=g)
    mask = torch.ones(B, K, dtype=torch.bool)
    mask[1, 7:] = False  # right padding, the layout tzoo takes
    return states, actions, returns, timesteps, mask


def _hf_outputs(model, inputs):
    states, actions, returns, timesteps, mask = inputs
    with torch.no_grad():
        out = model(states=states, actions=actions, returns_to_go=returns, timesteps=timesteps, attention_mask=mask.long())
    return out.action_preds, out.state_preds, out.return_preds


def _tzoo_outputs(model, inputs):
    states, actions, returns, timesteps, mask = inputs
    with torch.no_grad():
        out = model.predict(returns.squeeze(-1), states, actions, timesteps, mask)
    return out.actions, out.states, out.returns


def _max_diff(a, b, mask):
    return max((x[mask] - y[mask]).abs().max().item() for x, y in zip(a, b))


def test_hf_decision_transformer_imports_with_the_same_outputs_and_exports_back(tmp_path):
    reference = _hf_dt()
    reference.save_pretrained(tmp_path / "hf")
    model = load_hf_dt(tmp_path / "hf", context_length=K)
    inputs, mask = _inputs(), _inputs()[-1]
    theirs = _hf_outputs(reference, inputs)
    assert theirs[1][mask].abs().mean() > 0.5  # trained scale: the comparison can see small differences
    assert theirs[0][mask].abs().mean() < 0.8  # and the actions' tanh is not saturated
    assert _max_diff(_tzoo_outputs(model, inputs), theirs, mask) < 1e-4  # measured 2.4e-7 (actions), 6e-7 (states, returns)
    assert model.cfg.transformer.feed_forward == "relu" and not model.discrete

    with torch.no_grad():  # fine-tuned in tzoo: a role embedding of its own must fold into the export
        model.tokenizer.embed_role.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
    ours = _tzoo_outputs(model, inputs)
    save_hf_dt(model, tmp_path / "out", env_id="Pendulum-v1")
    back = transformers.DecisionTransformerModel.from_pretrained(tmp_path / "out").eval()
    assert _max_diff(_hf_outputs(back, inputs), ours, mask) < 1e-4
    again = load_hf_dt(tmp_path / "out")
    assert again.context_length == K  # saved with the export
    assert _max_diff(_tzoo_outputs(again, inputs), ours, mask) < 1e-4


def test_the_activation_matters_at_trained_scale(tmp_path):
    """Guards the test above: GELU where the model has ReLU is visible at this scale."""
    reference = _hf_dt()
    reference.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "activation_function": "gelu"}))
    inputs = _inputs()
    assert _max_diff(_tzoo_outputs(load_hf_dt(tmp_path / "hf", context_length=K), inputs), _hf_outputs(reference, inputs), inputs[-1]) > 1e-2


def test_statistics_travel_with_an_export(tmp_path):
    from tzoo.tasks.decision.model import DecisionTransformerModel, DTConfig
    from tzoo.tasks.decision.tokenizer import DatasetStatistics
    from tzoo.core import TransformerConfig
    import numpy as np

    model = DecisionTransformerModel(DTConfig(STATE_DIM, ACT_DIM, False, 50, 5, transformer=TransformerConfig(dim=32, depth=1, num_heads=2)))
    stats = DatasetStatistics(np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.0, 2.0]), 100.0, np.array([-2.0]), np.array([2.0]), -150.0)
    model.tokenizer.set_statistics(stats)
    save_hf_dt(model.eval(), tmp_path / "out", env_id="Pendulum-v1")
    saved = json.loads((tmp_path / "out" / "config.json").read_text())["tzoo"]
    assert saved["env_id"] == "Pendulum-v1" and saved["return_scale"] == 100.0 and saved["state_std"] == [0.5, 1.0, 2.0]
    again = load_hf_dt(tmp_path / "out")
    for name in ("state_mean", "state_std", "return_scale", "return_max", "action_low", "action_high"):
        assert torch.equal(getattr(again.tokenizer, name), getattr(model.tokenizer, name)), name


def test_bad_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'.*nothing' does not exist"):
        load_hf_dt(tmp_path / "nothing")
    reference = _hf_dt()
    reference.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    with pytest.raises(FileNotFoundError, match=r"holds no weights \(model\.safetensors or pytorch_model\.bin\)"):
        load_hf_dt(tmp_path / "hf")
    (tmp_path / "elsewhere.safetensors").rename(tmp_path / "hf" / "model.safetensors")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "state_dim": 4}))  # weights of another size
    with pytest.raises(ValueError, match=r"embed_state\.weight is \[64, 3\] in the weights but \[64, 4\]"):
        load_hf_dt(tmp_path / "hf")
    transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=11, n_positions=8, n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match=r"describes a 'gpt2' model, not a Decision Transformer .*load_gpt2"):
        load_hf_dt(tmp_path / "gpt2")


def test_a_discrete_model_is_not_exported(tmp_path):
    from tzoo.core import TransformerConfig
    from tzoo.tasks.decision.model import DecisionTransformerModel, DTConfig

    model = DecisionTransformerModel(DTConfig(4, 2, True, 50, 5, transformer=TransformerConfig(dim=16, depth=1, num_heads=2)))
    with pytest.raises(ValueError, match=r"discrete actions has no Hugging Face layout .* --to safetensors"):
        save_hf_dt(model, tmp_path / "out")


def test_a_hub_id_without_network_and_a_missing_extra_are_named(tmp_path, monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match=r"'someone/dt' is not a local folder and could not be downloaded .* offline, give a local folder"):
        load_hf_dt("someone/dt")
    _hf_dt().save_pretrained(tmp_path / "hf")
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if tzoo[hub] were not installed
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ImportError, match=r"safetensors package of tzoo's hub extra: pip install 'tzoo\[hub\]'"):
        load_hf_dt(tmp_path / "hf")

