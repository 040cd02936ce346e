"""SetSorter: a set of numbers -> encoder over number nodes (no positions) -> causal decoder that
cross-attends to them and emits the numbers in order.

Each number is one node, its value's embedding and nothing else: without a positional encoding
self-attention is permutation-equivariant, so the encoder's output for a permuted set is the same
outputs permuted. The decoder reads the numbers emitted so far (a start node, then the previous
outputs), with rotary positions in its self-attention, and predicts the next one.

Shape legend: B batch, N numbers in the set (= output length), V number of values, D width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tzoo.core import Decoder, Encoder, TransformerConfig

__all__ = ["SetSorter", "SortConfig"]


@dataclass
class SortConfig:
    """``num_values`` (linked from the data by the tzoo CLI) and one core config per stack (the
    decoder's cross-attention takes the encoder's width, so the two may differ)."""

    num_values: int | None = None
    encoder: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=64, depth=2, num_heads=4))
    decoder: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=64, depth=2, num_heads=4, position="rope"))


class SetSorter(nn.Module):
    def __init__(self, cfg: SortConfig) -> None:
        super().__init__()
        if cfg.num_values is None or cfg.num_values < 2:
            raise ValueError(f"net.num_values must be >= 2 (the tzoo CLI links it from the data), got {cfg.num_values}")
        dim = cfg.decoder.dim
        self.num_values = self.start = cfg.num_values  # the decoder's start node is one extra value id
        self.embed = nn.Embedding(cfg.num_values, cfg.encoder.dim)  # set nodes: value only
        self.embed_out = nn.Embedding(cfg.num_values + 1, dim)  # decoder nodes: value emitted so far, or start
        self.encoder = Encoder(cfg.encoder)
        self.decoder = Decoder(cfg.decoder, cross_attention=True, context_dim=cfg.encoder.dim)
        self.head = nn.Linear(dim, cfg.num_values)

    def encode(self, numbers: Tensor) -> Tensor:
        """(B, N) value ids -> (B, N, D) node states; permuting the input permutes the output."""
        return self.encoder(self.embed(numbers))

    def forward(self, numbers: Tensor, ordered: Tensor) -> Tensor:
        """Teacher-forced logits: numbers (B, N), ordered (B, N) -> (B, N, V) for each output position."""
        previous = torch.cat([torch.full_like(ordered[:, :1], self.start), ordered[:, :-1]], dim=1)  # (B, N)
        return self.head(self.decoder(self.embed_out(previous), self.encode(numbers)))

    @torch.no_grad()
    def sort(self, numbers: Tensor) -> Tensor:
        """Greedy decoding with the KV cache: (B, N) -> (B, N) predicted sorted values."""
        encoded, n = self.encode(numbers), numbers.shape[1]
        cache, cross = self.decoder.make_cache(n), self.decoder.make_cache()
        token, out = torch.full_like(numbers[:, :1], self.start), []  # (B, 1)
        for _ in range(n):
            token = self.head(self.decoder(self.embed_out(token), encoded, cache=cache, cross_cache=cross)).argmax(-1)  # (B, 1)
            out.append(token)
        return torch.cat(out, dim=1)
