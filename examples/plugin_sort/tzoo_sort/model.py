"""SetSorter: a set of numbers -> encoder over number nodes (no positions) -> causal decoder that
cross-attends to them and emits the numbers in order.

Shape legend: B batch, N numbers in the set (= output length), V number of values, D width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tzoo.core import Decoder, Encoder, TransformerConfig

__all__ = ["SetSorter"]


class SetSorter(nn.Module):
    """Each number is one node: its value's embedding and nothing else. Without a positional
    encoding self-attention is permutation-equivariant, so the encoder's output for a permuted set is
    the same outputs permuted. The decoder reads the numbers emitted so far (a start node, then the
    previous outputs) with rotary positions inside its self-attention, and predicts the next value."""

    def __init__(self, num_values: int, *, dim: int = 64, depth: int = 2, num_heads: int = 4) -> None:
        super().__init__()
        if num_values < 2:
            raise ValueError(f"num_values must be >= 2, got {num_values}")
        self.num_values, self.start = num_values, num_values  # the decoder's start node is one extra value id
        self.embed = nn.Embedding(num_values, dim)  # set nodes: value only
        self.embed_out = nn.Embedding(num_values + 1, dim)  # decoder nodes: value emitted so far, or start
        self.encoder = Encoder(TransformerConfig(dim=dim, depth=depth, num_heads=num_heads))
        self.decoder = Decoder(TransformerConfig(dim=dim, depth=depth, num_heads=num_heads, position="rope"), cross_attention=True)
        self.head = nn.Linear(dim, num_values)

    def encode(self, numbers: Tensor) -> Tensor:
        """(B, N) value ids -> (B, N, D) node states; permuting the input permutes the output."""
        return self.encoder(self.embed(numbers))

    def forward(self, numbers: Tensor, ordered: Tensor) -> Tensor:
        """Teacher-forced logits: numbers (B, N), ordered (B, N) -> (B, N, V) for each output position."""
        start = torch.full_like(ordered[:, :1], self.start)
        previous = torch.cat([start, ordered[:, :-1]], dim=1)  # (B, N): start, then the targets shifted right
        return self.head(self.decoder(self.embed_out(previous), self.encode(numbers)))

    @torch.no_grad()
    def sort(self, numbers: Tensor) -> Tensor:
        """Greedy decoding with the KV cache: (B, N) -> (B, N) predicted sorted values."""
        memory = self.encode(numbers)
        n = numbers.shape[1]
        cache, cross = self.decoder.make_cache(n), self.decoder.make_cache()
        token = torch.full_like(numbers[:, :1], self.start)  # (B, 1)
        out = []
        for _ in range(n):
            h = self.decoder(self.embed_out(token), memory, cache=cache, cross_cache=cross)  # (B, 1, D)
            token = self.head(h).argmax(-1)  # (B, 1)
            out.append(token)
        return torch.cat(out, dim=1)
