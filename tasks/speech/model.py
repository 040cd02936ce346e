"""The speech recognizer: audio-frame nodes -> bidirectional encoder -> (CTC head | causal decoder
with cross-attention to the encoder's output) -> characters. Whisper's layout with a CTC head beside it.

Shape legend: B batch, S samples, N audio nodes, T text tokens, V vocabulary, D width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, overload

import torch
from torch import Tensor, nn

from tzoo.core import Decoder, Encoder, KVCache, LearnedPositionalEmbedding, SinusoidalPositionalEncoding, TransformerConfig, init_gpt2
from tzoo.tasks.speech.corpus import ALPHABET
from tzoo.tasks.speech.tokenizer import SPECIAL_TOKENS, AudioTokenizer, WhisperAudioTokenizer

__all__ = ["SpeechConfig", "SpeechOutput", "SpeechTransformer"]


def _encoder() -> TransformerConfig:
    return TransformerConfig(dim=192, depth=6, num_heads=4, dropout=0.1)


def _decoder() -> TransformerConfig:
    return TransformerConfig(dim=192, depth=3, num_heads=4, dropout=0.1, position="rope")


@dataclass
class SpeechConfig:
    """The speech recognizer: its front end, its text vocabulary and the core's two stacks.

    ``alphabet`` (the characters a transcript may hold; the vocabulary is ``<blank> <s> </s>`` and
    these) and ``sample_rate`` are linked from the data by the CLI. The front end: ``n_mels`` log-mel
    bands, SpecAugment (``freq_masks``, ``time_masks``), VTLP (``freq_warp``, ``formant_warp``) in
    training only, ``subsampling`` (4 or 2) mel frames per node. ``max_frames``: the most audio nodes
    (40 ms each, 20 ms at ``subsampling=2``) the encoder takes; longer audio is an error.
    ``encoder_position``: absolute positions added to the audio nodes (``sinusoidal``; ``whisper``:
    Whisper's table, sines in the first half of the channels and cosines in the second; or ``none``
    when ``encoder.position`` is ``rope`` / ``alibi``). ``cross_position``: absolute positions
    (``sinusoidal``) added to the encoder's output where the decoder cross-attends to it, not where
    the CTC head reads it: with relative positions inside the encoder (RoPE) and none added before it,
    the cross-attention's keys say *what* was said but not *where*, so the decoder can find its
    place only by matching sounds to the text so far; a misheard word then sends it back to re-read a
    phrase or on past words (``none``: as trained before; ``tasks/speech/decoding.greedy``'s window
    keeps the place at decoding time instead). ``encoder`` / ``decoder``: the stacks; the
    decoder's positions are ``decoder.position`` (RoPE by default), its cross-attention takes the
    encoder's width.

    For Whisper's weights (``tzoo.tasks.speech.whisper``): ``frontend='whisper'`` (Whisper's log-mel,
    audio padded to ``max_frames`` nodes of 20 ms that are all attended, convolutions without a
    norm), ``decoder_position='learned'`` (a learned table of ``max_text_positions`` added to the
    token embeddings), ``text_vocab_size`` (the BPE's vocabulary instead of the alphabet's) and
    ``ctc=False`` (no CTC head).

    ``inter_ctc``: encoder layers (block counts, 1 .. depth - 1) whose outputs the CTC head also
    reads in training (intermediate CTC, Lee & Watanabe 2021: the lower layers learn to spell too;
    the module's ``inter_ctc_weight`` weighs their loss). Nothing changes at inference, unless
    ``inter_ctc_condition``: each named layer's CTC prediction (its softmax, through a linear map to
    the width) is added to the nodes the next layer reads (self-conditioned CTC, Nozaki & Komatsu
    2021), in training and inference."""

    alphabet: str = ALPHABET
    sample_rate: int = 16000
    n_mels: int = 80
    subsampling: int = 4
    max_frames: int = 750
    encoder_position: Literal["sinusoidal", "whisper", "none"] = "sinusoidal"
    frontend: Literal["tzoo", "whisper"] = "tzoo"
    decoder_position: Literal["none", "learned"] = "none"
    cross_position: Literal["none", "sinusoidal"] = "none"
    max_text_positions: int = 448
    text_vocab_size: int | None = None
    ctc: bool = True
    inter_ctc: list[int] = field(default_factory=list)
    inter_ctc_condition: bool = False
    freq_masks: int = 2
    time_masks: int = 2
    freq_warp: float = 0.0
    formant_warp: float = 0.0
    encoder: TransformerConfig = field(default_factory=_encoder)
    decoder: TransformerConfig = field(default_factory=_decoder)

    def __post_init__(self) -> None:
        if not isinstance(self.alphabet, str) or not self.alphabet or len(set(self.alphabet)) != len(self.alphabet):
            raise ValueError(f"net.alphabet must be distinct characters (at least one), got {self.alphabet!r}")
        numbers = (("sample_rate", 1), ("n_mels", 1), ("max_frames", 1), ("freq_masks", 0), ("time_masks", 0), ("max_text_positions", 1))
        for name, low in numbers:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"net.{name} must be an integer >= {low}, got {value!r}")
        if self.subsampling not in (2, 4):
            raise ValueError(f"net.subsampling={self.subsampling!r} is not one of (2, 4) (mel frames per node)")
        if self.encoder_position not in ("sinusoidal", "whisper", "none"):
            raise ValueError(
                f"net.encoder_position={self.encoder_position!r} is not one of ('sinusoidal', 'whisper', 'none'); "
                f"relative positions are net.encoder.position ('rope', 'alibi')"
            )
        for name, valid in (("frontend", ("tzoo", "whisper")), ("decoder_position", ("none", "learned")), ("cross_position", ("none", "sinusoidal"))):
            if getattr(self, name) not in valid:
                raise ValueError(f"net.{name}={getattr(self, name)!r} is not one of {valid}")
        if self.text_vocab_size is not None and (isinstance(self.text_vocab_size, bool) or not isinstance(self.text_vocab_size, int) or self.text_vocab_size < 3):
            raise ValueError(f"net.text_vocab_size must be an integer >= 3 or None (the alphabet's), got {self.text_vocab_size!r}")
        depth = self.encoder.depth
        if not isinstance(self.inter_ctc, (list, tuple)) or any(isinstance(i, bool) or not isinstance(i, int) or not 0 < i < depth for i in self.inter_ctc):
            raise ValueError(f"net.inter_ctc={self.inter_ctc!r} must be a list of encoder layers in 1..{depth - 1} (net.encoder.depth={depth})")
        if self.inter_ctc and not self.ctc:
            raise ValueError(f"net.inter_ctc={list(self.inter_ctc)} needs the CTC head that reads them: set net.ctc=True or net.inter_ctc=[]")
        if self.inter_ctc_condition and not self.inter_ctc:
            raise ValueError("net.inter_ctc_condition=True conditions on the layers net.inter_ctc names, and it names none: e.g. net.inter_ctc=[2]")
        if self.frontend == "whisper":
            tzoo_only = {"sample_rate": (self.sample_rate, 16000), "subsampling": (self.subsampling, 2),
                         "freq_warp": (self.freq_warp, 0.0), "formant_warp": (self.formant_warp, 0.0)}  # fmt: skip
            for name, (value, needed) in tzoo_only.items():
                if value != needed:
                    raise ValueError(f"net.frontend='whisper' needs net.{name}={needed!r} (Whisper's), got {value!r}")

    @property
    def vocab_size(self) -> int:
        """``text_vocab_size``, or ``<blank>``, ``<s>``, ``</s>`` and the alphabet's characters."""
        return self.text_vocab_size or len(SPECIAL_TOKENS) + len(self.alphabet)


def whisper_sinusoids(length: int, dim: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's position table (length, D): sines of position / timescale in the first D/2
    channels, cosines in the last D/2, the timescales geometric from 1 to ``max_timescale`` over
    D/2 - 1 steps (tzoo's own table interleaves sines and cosines, over D/2 steps). Computed in
    float32 as Whisper computes it: its models were trained with these values, float32 rounding of
    the angles included (~1e-4 at position 1500)."""
    if dim < 4 or dim % 2:
        raise ValueError(f"Whisper's sinusoids need an even width >= 4, got dim={dim}")
    inv = torch.exp(-math.log(max_timescale) / (dim // 2 - 1) * torch.arange(dim // 2, dtype=torch.float32))
    angles = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]  # (N, D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _encoder_positions(kind: str, dim: int, max_frames: int) -> SinusoidalPositionalEncoding | None:
    if kind == "none":
        return None
    pos = SinusoidalPositionalEncoding(dim, max_len=max_frames)
    if kind == "whisper":
        pos.table = whisper_sinusoids(max_frames, dim)  # the same fixed addition, another layout
    return pos


class SpeechOutput(NamedTuple):
    """A training forward's outputs (``SpeechTransformer.forward``)."""

    ctc: Tensor | None  # (B, N, V) the CTC head's logits; None without one
    mask: Tensor  # (B, N) True = a real audio node
    logits: Tensor  # (B, T, V) the decoder's
    inter_ctc: list[Tensor]  # (B, N, V) the CTC head's logits on each net.inter_ctc layer


class SpeechTransformer(nn.Module):
    """Encoder over audio nodes (sinusoidal positions added, and/or RoPE / ALiBi inside attention:
    ``encoder.position``); decoder over characters (``decoder.position``, RoPE by default)
    cross-attending to the encoder's output, with the padded audio nodes masked out; a CTC head on
    the encoder. The decoder's output projection is tied to its token embedding."""

    def __init__(self, cfg: SpeechConfig) -> None:
        super().__init__()
        self.cfg = cfg
        enc, dec = cfg.encoder, cfg.decoder
        self.vocab_size, self.max_frames, self.sample_rate = cfg.vocab_size, cfg.max_frames, cfg.sample_rate
        self.frontend: AudioTokenizer | WhisperAudioTokenizer
        if cfg.frontend == "whisper":
            self.frontend = WhisperAudioTokenizer(enc.dim, cfg.max_frames, n_mels=cfg.n_mels, freq_masks=cfg.freq_masks, time_masks=cfg.time_masks)
        else:
            self.frontend = AudioTokenizer(enc.dim, sample_rate=cfg.sample_rate, n_mels=cfg.n_mels, freq_masks=cfg.freq_masks,
                                           time_masks=cfg.time_masks, subsampling=cfg.subsampling, freq_warp=cfg.freq_warp,
                                           formant_warp=cfg.formant_warp)  # fmt: skip
        self.enc_pos = _encoder_positions(cfg.encoder_position, enc.dim, cfg.max_frames)
        self.cross_pos = _encoder_positions(cfg.cross_position, enc.dim, cfg.max_frames)  # a fixed table: no weights
        self.encoder = Encoder(enc)
        self.ctc_head = nn.Linear(enc.dim, self.vocab_size) if cfg.ctc else None
        self.condition = nn.Linear(self.vocab_size, enc.dim) if cfg.inter_ctc_condition else None
        self.embed = nn.Embedding(self.vocab_size, dec.dim)
        self.dec_pos = LearnedPositionalEmbedding(cfg.max_text_positions, dec.dim) if cfg.decoder_position == "learned" else None
        self.decoder = Decoder(dec, cross_attention=True, context_dim=enc.dim)
        self.head = nn.Linear(dec.dim, self.vocab_size, bias=False)
        init_gpt2(self, enc.depth + dec.depth)
        self.head.weight = self.embed.weight

    def encode(self, wave: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S) samples, (B,) lengths -> the encoder's output ``encoded`` (B, N, D), its key-padding
        mask (B, N) (True = a real node)."""
        nodes, mask = self.frontend(wave, lengths)
        return self.encode_nodes(nodes, mask)

    def encode_layers(self, wave: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """``encode``, plus the CTC head's logits (B, N, V) on each encoder layer ``net.inter_ctc`` names."""
        nodes, mask = self.frontend(wave, lengths)
        return self.encode_nodes(nodes, mask, layers=True)

    @overload
    def encode_nodes(self, nodes: Tensor, mask: Tensor, *, layers: Literal[False] = False) -> tuple[Tensor, Tensor]: ...
    @overload
    def encode_nodes(self, nodes: Tensor, mask: Tensor, *, layers: Literal[True]) -> tuple[Tensor, Tensor, list[Tensor]]: ...
    def encode_nodes(self, nodes: Tensor, mask: Tensor, *, layers: bool = False) -> Any:
        """Audio nodes (B, N, D) and their mask (B, N) -> the encoder's output and the mask, and with
        ``layers`` the CTC head's logits on the layers ``net.inter_ctc`` names (``encode_layers``)."""
        N = nodes.shape[1]
        if N > self.max_frames:
            step = self.frontend.node_seconds
            raise ValueError(
                f"audio of {N} frames (~{N * step:.1f} s) is longer than the model's maximum of {self.max_frames} "
                f"frames (~{self.max_frames * step:.1f} s); split it into shorter pieces (it is not chunked automatically)"
            )
        if self.enc_pos is not None:
            nodes = self.enc_pos(nodes)
        # no mask at all when nothing is padded: SDPA's fastest path
        padding = None if bool(mask.all()) else mask
        if self.condition is None and not layers:  # inference without conditioning: no layer is read
            return self.encoder(nodes, key_padding_mask=padding), mask
        inter: list[Tensor] = []  # the CTC head's logits on each named layer, computed once

        def read(h: Tensor) -> Tensor:  # self-conditioned CTC: the prediction, mapped to the width, goes on
            assert self.condition is not None and self.ctc_head is not None
            inter.append(self.ctc_head(h))
            return self.condition(inter[-1].softmax(-1))

        condition = read if self.condition is not None else None
        encoded, kept = self.encoder.forward_layers(nodes, self.cfg.inter_ctc, key_padding_mask=padding, condition=condition)
        if condition is None and self.ctc_head is not None:
            inter = [self.ctc_head(h) for h in kept]
        return (encoded, mask, inter) if layers else (encoded, mask)

    def decode(
        self,
        tokens: Tensor,
        encoded: Tensor,
        encoded_mask: Tensor | None,
        *,
        cache: list[KVCache] | None = None,
        cross_cache: list[KVCache] | None = None,
    ) -> Tensor:
        """(B, T) token ids after the cached ones, the encoder's output (B, N, D) and its mask (B, N)
        (None: every node is real) -> logits (B, T, V)."""
        if self.cross_pos is not None and (cross_cache is None or not cross_cache[0].length):
            encoded = self.cross_pos(encoded)  # (B, N, D): each node says where it is (once per cross cache)
        x = self.embed(tokens)  # (B, T, D)
        if self.dec_pos is not None:
            x = self.dec_pos(x, offset=cache[0].length if cache is not None else 0)
        x = self.decoder(x, encoded, context_padding_mask=encoded_mask, cache=cache, cross_cache=cross_cache)
        return self.head(x)

    def forward(self, wave: Tensor, lengths: Tensor, tokens: Tensor) -> SpeechOutput:
        """-> CTC logits (B, N, V) (None without a CTC head), audio mask (B, N), decoder logits (B, T, V)
        for (B, T) input tokens, and the CTC head's logits on each ``net.inter_ctc`` layer."""
        return self.heads(*self.encode_layers(wave, lengths), tokens)

    def heads(self, encoded: Tensor, mask: Tensor, inter_ctc: list[Tensor], tokens: Tensor) -> SpeechOutput:
        """``forward`` from ``encode_layers``' outputs already computed: the encoder's output (B, N, D),
        its mask (B, N) and the CTC logits of its ``inter_ctc`` layers."""
        padding = None if bool(mask.all()) else mask
        ctc = self.ctc_head(encoded) if self.ctc_head is not None else None
        return SpeechOutput(ctc, mask, self.decode(tokens, encoded, padding), inter_ctc)
