"""Hugging Face ``DecisionTransformerModel`` weights in and out of the decision task's model.

HF's Decision Transformer is tzoo's (continuous actions) on a GPT-2 backbone: the same interleaved
(R, s, a) nodes, timestep embeddings shared by a step's three nodes, a LayerNorm over the node
embeddings, a pre-norm decoder (ReLU MLP by default, ``feed_forward: relu``) and a tanh action
head read at the state nodes. What differs is folded into weights, exactly:

- HF runs its GPT-2 with every position id 0, so one learned vector (``encoder.wpe.weight[0]``) is
  added to every node after the embedding LayerNorm: it is the same as adding it to that norm's
  bias. Export writes tzoo's norm bias as ``embed_ln.bias`` and zero position rows.
- tzoo adds a learned role embedding (return, state, action) before the norm; HF has none. Each
  role's vector is a constant added to one projection's output, the same as adding it to that
  projection's bias: export folds it in, import sets it to zero.
- HF's ``predict_state`` / ``predict_return`` (read at the action nodes) are tzoo's optional
  ``state_return_heads`` (on after an import; zeros when exporting a model without them).
- HF's model takes its inputs as given; tzoo's tokenizer normalises them with buffers (state mean
  and std, a return scale, action bounds). An imported model gets the identity (mean 0, std 1,
  scale 1, bounds [-1, 1]) unless ``statistics`` are given; an export writes tzoo's into
  ``config.json`` under ``"tzoo"`` (with ``context_length`` and ``env_id``): the exported HF model
  expects inputs normalised with them, and re-importing restores them.

    model = load_hf_dt("path/to/dt")                 # config.json + model.safetensors / pytorch_model.bin
    save_hf_dt(model, "out/", env_id="Pendulum-v1")  # DecisionTransformerModel.from_pretrained("out/") loads it

Discrete actions (tzoo's CartPole model) have no HF layout. Loading never runs code from the files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tzoo.core import TransformerConfig
from tzoo.tasks.decision.model import DecisionTransformerModel, DTConfig
from tzoo.tasks.decision.tokenizer import DatasetStatistics
from tzoo.tasks.lm.gpt2 import _BLOCK as GPT2_BLOCK  # DT's backbone is GPT-2's block, Conv1D layout included
from tzoo.tasks.hub import HUB_EXTRA, hub_folder
from tzoo.tasks.lm.gpt2 import safetensors_torch
from tzoo.tasks.reliability import read_checkpoint

__all__ = ["dt_config", "dt_folder", "from_hf", "load_hf_dt", "save_hf_dt", "saved_statistics", "to_hf"]

_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_MODEL_TYPE = "decision_transformer"
_ROLE_BIAS = ("embed_return.bias", "embed_state.bias", "embed_action.bias")  # in tzoo's role order (return, state, action)
_TOP = {  # tzoo name <- HF name, the same tensor
    "tokenizer.embed_return.weight": "embed_return.weight", "tokenizer.embed_return.bias": "embed_return.bias",
    "tokenizer.embed_state.weight": "embed_state.weight", "tokenizer.embed_state.bias": "embed_state.bias",
    "tokenizer.embed_action.weight": "embed_action.weight", "tokenizer.embed_action.bias": "embed_action.bias",
    "tokenizer.embed_timestep.weight": "embed_timestep.weight", "tokenizer.norm.weight": "embed_ln.weight",
    "decoder.norm.weight": "encoder.ln_f.weight", "decoder.norm.bias": "encoder.ln_f.bias",
    "head.weight": "predict_action.0.weight", "head.bias": "predict_action.0.bias",
    "head_state.weight": "predict_state.weight", "head_state.bias": "predict_state.bias",
    "head_return.weight": "predict_return.weight", "head_return.bias": "predict_return.bias",
}  # fmt: skip
_STATISTICS = ("state_mean", "state_std", "return_scale", "return_max", "action_low", "action_high")


def dt_config(hf: dict[str, Any], *, context_length: int = 20) -> DTConfig:
    """The ``DTConfig`` of an HF ``DecisionTransformerConfig`` (its ``config.json`` as a dict).
    HF's config has no window length: ``context_length`` (K steps; 20 in the paper's and HF's MuJoCo
    models) unless the folder was exported by tzoo."""
    activation = hf.get("activation_function", "relu")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"Decision Transformer config activation_function={activation!r} is not one tzoo has (valid: {', '.join(_ACTIVATIONS)})")
    for key, plain in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False), ("add_cross_attention", False), ("action_tanh", True)):
        if hf.get(key, plain) != plain:
            raise ValueError(f"Decision Transformer config {key}={hf[key]!r}: tzoo's model has only {key}={plain}")
    dim = hf.get("hidden_size", 128)
    stack = TransformerConfig(
        dim=dim,
        depth=hf.get("n_layer", 3),
        num_heads=hf.get("n_head", 1),
        mlp_ratio=(hf.get("n_inner") or 4 * dim) / dim,
        feed_forward=_ACTIVATIONS[activation],  # type: ignore[arg-type]
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        bias=True,
        dropout=hf.get("resid_pdrop", 0.1),
        attn_dropout=hf.get("attn_pdrop", 0.1),
    )
    saved = hf.get("tzoo") or {}
    return DTConfig(
        obs_dim=hf.get("state_dim", 17), act_dim=hf.get("act_dim", 4), discrete=False, max_timestep=hf.get("max_ep_len", 4096),
        context_length=saved.get("context_length", context_length), state_return_heads=True, transformer=stack,
    )  # fmt: skip


def _hf_json(model: DecisionTransformerModel, env_id: str | None) -> dict[str, Any]:
    cfg, t = model.cfg, model.cfg.transformer
    if cfg.discrete:
        raise ValueError(
            "a decision transformer with discrete actions has no Hugging Face layout (HF's DecisionTransformerModel "
            "embeds and predicts continuous actions); export it --to safetensors"
        )
    if t.position != "none" or t.feed_forward not in ("gelu", "gelu_tanh", "relu") or not t.bias or t.norm != "layernorm" or not t.norm_first:
        raise ValueError(
            f"only a GPT-2-shaped stack exports to HF's Decision Transformer (no relative positions, a GELU/ReLU MLP, "
            f"biases, pre-norm LayerNorm); this one has transformer.position={t.position!r}, feed_forward={t.feed_forward!r}, "
            f"bias={t.bias}, norm={t.norm!r}, norm_first={t.norm_first}"
        )
    if t.num_kv_heads not in (None, t.num_heads) or t.window or t.top_k or t.num_memory or t.attention != "softmax" or t.layer_scale or t.qk_norm:
        raise ValueError(
            "only full softmax multi-head attention exports to HF's Decision Transformer (no num_kv_heads, window, "
            "top_k, num_memory, linear attention, layer_scale or qk_norm)"
        )
    activation = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new"}[t.feed_forward]
    out = {
        "architectures": ["DecisionTransformerModel"], "model_type": _MODEL_TYPE, "state_dim": cfg.obs_dim, "act_dim": cfg.act_dim,
        "hidden_size": t.dim, "max_ep_len": cfg.max_timestep, "action_tanh": True, "vocab_size": 1, "n_positions": 1024,
        "n_layer": t.depth, "n_head": t.num_heads, "n_inner": int(t.mlp_ratio * t.dim), "activation_function": activation,
        "resid_pdrop": t.dropout, "embd_pdrop": t.dropout, "attn_pdrop": t.attn_dropout, "layer_norm_epsilon": t.norm_eps,
        "bos_token_id": None, "eos_token_id": None,
    }  # fmt: skip
    tokenizer = model.tokenizer
    saved: dict[str, Any] = {"context_length": cfg.context_length, "env_id": env_id}
    if tokenizer.has_statistics:
        saved["inputs"] = (
            "normalised by tzoo: states (s - state_mean) / state_std, returns_to_go / return_scale, actions mapped from "
            "[action_low, action_high] to [-1, 1]; action_preds are in [-1, 1]"
        )
        for name in _STATISTICS:
            value = getattr(tokenizer, name)
            saved[name] = value.tolist() if value.dim() else (None if math.isnan(value.item()) else value.item())
    out["tzoo"] = saved
    return out


# --- state dicts --------------------------------------------------------------------------------


def from_hf(state: dict[str, Tensor], cfg: DTConfig) -> dict[str, Tensor]:
    """HF ``DecisionTransformerModel`` parameters -> the parameters of ``DecisionTransformerModel(cfg)``
    (not its statistics buffers). A missing tensor is a ValueError naming it."""
    for key in ("encoder.wpe.weight", "embed_ln.bias", *_TOP.values()):
        if key not in state:
            raise ValueError(f"the Decision Transformer weights have no {key!r}; found e.g. {sorted(state)[:4]}")
    out = {ours: state[theirs] for ours, theirs in _TOP.items()}
    dim = state["embed_ln.bias"].shape[0]
    # position 0 is added to every node right after the embedding LayerNorm: part of the norm's bias
    out["tokenizer.norm.bias"] = state["embed_ln.bias"] + state["encoder.wpe.weight"][0]
    out["tokenizer.embed_role.weight"] = torch.zeros(3, dim)
    for i in range(cfg.transformer.depth):
        for ours, (theirs, transpose) in GPT2_BLOCK.items():
            key = f"encoder.h.{i}.{theirs}"
            if key not in state:
                raise ValueError(f"the Decision Transformer weights have no {key!r}: fewer than n_layer={cfg.transformer.depth} blocks")
            out[f"decoder.blocks.{i}.{ours}"] = state[key].t() if transpose else state[key]
    return out


def to_hf(model: DecisionTransformerModel, *, n_positions: int = 1024) -> dict[str, Tensor]:
    """The model's parameters in ``DecisionTransformerModel``'s layout (the role embedding folded
    into the input projections' biases, zero position rows, zero state/return heads if it has none)."""
    _hf_json(model, None)  # refuses models HF's layout cannot hold
    ours = {k: v.detach() for k, v in model.state_dict().items()}
    dim, obs_dim = model.cfg.transformer.dim, model.tokenizer.obs_dim
    zeros = {"head_state.weight": (obs_dim, dim), "head_state.bias": (obs_dim,), "head_return.weight": (1, dim), "head_return.bias": (1,)}
    out = {theirs: ours[name] if name in ours else torch.zeros(zeros[name]) for name, theirs in _TOP.items()}
    role = ours["tokenizer.embed_role.weight"]  # (3, D)
    for r, key in enumerate(_ROLE_BIAS):
        out[key] = out[key] + role[r]
    out["embed_ln.bias"] = ours["tokenizer.norm.bias"]
    out["encoder.wpe.weight"] = torch.zeros(n_positions, dim)
    out["encoder.wte.weight"] = torch.zeros(1, dim)  # unused: HF feeds embeddings, not token ids
    for i in range(model.cfg.transformer.depth):
        for name, (theirs, transpose) in GPT2_BLOCK.items():
            value = ours[f"decoder.blocks.{i}.{name}"]
            out[f"encoder.h.{i}.{theirs}"] = value.t() if transpose else value
    return {k: v.contiguous().clone() for k, v in out.items()}


# --- files --------------------------------------------------------------------------------------


def dt_folder(path: str | Path) -> Path:
    """A local folder as it is, or a hub id (``owner/name``) downloaded once into the Hugging Face cache."""
    return hub_folder(
        path, files=["config.json", *_WEIGHT_FILES],
        missing=f"Decision Transformer folder {str(path)!r} does not exist: give an HF DecisionTransformerModel folder or a hub id",
        unreachable=f"Decision Transformer {str(path)!r} is not a local folder and could not be downloaded from the Hugging Face hub "
        f"({{error}}); offline, give a local folder holding config.json and model.safetensors",
    )  # fmt: skip


def saved_statistics(path: str | Path) -> DatasetStatistics | None:
    """The normalisation statistics a tzoo export wrote into the folder's config.json, or None."""
    config = dt_folder(path) / "config.json"
    if not config.is_file():
        return None
    hf = json.loads(config.read_text(encoding="utf-8"))
    saved = hf.get("tzoo") or {}
    return None if saved.get("state_mean") is None else _saved_statistics(saved, dt_config(hf))


def load_hf_dt(path: str | Path, *, context_length: int = 20, statistics: DatasetStatistics | None = None) -> DecisionTransformerModel:
    """A ``DecisionTransformerModel`` (eval mode) holding an HF Decision Transformer folder's (or hub id's) weights.
    ``statistics``: the normalisation its inputs were trained with (default: those an export by tzoo
    saved, else the identity); ``context_length``: see ``dt_config``."""
    folder = dt_folder(path)
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{str(folder)!r} has no config.json: not a Hugging Face Decision Transformer folder")
    hf = json.loads(config.read_text(encoding="utf-8"))
    if hf.get("model_type") != _MODEL_TYPE:
        hint = " (load GPT-2 with tzoo.tasks.lm.gpt2.load_gpt2)" if hf.get("model_type") == "gpt2" else ""
        raise ValueError(f"{str(config)!r} describes a {hf.get('model_type')!r} model, not a Decision Transformer (model_type {_MODEL_TYPE!r}){hint}")
    cfg = dt_config(hf, context_length=context_length)
    weights = next((folder / f for f in _WEIGHT_FILES if (folder / f).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"{str(folder)!r} holds no weights ({' or '.join(_WEIGHT_FILES)})")
    if weights.suffix == ".safetensors":
        state = safetensors_torch().load_file(str(weights))
    else:
        state = read_checkpoint(weights)
    model = DecisionTransformerModel(cfg)
    # every tensor's shape against the layout of the config's own model: the first that differs is named
    expected = to_hf(model, n_positions=hf.get("n_positions", 1024))
    for name, value in expected.items():
        if name in state and state[name].shape != value.shape:
            raise ValueError(
                f"{weights}: {name} is {list(state[name].shape)} in the weights but {list(value.shape)} in a Decision "
                f"Transformer of their config.json (another size or family?)"
            )
    model.load_state_dict({**model.state_dict(), **from_hf(state, cfg)})
    model.tokenizer.set_statistics(statistics or _saved_statistics(hf.get("tzoo") or {}, cfg))
    return model.eval()


def _saved_statistics(saved: dict[str, Any], cfg: DTConfig) -> DatasetStatistics:
    assert cfg.obs_dim is not None and cfg.act_dim is not None
    identity = {
        "state_mean": [0.0] * cfg.obs_dim, "state_std": [1.0] * cfg.obs_dim, "return_scale": 1.0, "return_max": float("nan"),
        "action_low": [-1.0] * cfg.act_dim, "action_high": [1.0] * cfg.act_dim,
    }  # fmt: skip
    value = {k: identity[k] if saved.get(k) is None else saved[k] for k in _STATISTICS}
    return DatasetStatistics(
        state_mean=np.asarray(value["state_mean"], dtype=np.float64), state_std=np.asarray(value["state_std"], dtype=np.float64),
        return_scale=float(value["return_scale"]), action_low=np.asarray(value["action_low"], dtype=np.float64),
        action_high=np.asarray(value["action_high"], dtype=np.float64), return_max=float(value["return_max"]),
    )  # fmt: skip


def save_hf_dt(model: DecisionTransformerModel, folder: str | Path, *, env_id: str | None = None) -> Path:
    """Write ``model`` as an HF Decision Transformer folder (``config.json`` + ``model.safetensors``);
    ``env_id`` is recorded with the normalisation statistics under ``"tzoo"``."""
    save_file = safetensors_torch().save_file
    config = _hf_json(model, env_id)
    state = to_hf(model, n_positions=config["n_positions"])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder
