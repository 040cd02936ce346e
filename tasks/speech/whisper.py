"""Whisper weights in and out of the speech task's ``SpeechTransformer``: Hugging Face
``WhisperForConditionalGeneration`` folders (``config.json`` + ``model.safetensors`` or
``pytorch_model.bin``, and the tokenizer's files).

Whisper is the core's pre-norm encoder and decoder (LayerNorm eps 1e-5, exact GELU, biases) with
the speech model's Whisper options switched on (``SpeechConfig``): ``frontend='whisper'`` (its
log-mel, audio padded to 30 s and attended whole, two convolutions + GELU without a norm),
``encoder_position='whisper'`` (its sinusoid table: sines, then cosines), learned decoder positions,
the BPE vocabulary, no CTC head; the output projection is tied to the token embedding. Importing is
renaming, and fusing q/k/v into one projection. Whisper's key projections have no bias; tzoo's
fused projection has one, set to zero. A key bias adds q·b to every score of a query, which softmax
ignores, so the export leaves a trained one out without changing any output.

    model = load_whisper("path/to/whisper-tiny")                 # an HF folder (or a hub id, downloaded once)
    text = WhisperText.load("path/to/whisper-tiny")              # its BPE (tokenizer.json, or vocab.json + merges.txt),
    ids = greedy_transcribe(model, wave, prompt=text.prompt, eos=text.eos)   # prompt and end token; wave at 16 kHz
    print(text.tokenizer.decode(ids))
    save_whisper(model, "out/", source="path/to/whisper-tiny")   # from_pretrained("out/") loads it

The speech task fine-tunes from such a folder: ``SpeechRecognizer(pretrained=...)``
(``--model.init_args.pretrained DIR``; ``configs/speech/whisper_tiny_finetune.yaml``).

Loading never runs code from the files (safetensors, or ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tzoo.tasks.hub import HUB_EXTRA, hub_folder
from tzoo.core import TransformerConfig
from tzoo.tasks.reliability import read_checkpoint
from tzoo.tasks.speech.model import SpeechConfig, SpeechTransformer, whisper_sinusoids

__all__ = ["WhisperText", "WhisperTextTokenizer", "from_hf", "greedy_from_encoded", "greedy_transcribe", "load_whisper", "save_whisper",
           "to_hf", "whisper_config", "whisper_net"]

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json",
                    "tokenizer_config.json", "normalizer.json", "preprocessor_config.json", "generation_config.json")  # fmt: skip


def _safetensors() -> Any:
    try:
        import safetensors.torch
    except ImportError:
        raise ImportError(f"reading and writing Whisper folders needs the safetensors package of tzoo's hub extra: {HUB_EXTRA}") from None
    return safetensors.torch


def whisper_config(hf: dict[str, Any]) -> SpeechConfig:
    """The ``SpeechConfig`` of an HF Whisper ``config.json`` (as a dict)."""
    if hf.get("activation_function", "gelu") != "gelu":
        raise ValueError(f"Whisper config activation_function={hf['activation_function']!r}: tzoo's Whisper front end and MLPs are exact GELU ('gelu')")
    if hf.get("scale_embedding", False):
        raise ValueError("Whisper config scale_embedding=true is not supported (no released Whisper scales its embeddings)")
    dim = hf["d_model"]

    def stack(side: str) -> TransformerConfig:
        return TransformerConfig(
            dim=dim, depth=hf[f"{side}_layers"], num_heads=hf[f"{side}_attention_heads"], mlp_ratio=hf[f"{side}_ffn_dim"] / dim,
            feed_forward="gelu", norm_eps=1e-5, bias=True, dropout=hf.get("dropout", 0.0), attn_dropout=hf.get("attention_dropout", 0.0),
        )  # fmt: skip

    return SpeechConfig(
        n_mels=hf.get("num_mel_bins", 80), subsampling=2, max_frames=hf.get("max_source_positions", 1500), encoder_position="whisper",
        frontend="whisper", decoder_position="learned", max_text_positions=hf.get("max_target_positions", 448),
        text_vocab_size=hf["vocab_size"], ctc=False, freq_masks=0, time_masks=0, encoder=stack("encoder"), decoder=stack("decoder"),
    )  # fmt: skip


def _check_exportable(cfg: SpeechConfig) -> None:
    enc, dec = cfg.encoder, cfg.decoder
    whisper_net = {"frontend": (cfg.frontend, "whisper"), "encoder_position": (cfg.encoder_position, "whisper"),
                   "decoder_position": (cfg.decoder_position, "learned")}  # fmt: skip
    for name, (value, needed) in whisper_net.items():
        if value != needed:
            raise ValueError(f"only a Whisper-shaped speech model exports to Whisper's layout: net.{name}={value!r}, Whisper's is {needed!r}")
    for side, t in (("encoder", enc), ("decoder", dec)):
        shape = {"position": (t.position, "none"), "feed_forward": (t.feed_forward, "gelu"), "norm": (t.norm, "layernorm"),
                 "norm_eps": (t.norm_eps, 1e-5), "norm_first": (t.norm_first, True), "bias": (t.bias, True),
                 "attention": (t.attention, "softmax"), "num_kv_heads": (t.num_kv_heads, None), "window": (t.window, None),
                 "top_k": (t.top_k, None), "num_memory": (t.num_memory, 0), "layer_scale": (t.layer_scale, None),
                 "qk_norm": (t.qk_norm, False), "block": (t.block, "transformer"),
                 "dim": (t.dim, enc.dim)}  # fmt: skip
        for name, (value, needed) in shape.items():
            if value != needed and not (name == "num_kv_heads" and value == t.num_heads):
                raise ValueError(f"Whisper's layout needs net.{side}.{name}={needed!r}, this model has {value!r}")


def _hf_json(cfg: SpeechConfig) -> dict[str, Any]:
    _check_exportable(cfg)
    enc, dec = cfg.encoder, cfg.decoder
    return {
        "architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper", "vocab_size": cfg.vocab_size,
        "num_mel_bins": cfg.n_mels, "d_model": enc.dim, "encoder_layers": enc.depth, "encoder_attention_heads": enc.num_heads,
        "encoder_ffn_dim": int(enc.mlp_ratio * enc.dim), "decoder_layers": dec.depth, "decoder_attention_heads": dec.num_heads,
        "decoder_ffn_dim": int(dec.mlp_ratio * dec.dim), "max_source_positions": cfg.max_frames,
        "max_target_positions": cfg.max_text_positions, "activation_function": "gelu", "scale_embedding": False,
        "dropout": enc.dropout, "attention_dropout": enc.attn_dropout, "activation_dropout": 0.0, "tie_word_embeddings": True,
    }  # fmt: skip


# --- state dicts --------------------------------------------------------------------------------

_NORMS = {"attn_norm": "self_attn_layer_norm", "cross_norm": "encoder_attn_layer_norm", "ff_norm": "final_layer_norm"}
_TOP = {
    "frontend.conv1": "model.encoder.conv1", "frontend.conv2": "model.encoder.conv2", "encoder.norm": "model.encoder.layer_norm",
    "decoder.norm": "model.decoder.layer_norm",
}  # fmt: skip


def _block_names(side: str, i: int) -> list[tuple[str, str]]:
    """(tzoo name, HF name) of the unfused tensors of block i (both without .weight / .bias)."""
    ours, theirs = f"{side}.blocks.{i}", f"model.{side}.layers.{i}"
    names = [(f"{ours}.feed_forward.fc1", f"{theirs}.fc1"), (f"{ours}.feed_forward.fc2", f"{theirs}.fc2"),
             (f"{ours}.attn.out_proj", f"{theirs}.self_attn.out_proj")]  # fmt: skip
    if side == "decoder":
        names.append((f"{ours}.cross_attn.out_proj", f"{theirs}.encoder_attn.out_proj"))
    norms = _NORMS if side == "decoder" else {k: v for k, v in _NORMS.items() if k != "cross_norm"}
    return names + [(f"{ours}.{norm}", f"{theirs}.{hf}") for norm, hf in norms.items()]


def _attentions(side: str, i: int) -> list[tuple[str, str]]:
    """(tzoo fused q/k/v projection, HF attention module) of block i."""
    ours, theirs = f"{side}.blocks.{i}", f"model.{side}.layers.{i}"
    pairs = [(f"{ours}.attn.qkv_proj", f"{theirs}.self_attn")]
    return pairs + [(f"{ours}.cross_attn.qkv_proj", f"{theirs}.encoder_attn")] if side == "decoder" else pairs


def from_hf(state: dict[str, Tensor], cfg: SpeechConfig) -> dict[str, Tensor]:
    """``WhisperForConditionalGeneration`` parameters -> the state dict of ``SpeechTransformer(cfg)``
    (q/k/v fused, the missing key biases zero). A missing tensor is a ValueError naming it."""
    state = {k if k.startswith(("model.", "proj_out")) else f"model.{k}": v for k, v in state.items()}  # a bare WhisperModel's too

    def get(name: str) -> Tensor:
        if name not in state:
            raise ValueError(f"the Whisper weights have no {name!r} (found e.g. {sorted(state)[:4]}): not a Whisper model, or fewer layers?")
        return state[name]

    out: dict[str, Tensor] = {"embed.weight": get("model.decoder.embed_tokens.weight"), "dec_pos.weight": get("model.decoder.embed_positions.weight")}
    pairs = list(_TOP.items())
    for side in ("encoder", "decoder"):
        for i in range(getattr(cfg, side).depth):
            pairs += _block_names(side, i)
            for ours, theirs in _attentions(side, i):
                q, k, v = (get(f"{theirs}.{p}_proj.weight") for p in "qkv")
                out[f"{ours}.weight"] = torch.cat([q, k, v])
                out[f"{ours}.bias"] = torch.cat([get(f"{theirs}.q_proj.bias"), torch.zeros(k.shape[0], dtype=k.dtype), get(f"{theirs}.v_proj.bias")])
    for ours, theirs in pairs:
        out[f"{ours}.weight"], out[f"{ours}.bias"] = get(f"{theirs}.weight"), get(f"{theirs}.bias")
    out["head.weight"] = out["embed.weight"]  # tied
    return out


def _check_position_table(state: dict[str, Tensor], cfg: SpeechConfig, source: str) -> None:
    """The encoder's position table is fixed in Whisper (not trained): check the weights hold the
    one tzoo computes."""
    table = state.get("model.encoder.embed_positions.weight", state.get("encoder.embed_positions.weight"))
    if table is None:
        return
    ours = whisper_sinusoids(cfg.max_frames, cfg.encoder.dim)
    if table.shape != ours.shape:
        raise ValueError(f"{source}: model.encoder.embed_positions.weight is {list(table.shape)} in the weights but {list(ours.shape)} in a model of their config.json")
    if (table.float() - ours).abs().max() > 1e-5:
        raise ValueError(
            f"{source}: model.encoder.embed_positions.weight is not Whisper's sinusoid table (max difference "
            f"{(table.float() - ours).abs().max().item():.2e}): tzoo's Whisper encoder keeps that table fixed"
        )


def to_hf(model: SpeechTransformer) -> dict[str, Tensor]:
    """``model``'s parameters in ``WhisperForConditionalGeneration``'s layout (``proj_out.weight``
    tied, so left out; the key biases, which change no output, left out as Whisper has none)."""
    cfg = model.cfg
    _check_exportable(cfg)
    ours = model.state_dict()
    out = {"model.decoder.embed_tokens.weight": ours["embed.weight"], "model.decoder.embed_positions.weight": ours["dec_pos.weight"],
           "model.encoder.embed_positions.weight": whisper_sinusoids(cfg.max_frames, cfg.encoder.dim)}  # fmt: skip
    pairs = list(_TOP.items())
    for side in ("encoder", "decoder"):
        for i in range(getattr(cfg, side).depth):
            pairs += _block_names(side, i)
            for fused, theirs in _attentions(side, i):
                for p, w, b in zip("qkv", ours[f"{fused}.weight"].chunk(3), ours[f"{fused}.bias"].chunk(3)):
                    out[f"{theirs}.{p}_proj.weight"] = w
                    if p != "k":
                        out[f"{theirs}.{p}_proj.bias"] = b
    for name, theirs in pairs:
        out[f"{theirs}.weight"], out[f"{theirs}.bias"] = ours[f"{name}.weight"], ours[f"{name}.bias"]
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


# --- files --------------------------------------------------------------------------------------


def _folder(path: str | Path) -> Path:
    """A local folder, or a hub id (``openai/whisper-tiny``) downloaded once into the Hugging Face cache."""
    return hub_folder(
        path, files=["config.json", *_WEIGHT_FILES, *_TOKENIZER_FILES],
        missing=f"Whisper weights {str(path)!r} do not exist: give a Hugging Face Whisper folder (config.json + model.safetensors) or a hub id",
        unreachable=f"Whisper weights {str(path)!r} are not a local folder and could not be downloaded from the Hugging Face hub "
        f"({{error}}); offline, give a local folder holding config.json and model.safetensors (e.g. one "
        f"saved with WhisperForConditionalGeneration.save_pretrained)",
    )  # fmt: skip


def _read_config(folder: Path) -> dict[str, Any]:
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{str(folder)!r} has no config.json: not a Hugging Face Whisper folder")
    hf = json.loads(config.read_text(encoding="utf-8"))
    if hf.get("model_type") != "whisper":
        raise ValueError(f"{str(config)!r} describes a {hf.get('model_type')!r} model, not Whisper (model_type 'whisper')")
    return hf


def load_whisper(path: str | Path) -> SpeechTransformer:
    """A ``SpeechTransformer`` (eval mode) holding the weights of an HF Whisper folder or hub id."""
    folder = _folder(path)
    hf = _read_config(folder)
    weights = next((folder / f for f in _WEIGHT_FILES if (folder / f).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"{str(folder)!r} holds no weights ({' or '.join(_WEIGHT_FILES)})")
    state = _safetensors().load_file(str(weights)) if weights.suffix == ".safetensors" else read_checkpoint(weights)
    cfg = whisper_config(hf)
    model = SpeechTransformer(cfg)
    ours, expected = from_hf(state, cfg), model.state_dict()
    for name, value in ours.items():
        if expected[name].shape != value.shape:
            raise ValueError(
                f"{weights}: {name} is {list(value.shape)} in the weights but {list(expected[name].shape)} in a model of "
                f"their config.json (another size or family?)"
            )
    _check_position_table(state, cfg, str(weights))
    model.load_state_dict(ours)
    return model.eval()


def save_whisper(model: SpeechTransformer, folder: str | Path, *, source: str | Path | None = None, text: WhisperText | None = None) -> Path:
    """Write ``model`` as an HF Whisper folder (``config.json`` + ``model.safetensors``).

    ``source``: the folder the weights came from; its config.json's other fields (token ids,
    suppressed tokens ...) and its tokenizer / feature extractor / generation files are carried over.
    ``text``: the model's BPE and token ids (a fine-tuned checkpoint's), written as ``tokenizer.json``
    and the config's start / end token ids."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = _hf_json(model.cfg)
    if text is not None:
        config.update(decoder_start_token_id=text.prompt[0], eos_token_id=text.eos, bos_token_id=text.eos, pad_token_id=text.eos)
        text.tokenizer.tokenizer.save(str(folder / "tokenizer.json"))
    if source is not None:
        source = Path(source)
        config = {**json.loads((source / "config.json").read_text(encoding="utf-8")), **config}
        for name in _TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, folder / name)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    _safetensors().save_file(to_hf(model), str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


# --- decoding and text ----------------------------------------------------------------------------


def whisper_net(path: str | Path, like: SpeechConfig) -> SpeechConfig:
    """The ``SpeechConfig`` of the Whisper folder (or hub id) ``path``, with ``like``'s alphabet (the
    characters the data's transcripts hold; the model writes Whisper's BPE)."""
    folder = _folder(path)
    hf = _read_config(folder)
    cfg = whisper_config(hf)
    cfg.alphabet = like.alphabet
    return cfg


@dataclass
class WhisperText:
    """What the speech task needs to write and read Whisper's text: the BPE, the decoder's prompt
    (start of transcript, English, transcribe, no timestamps: those the vocabulary has) and the end token."""

    tokenizer: WhisperTextTokenizer
    prompt: list[int]
    eos: int

    @classmethod
    def load(cls, path: str | Path) -> WhisperText:
        folder = _folder(path)
        tokenizer = WhisperTextTokenizer.load(folder)
        hf = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        vocab = tokenizer.tokenizer.get_vocab(with_added_tokens=True)
        start = vocab.get("<|startoftranscript|>", hf.get("decoder_start_token_id"))
        eos = vocab.get("<|endoftext|>", hf.get("eos_token_id"))
        if start is None or eos is None:
            raise ValueError(f"{str(folder)!r}: neither its tokenizer nor config.json names the decoder start and end tokens")
        prompt = [start] + [vocab[t] for t in ("<|en|>", "<|transcribe|>", "<|notimestamps|>") if t in vocab]
        return cls(tokenizer, prompt, eos)

    def to_dict(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.tokenizer.to_str(), "prompt": self.prompt, "eos": self.eos}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WhisperText:
        from tokenizers import Tokenizer

        return cls(WhisperTextTokenizer(Tokenizer.from_str(data["tokenizer"])), list(data["prompt"]), int(data["eos"]))


@torch.inference_mode()
def greedy_from_encoded(model: SpeechTransformer, encoded: Tensor, *, prompt: list[int], eos: int, max_new_tokens: int) -> list[int]:
    """One utterance's encoder output (1, N, D), every node attended -> the argmax tokens after
    ``prompt`` until ``eos`` (included) or ``max_new_tokens``, with the core's KV caches."""
    limit = min(len(prompt) + max_new_tokens, model.cfg.max_text_positions)
    cache, cross = model.decoder.make_cache(limit), model.decoder.make_cache()
    tokens, step = list(prompt), torch.tensor([prompt], device=encoded.device)
    while len(tokens) < limit:
        nxt = int(model.decode(step, encoded, None, cache=cache, cross_cache=cross)[0, -1].argmax())
        tokens.append(nxt)
        if nxt == eos:
            break
        step = torch.tensor([[nxt]], device=encoded.device)
    return tokens[len(prompt) :]


@torch.inference_mode()
def greedy_transcribe(
    model: SpeechTransformer, wave: Tensor | None = None, *, mel: Tensor | None = None, prompt: list[int], eos: int, max_new_tokens: int = 100
) -> list[int]:
    """One utterance -> the argmax tokens after ``prompt`` (Whisper's decoder start, language, task
    and no-timestamps tokens, or any prefix) until ``eos`` (included) or ``max_new_tokens``.

    ``wave`` (S,) samples at 16 kHz, or ``mel`` (F, T) Whisper log-mel (``input_features``). The
    decoder runs with the core's KV caches: one token per step, the audio's keys/values computed once."""
    if (wave is None) == (mel is None):
        raise ValueError("give either wave= (samples) or mel= (Whisper log-mel), not both or neither")
    if mel is not None:
        encoded, _ = model.encode_nodes(*model.frontend.from_logmel(mel[None], torch.tensor([mel.shape[-1]], device=mel.device)))
    else:
        assert wave is not None
        encoded, _ = model.encode(wave[None], torch.tensor([wave.shape[-1]], device=wave.device))
    return greedy_from_encoded(model, encoded, prompt=prompt, eos=eos, max_new_tokens=max_new_tokens)


class WhisperTextTokenizer:
    """Whisper's byte-level BPE through HF ``tokenizers``, read from a model folder's
    ``tokenizer.json``, or ``vocab.json`` + ``merges.txt`` (+ ``added_tokens.json`` for the special
    tokens). ``encode`` gives ids without special tokens; ``decode`` drops special tokens."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, folder: str | Path) -> WhisperTextTokenizer:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        folder = Path(folder)
        if (folder / "tokenizer.json").is_file():
            return cls(Tokenizer.from_file(str(folder / "tokenizer.json")))
        vocab, merges = folder / "vocab.json", folder / "merges.txt"
        if not (vocab.is_file() and merges.is_file()):
            raise FileNotFoundError(f"{str(folder)!r} holds no Whisper tokenizer: tokenizer.json, or vocab.json and merges.txt")
        tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        added = folder / "added_tokens.json"
        if added.is_file():
            specials = sorted(json.loads(added.read_text(encoding="utf-8")).items(), key=lambda item: item[1])
            tok.add_special_tokens([AddedToken(text, special=True, normalized=False) for text, _ in specials])
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        """The id of a (special) token, e.g. ``<|startoftranscript|>``; a KeyError naming it if absent."""
        found = self.tokenizer.token_to_id(token)
        if found is None:
            raise KeyError(f"{token!r} is not in this Whisper tokenizer's vocabulary")
        return found

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
