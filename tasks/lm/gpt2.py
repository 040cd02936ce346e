"""GPT-2 weights in and out of the LM's ``GPT``: Hugging Face ``GPT2LMHeadModel`` folders
(``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``) and nanoGPT checkpoints
(``ckpt.pt``: ``model_args`` + ``model``).

GPT-2 is the core's pre-norm decoder with learned positions, biases everywhere, LayerNorm
(eps 1e-5), the tanh approximation of GELU ("gelu_new") and the head tied to the token embedding,
so importing is renaming: HF's ``Conv1D`` stores its weights as (in, out), a ``Linear`` as
(out, in); the fused q/k/v projection has the same order in both. nanoGPT uses exact GELU and
``Linear`` layers, optionally without biases (a missing LayerNorm bias is a zero one).

    model = load_gpt2("path/to/gpt2")               # an HF folder, or a nanoGPT ckpt.pt
    tokenizer = load_gpt2_tokenizer("path/to/gpt2")  # its byte-level BPE (tokenizer.json, or vocab.json + merges.txt)
    save_gpt2(model, "out/")                         # GPT2LMHeadModel.from_pretrained("out/") loads it

A hub id (``openai-community/gpt2``) in place of a folder is downloaded once into the Hugging Face
cache (``huggingface_hub``, tzoo's ``hub`` extra); offline, give the local folder.

Loading never runs code from the files (safetensors, or ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tzoo.tasks.hub import HUB_EXTRA, hub_folder
from tzoo.core import TransformerConfig
from tzoo.tasks.lm.model import GPT, GPTConfig
from tzoo.tasks.reliability import read_checkpoint

__all__ = ["from_hf", "gpt2_config", "gpt2_folder", "load_gpt2", "load_gpt2_tokenizer", "save_gpt2", "to_hf"]

_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt")


def safetensors_torch() -> Any:
    """``safetensors.torch``, or an ImportError naming the extra that installs it (the base install
    has no safetensors)."""
    try:
        import safetensors.torch
    except ImportError:
        raise ImportError(f"reading and writing Hugging Face weight files needs the safetensors package of tzoo's hub extra: {HUB_EXTRA}") from None
    return safetensors.torch


def gpt2_config(hf: dict[str, Any]) -> GPTConfig:
    """The ``GPTConfig`` of an HF GPT-2 ``config.json`` (as a dict)."""
    activation = hf.get("activation_function", "gelu_new")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"GPT-2 config activation_function={activation!r} is not one tzoo has (valid: {', '.join(_ACTIVATIONS)})")
    dim = hf["n_embd"]
    stack = TransformerConfig(
        dim=dim,
        depth=hf["n_layer"],
        num_heads=hf["n_head"],
        mlp_ratio=(hf.get("n_inner") or 4 * dim) / dim,
        feed_forward=_ACTIVATIONS[activation],  # type: ignore[arg-type]
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        bias=True,
    )
    return GPTConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], position="learned", transformer=stack)


def _hf_json(cfg: GPTConfig) -> dict[str, Any]:
    t = cfg.transformer
    if cfg.position != "learned" or t.position != "none" or t.feed_forward not in ("gelu_tanh", "gelu", "relu"):
        raise ValueError(
            f"only a GPT-2-shaped model exports to GPT-2's layout (learned positions, no relative ones, a GELU/ReLU MLP); "
            f"this one has net.position={cfg.position!r}, transformer.position={t.position!r}, feed_forward={t.feed_forward!r}"
        )
    if t.norm != "layernorm" or not t.norm_first or t.num_kv_heads not in (None, t.num_heads) or t.window or t.top_k or t.num_memory:
        raise ValueError("only a pre-norm LayerNorm stack with full multi-head attention exports to GPT-2's layout")
    extra = {"net.tie_embeddings": (cfg.tie_embeddings, True), "net.logit_softcap": (cfg.logit_softcap, None),
             "net.transformer.qk_norm": (t.qk_norm, False)}  # fmt: skip
    for name, (value, needed) in extra.items():
        if value != needed:
            raise ValueError(f"GPT-2's layout has no place for {name}={value!r}: only a model with {name}={needed!r} exports to it")
    activation = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}[t.feed_forward]
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": cfg.vocab_size, "n_positions": cfg.block_size,
        "n_embd": t.dim, "n_layer": t.depth, "n_head": t.num_heads, "n_inner": int(t.mlp_ratio * t.dim),
        "activation_function": activation, "layer_norm_epsilon": t.norm_eps, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
        "attn_pdrop": 0.0, "tie_word_embeddings": True, "bos_token_id": cfg.vocab_size - 1, "eos_token_id": cfg.vocab_size - 1,
    }  # fmt: skip


# --- state dicts --------------------------------------------------------------------------------

# tzoo name (per block) <- (GPT-2 name, Conv1D weight stored as (in, out)?)
_BLOCK = {
    "attn_norm.weight": ("ln_1.weight", False), "attn_norm.bias": ("ln_1.bias", False),
    "attn.qkv_proj.weight": ("attn.c_attn.weight", True), "attn.qkv_proj.bias": ("attn.c_attn.bias", False),
    "attn.out_proj.weight": ("attn.c_proj.weight", True), "attn.out_proj.bias": ("attn.c_proj.bias", False),
    "ff_norm.weight": ("ln_2.weight", False), "ff_norm.bias": ("ln_2.bias", False),
    "feed_forward.fc1.weight": ("mlp.c_fc.weight", True), "feed_forward.fc1.bias": ("mlp.c_fc.bias", False),
    "feed_forward.fc2.weight": ("mlp.c_proj.weight", True), "feed_forward.fc2.bias": ("mlp.c_proj.bias", False),
}  # fmt: skip
_TOP = {"embed.weight": "wte.weight", "pos.weight": "wpe.weight", "decoder.norm.weight": "ln_f.weight", "decoder.norm.bias": "ln_f.bias"}


def from_hf(state: dict[str, Tensor], cfg: GPTConfig, *, conv1d: bool = True) -> dict[str, Tensor]:
    """GPT-2 parameters (HF ``transformer.*`` / bare, or nanoGPT's with ``conv1d=False``) -> the
    state dict of ``GPT(cfg)``. A missing LayerNorm bias (nanoGPT ``bias=False``) becomes zeros; a
    missing or wrongly shaped tensor is a ValueError naming it."""
    state = {k.removeprefix("_orig_mod.").removeprefix("transformer."): v for k, v in state.items()}
    dim = cfg.transformer.dim
    out: dict[str, Tensor] = {}

    def take(theirs: str, ours: str, transpose: bool) -> None:
        if theirs not in state:
            if ours.endswith("norm.bias"):  # a LayerNorm without bias: the same as a zero one
                out[ours] = torch.zeros(dim)
                return
            if ours.endswith(".bias") and not cfg.transformer.bias:
                return
            raise ValueError(f"the GPT-2 weights have no {theirs!r} (for {ours}); found e.g. {sorted(state)[:4]}")
        value = state[theirs]
        out[ours] = value.t().contiguous() if transpose and conv1d else value

    for ours, theirs in _TOP.items():
        take(theirs, ours, False)
    for i in range(cfg.transformer.depth):
        for ours, (theirs, transpose) in _BLOCK.items():
            take(f"h.{i}.{theirs}", f"decoder.blocks.{i}.{ours}", transpose)
    out["head.weight"] = out["embed.weight"]  # tied
    return out


def to_hf(model: GPT) -> dict[str, Tensor]:
    """``GPT``'s parameters in ``GPT2LMHeadModel``'s layout (``transformer.*``, ``lm_head.weight``).
    A model without biases (``bias: false``) gets zero ones: GPT-2 always has them."""
    _hf_json(model.cfg)  # refuses models GPT-2's layout cannot hold
    ours = dict(model.state_dict())
    for name in [k for k in ours if k.endswith(".weight") and k != "head.weight"]:
        bias = name.removesuffix(".weight") + ".bias"
        if bias not in ours and not name.endswith(("embed.weight", "pos.weight")):
            ours[bias] = torch.zeros(ours[name].shape[0], dtype=ours[name].dtype)
    out = {f"transformer.{theirs}": ours[name] for name, theirs in _TOP.items()}
    for i in range(model.cfg.transformer.depth):
        for name, (theirs, transpose) in _BLOCK.items():
            value = ours[f"decoder.blocks.{i}.{name}"]
            out[f"transformer.h.{i}.{theirs}"] = value.t() if transpose else value
    out["lm_head.weight"] = ours["head.weight"]
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


# --- files --------------------------------------------------------------------------------------


def gpt2_folder(path: str | Path) -> Path:
    """A local GPT-2 folder as it is, or a hub id (``owner/name``) downloaded once into the Hugging
    Face cache (config, weights and tokenizer files only)."""
    return hub_folder(
        path, files=["config.json", *_WEIGHT_FILES, *_TOKENIZER_FILES],
        missing=f"GPT-2 weights {str(path)!r} do not exist: give an HF GPT-2 folder, a hub id (owner/name) or a nanoGPT ckpt.pt",
        unreachable=f"GPT-2 weights {str(path)!r} are not a local folder and could not be downloaded from the Hugging Face hub "
        f"({{error}}); offline, give a local folder holding config.json, model.safetensors and the "
        f"tokenizer (e.g. one saved with GPT2LMHeadModel.save_pretrained and the tokenizer's save_pretrained)",
    )  # fmt: skip


def load_gpt2_tokenizer(path: str | Path) -> Any:
    """The byte-level BPE of a GPT-2 folder (or hub id) as a tzoo ``BPETokenizer``: its
    ``tokenizer.json``, or GPT-2's original ``vocab.json`` + ``merges.txt``. ``<|endoftext|>`` must
    be in the vocabulary (it is tzoo's end-of-text token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from tzoo.tasks.text import EOT, BPETokenizer

    folder = gpt2_folder(path)
    if (folder / "tokenizer.json").is_file():
        hf = Tokenizer.from_file(str(folder / "tokenizer.json"))
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        hf = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's split regex, no prefix space
        hf.decoder = decoders.ByteLevel()
        hf.add_special_tokens([EOT])
    else:
        raise FileNotFoundError(f"{str(folder)!r} holds no GPT-2 tokenizer (tokenizer.json, or vocab.json and merges.txt)")
    try:
        return BPETokenizer(hf)
    except ValueError as exc:
        raise ValueError(f"the tokenizer of {str(folder)!r} is not GPT-2's: {exc}") from None


def load_gpt2(path: str | Path) -> GPT:
    """A ``GPT`` holding the weights of an HF GPT-2 folder (or hub id) or a nanoGPT checkpoint file."""
    if Path(path).expanduser().is_file():
        return _load_nanogpt(Path(path).expanduser())
    path = gpt2_folder(path)
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{str(path)!r} has no config.json: not a Hugging Face GPT-2 folder")
    hf = json.loads(config.read_text(encoding="utf-8"))
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"{str(config)!r} describes a {hf.get('model_type')!r} model, not GPT-2 (model_type 'gpt2')")
    cfg = gpt2_config(hf)
    weights = next((path / f for f in _WEIGHT_FILES if (path / f).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"{str(path)!r} holds no weights ({' or '.join(_WEIGHT_FILES)})")
    if weights.suffix == ".safetensors":
        state = safetensors_torch().load_file(str(weights))
    else:
        state = read_checkpoint(weights)
    return _build(cfg, from_hf(state, cfg), str(weights))


def _load_nanogpt(path: Path) -> GPT:
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or "model_args" not in checkpoint or "model" not in checkpoint:
        raise ValueError(f"{str(path)!r} is not a nanoGPT checkpoint (no 'model_args' and 'model')")
    args = checkpoint["model_args"]
    bias = bool(args.get("bias", True))
    stack = TransformerConfig(dim=args["n_embd"], depth=args["n_layer"], num_heads=args["n_head"], bias=bias, feed_forward="gelu")
    cfg = GPTConfig(vocab_size=args["vocab_size"], block_size=args["block_size"], position="learned", transformer=stack)
    return _build(cfg, from_hf(checkpoint["model"], cfg, conv1d=False), str(path))


def _build(cfg: GPTConfig, state: dict[str, Tensor], source: str) -> GPT:
    model = GPT(cfg)
    expected = model.state_dict()
    for name, value in state.items():
        if name in expected and expected[name].shape != value.shape:
            raise ValueError(
                f"{source}: {name} is {list(value.shape)} in the weights but {list(expected[name].shape)} in a GPT of "
                f"their config.json (another size or family?)"
            )
    model.load_state_dict(state)
    return model.eval()


def save_gpt2(model: GPT, folder: str | Path) -> Path:
    """Write ``model`` as an HF GPT-2 folder (``config.json`` + ``model.safetensors``)."""
    save_file = safetensors_torch().save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(_hf_json(model.cfg), indent=2) + "\n", encoding="utf-8")
    state = to_hf(model)
    state.pop("lm_head.weight")  # tied to transformer.wte.weight: safetensors refuses shared storage
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder
