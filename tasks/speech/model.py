"""The speech recognizer: audio-frame nodes -> bidirectional encoder -> (CTC head | causal decoder
with cross-attention to the encoder) -> characters. Whisper's layout with a CTC head beside it.

Shape legend: B batch, S samples, N audio nodes, T text tokens, V vocabulary, D width.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from tzoo.core import Decoder, Encoder, KVCache, SinusoidalPositionalEncoding, TransformerConfig, init_gpt2
from tzoo.tasks.speech.tokenizer import AudioTokenizer

__all__ = ["SpeechTransformer"]


class SpeechTransformer(nn.Module):
    """Encoder over audio nodes (sinusoidal positions added, or RoPE inside attention); decoder over
    characters (RoPE) cross-attending to the encoder output, with the padded audio nodes masked out;
    a CTC head on the encoder. The decoder's output projection is tied to its token embedding.

    ``max_frames``: the most audio nodes (40 ms each, 20 ms at ``subsampling=2``) the encoder takes;
    longer audio is an error.
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        sample_rate: int = 16000,
        n_mels: int = 80,
        dim: int = 192,
        encoder_depth: int = 6,
        decoder_depth: int = 3,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        encoder_position: Literal["sinusoidal", "rope"] = "sinusoidal",
        max_frames: int = 750,
        freq_masks: int = 2,
        time_masks: int = 2,
        subsampling: int = 4,
        freq_warp: float = 0.0,
        formant_warp: float = 0.0,
    ) -> None:
        super().__init__()
        if vocab_size < 4:
            raise ValueError(f"vocab_size must be >= 4 (3 special tokens and a character), got {vocab_size}")
        if encoder_position not in ("sinusoidal", "rope"):
            raise ValueError(f"encoder_position={encoder_position!r} is not one of ('sinusoidal', 'rope')")
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.vocab_size, self.max_frames, self.sample_rate = vocab_size, max_frames, sample_rate
        self.frontend = AudioTokenizer(dim, sample_rate=sample_rate, n_mels=n_mels, freq_masks=freq_masks, time_masks=time_masks,
                                       subsampling=subsampling, freq_warp=freq_warp, formant_warp=formant_warp)
        self.enc_pos = SinusoidalPositionalEncoding(dim, max_len=max_frames) if encoder_position == "sinusoidal" else None
        common = dict(dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=dropout)
        self.encoder = Encoder(
            TransformerConfig(depth=encoder_depth, position="rope" if encoder_position == "rope" else "none", **common)
        )
        self.ctc_head = nn.Linear(dim, vocab_size)
        self.embed = nn.Embedding(vocab_size, dim)
        self.decoder = Decoder(TransformerConfig(depth=decoder_depth, position="rope", **common), cross_attention=True)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        init_gpt2(self, encoder_depth + decoder_depth)
        self.head.weight = self.embed.weight

    def encode(self, wave: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S) samples, (B,) lengths -> encoder output (B, N, D), key-padding mask (B, N)."""
        nodes, mask = self.frontend(wave, lengths)
        return self.encode_nodes(nodes, mask)

    def encode_nodes(self, nodes: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
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
        return self.encoder(nodes, key_padding_mask=padding), mask

    def decode(
        self,
        tokens: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None,
        *,
        cache: list[KVCache] | None = None,
        cross_cache: list[KVCache] | None = None,
    ) -> Tensor:
        """(B, T) token ids after the cached ones, encoder output (B, N, D) -> logits (B, T, V)."""
        x = self.embed(tokens)  # (B, T, D)
        x = self.decoder(x, memory, context_padding_mask=memory_mask, cache=cache, cross_cache=cross_cache)
        return self.head(x)

    def forward(self, wave: Tensor, lengths: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> CTC logits (B, N, V), audio mask (B, N), decoder logits (B, T, V) for (B, T) input tokens."""
        return self.heads(*self.encode(wave, lengths), tokens)

    def heads(self, memory: Tensor, mask: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``forward`` from an encoder output (B, N, D) and its mask (B, N) already computed."""
        padding = None if bool(mask.all()) else mask
        return self.ctc_head(memory), mask, self.decode(tokens, memory, padding)
