"""Positional encodings, one small module per scheme.

Absolute encodings (sinusoidal, learned, 2-D sin-cos) are added to node embeddings by a task's
embedder. Relative ones act inside attention: RoPE rotates queries and keys, ALiBi adds a bias to
the scores. Attention takes one ``RelativePosition`` module; it never branches on the kind.

Shape legend: B batch, N nodes, M key nodes, D width, H heads, Dh head width.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tzoo.core._checks import is_finite_real, is_whole

__all__ = [
    "ALiBi",
    "LearnedPositionalEmbedding",
    "RelativePosition",
    "RotaryEmbedding",
    "SinCos2DPositionalEncoding",
    "SinusoidalPositionalEncoding",
    "sincos_1d",
    "sincos_2d",
]


def _check_length(n: int, offset: int, max_len: int, what: str) -> None:
    if offset < 0:
        raise ValueError(f"offset must be >= 0 (the position of the first node), got offset={offset}")
    if offset + n > max_len:
        raise ValueError(
            f"{what} covers positions 0..{max_len - 1}, but positions {offset}..{offset + n - 1} "
            f"were asked for ({n} nodes at offset {offset}); use at most {max_len} nodes "
            f"or build the model with a larger max_len"
        )


def _check_base(base: float, what: str) -> None:
    # base <= 0 or NaN puts NaN in every table; base <= 1 turns the geometric ladder of wavelengths
    # (2π up to 2π·base) upside down or flat
    if not (is_finite_real(base) and base > 1):
        raise ValueError(f"{what} needs a finite base > 1 (10000 is usual), got base={base!r}")


def _check_count(value: int, name: str, what: str) -> None:
    if not (is_whole(value) and value >= 1):
        raise ValueError(f"{what} needs an integer {name} >= 1, got {name}={value!r}")


def sincos_1d(positions: Tensor, dim: int, *, base: float = 10000.0) -> Tensor:
    """Transformer sin/cos table: positions (N,) -> (N, D), sines in even, cosines in odd columns."""
    if not (is_whole(dim) and dim >= 2 and dim % 2 == 0):
        raise ValueError(f"sin-cos encodings need a positive, even width, got dim={dim!r}")
    _check_base(base, "a sin-cos encoding")
    freqs = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(base) / dim))
    angles = positions.to(torch.float64)[:, None] * freqs[None, :]  # (N, D/2)
    table = torch.empty(len(positions), dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table.float()


def sincos_2d(height: int, width: int, dim: int, *, base: float = 10000.0) -> Tensor:
    """2-D sin-cos table for a (height, width) grid in row-major order -> (height*width, D).

    Half the channels encode the row, half the column (as in MAE / ViT-22B).
    """
    if not (is_whole(dim) and dim >= 4 and dim % 4 == 0):
        raise ValueError(f"2-D sin-cos encodings need a positive width divisible by 4, got dim={dim!r}")
    _check_count(height, "height", "a 2-D sin-cos grid")
    _check_count(width, "width", "a 2-D sin-cos grid")
    rows = torch.arange(height).repeat_interleave(width)  # (H*W,)
    cols = torch.arange(width).repeat(height)  # (H*W,)
    return torch.cat([sincos_1d(rows, dim // 2, base=base), sincos_1d(cols, dim // 2, base=base)], dim=1)


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sin/cos absolute positions added to x: (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, *, max_len: int = 8192, base: float = 10000.0) -> None:
        super().__init__()
        _check_count(max_len, "max_len", "SinusoidalPositionalEncoding")
        self.max_len = max_len
        self.register_buffer("table", sincos_1d(torch.arange(max_len), dim, base=base), persistent=False)

    def forward(self, x: Tensor, *, offset: int = 0) -> Tensor:
        n = x.shape[1]
        _check_length(n, offset, self.max_len, "the sinusoidal encoding")
        return x + self.table[offset : offset + n].to(x.dtype)


class LearnedPositionalEmbedding(nn.Module):
    """A learned vector per position added to x: (B, N, D) -> (B, N, D)."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        _check_count(max_len, "max_len", "LearnedPositionalEmbedding")
        _check_count(dim, "dim", "LearnedPositionalEmbedding")
        self.max_len = max_len
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: Tensor, *, offset: int = 0) -> Tensor:
        n = x.shape[1]
        _check_length(n, offset, self.max_len, "the learned positional embedding")
        return x + self.weight[offset : offset + n]


class SinCos2DPositionalEncoding(nn.Module):
    """Fixed 2-D sin-cos positions for a grid of patch nodes: (B, h*w, D) -> (B, h*w, D).

    Regenerated for any grid size, so a model trained at one image size runs at another.
    """

    def __init__(self, dim: int, *, base: float = 10000.0) -> None:
        super().__init__()
        if not (is_whole(dim) and dim >= 4 and dim % 4 == 0):
            raise ValueError(f"2-D sin-cos encodings need a positive width divisible by 4, got dim={dim!r}")
        _check_base(base, "SinCos2DPositionalEncoding")
        self.dim, self.base = dim, base
        self._cache: dict[tuple[int, int], Tensor] = {}

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        h, w = grid
        if x.shape[1] != h * w:
            raise ValueError(f"x has {x.shape[1]} nodes but the grid {h}x{w} has {h * w}")
        if grid not in self._cache:
            self._cache[grid] = sincos_2d(h, w, self.dim, base=self.base)
        return x + self._cache[grid].to(device=x.device, dtype=x.dtype)


class RelativePosition(nn.Module):
    """What attention asks of a relative positional scheme; the defaults do nothing.

    ``rotate`` sees the new queries and keys of a self-attention call stacked along the head
    axis, (B, H + Hkv, N, Dh), at positions ``offset..offset+N-1``; ``bias`` gives an additive score
    bias for queries at ``offset..offset+N-1`` against keys ``0..M-1``. Memory nodes and
    cross-attention context carry no position and are left alone.
    """

    def rotate(self, x: Tensor, offset: int) -> Tensor:
        return x

    def bias(self, num_queries: int, num_keys: int, offset: int) -> Tensor | None:
        return None

    def check_fits(self, num_heads: int, head_dim: int) -> None:
        """Raise a ValueError if this scheme cannot serve attention of these sizes (called once,
        when the attention layer is built)."""


class RotaryEmbedding(RelativePosition):
    """RoPE (Su et al. 2021): rotates channel pairs (i, i + Dh/2) of q and k by position-dependent
    angles, so q·k depends only on the offset between the two positions."""

    def __init__(self, head_dim: int, *, base: float = 10000.0, max_len: int = 4096) -> None:
        super().__init__()
        if not (is_whole(head_dim) and head_dim >= 2 and head_dim % 2 == 0):
            raise ValueError(f"RoPE needs a positive, even head width, got head_dim={head_dim!r}")
        _check_base(base, "RoPE")
        _check_count(max_len, "max_len", "RoPE")
        self.head_dim, self.base = head_dim, base
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)
        self._build(max_len)

    def _build(self, length: int) -> None:
        t = torch.arange(length, dtype=torch.float64, device=self.inv_freq.device)
        angles = torch.outer(t, self.inv_freq.double())  # (N, Dh/2)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def check_fits(self, num_heads: int, head_dim: int) -> None:
        if head_dim != self.head_dim:
            raise ValueError(
                f"RotaryEmbedding(head_dim={self.head_dim}) cannot rotate heads of width {head_dim}: "
                f"build it with head_dim = dim / num_heads = {head_dim}"
            )

    def rotate(self, x: Tensor, offset: int) -> Tensor:
        """x (..., N, Dh) at positions offset.. -> x rotated, same shape."""
        n = x.shape[-2]
        if offset < 0:
            raise ValueError(f"offset must be >= 0 (the position of the first node), got offset={offset}")
        if offset + n > self.cos.shape[0]:  # grow the table instead of failing on long sequences
            self._build(max(2 * self.cos.shape[0], offset + n))
        cos = self.cos[offset : offset + n].to(x.dtype)  # (N, Dh/2)
        sin = self.sin[offset : offset + n].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)  # the pair (x1[i], x2[i]) turns by angle[i]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class ALiBi(RelativePosition):
    """ALiBi (Press et al. 2022): a per-head linear penalty -slope_h * |i - j| on the scores.

    Slopes are the geometric sequence 2^(-8h/H) of the paper (interleaved for non powers of two).
    """

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        _check_count(num_heads, "num_heads", "ALiBi")
        self.num_heads = num_heads
        self.register_buffer("slopes", _alibi_slopes(num_heads), persistent=False)

    def bias(self, num_queries: int, num_keys: int, offset: int) -> Tensor:
        q_pos = torch.arange(offset, offset + num_queries, device=self.slopes.device)
        k_pos = torch.arange(num_keys, device=self.slopes.device)
        distance = (q_pos[:, None] - k_pos[None, :]).abs()  # (N, M)
        return -self.slopes[:, None, None] * distance  # (H, N, M)

    def check_fits(self, num_heads: int, head_dim: int) -> None:
        if num_heads != self.num_heads:
            raise ValueError(
                f"ALiBi(num_heads={self.num_heads}) has one slope per head but the attention has "
                f"num_heads={num_heads}: build it with ALiBi({num_heads})"
            )


def _alibi_slopes(n: int) -> Tensor:
    def powers_of_two(k: int) -> list[float]:
        start = 2 ** (-8 / k)
        return [start ** (i + 1) for i in range(k)]

    if math.log2(n).is_integer():
        slopes = powers_of_two(n)
    else:
        closest = 2 ** math.floor(math.log2(n))
        slopes = powers_of_two(closest) + powers_of_two(2 * closest)[0::2][: n - closest]
    return torch.tensor(slopes, dtype=torch.float32)
