"""The Conformer block (Gulati et al. 2020, "Conformer: Convolution-augmented Transformer for Speech
Recognition"): self-attention for the whole utterance, a depthwise convolution for each node's
neighbourhood, between two half-step feed-forwards (the "macaron" pair). The encoder of most
speech recognizers since (ESPnet, NeMo, torchaudio's ``Conformer``); ``TransformerConfig(block=
"conformer")`` builds an ``Encoder`` of them.

Shape legend: B batch, N nodes, D width, K kernel size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from tzoo.core._checks import is_finite_real, is_whole
from tzoo.core.attention import MultiHeadAttention
from tzoo.core.blocks import DropPath

__all__ = ["ConformerBlock", "ConvModule"]


class ConvModule(nn.Module):
    """Conformer's convolution module, (B, N, D) -> (B, N, D): pointwise projection to 2D, GLU,
    depthwise convolution over the nodes (``kernel_size`` odd, 'same' padding), a norm, SiLU,
    pointwise projection back (``out_proj``), dropout. Its own pre-norm is the block's.

    Padded nodes (``key_padding_mask`` False) are zeroed before the depthwise convolution, so a
    node's output is the same alone or in a longer batch (WeNet masks the same way). ``norm``:
    ``batchnorm`` (the paper's, torchaudio's default; statistics over the batch in training, so in
    training a node's output does depend on its batch) or ``layernorm`` (each node over its channels:
    the same in training and inference, nothing averaged over the batch)."""

    def __init__(
        self, dim: int, kernel_size: int = 31, *, dropout: float = 0.0, bias: bool = True, norm: Literal["batchnorm", "layernorm"] = "batchnorm"
    ) -> None:
        super().__init__()
        if not (is_whole(dim) and dim >= 1):
            raise ValueError(f"ConvModule needs an integer dim >= 1, got dim={dim!r}")
        if not (is_whole(kernel_size) and kernel_size >= 1 and kernel_size % 2 == 1):
            raise ValueError(
                f"conv_kernel must be an odd integer >= 1 (the depthwise convolution is centred on each node: "
                f"'same' padding of (K - 1) / 2 each side, e.g. 15 or 31), got conv_kernel={kernel_size!r}"
            )
        if norm not in ("batchnorm", "layernorm"):
            raise ValueError(f"conv_norm={norm!r} is not one of ('batchnorm', 'layernorm')")
        if not (is_finite_real(dropout) and 0.0 <= dropout < 1.0):
            raise ValueError(f"ConvModule dropout must be in [0, 1), got dropout={dropout!r}")
        self.in_proj = nn.Linear(dim, 2 * dim, bias=bias)  # a 1x1 convolution, on the (B, N, D) layout
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=bias)
        self.norm = nn.BatchNorm1d(dim) if norm == "batchnorm" else nn.LayerNorm(dim)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout else None

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """x (B, N, D), key_padding_mask (B, N) bool (True = a real node) -> (B, N, D)."""
        h = F.glu(self.in_proj(x), dim=-1)  # (B, N, D)
        if key_padding_mask is not None:
            h = h.masked_fill(~key_padding_mask[..., None], 0.0)
        h = self.depthwise(h.transpose(1, 2))  # (B, D, N)
        if isinstance(self.norm, nn.BatchNorm1d):  # normalises (B, D, N) over B and N
            h = self.norm(h).transpose(1, 2)
        else:
            h = self.norm(h.transpose(1, 2))  # (B, N, D)
        h = self.out_proj(F.silu(h))
        return self.dropout(h) if self.dropout is not None else h


class ConformerBlock(nn.Module):
    """x + ½ FF₁(x) -> + MHSA -> + Conv -> + ½ FF₂ -> LayerNorm, every branch pre-normed:
    (B, N, D) -> (B, N, D). The same order and the final norm as the paper and torchaudio's
    ``ConformerLayer`` (which it matches to float rounding with the same weights:
    ``tests/core/test_conformer.py``). Bidirectional (no cache, no causal mask): an encoder block."""

    def __init__(
        self,
        attn: MultiHeadAttention,
        ff1: nn.Module,
        ff2: nn.Module,
        conv: ConvModule,
        *,
        norm: Callable[[int], nn.Module] = nn.LayerNorm,
        dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        dim = attn.dim
        self.attn, self.ff1, self.ff2, self.conv = attn, ff1, ff2, conv
        self.ff1_norm, self.attn_norm, self.conv_norm, self.ff2_norm, self.out_norm = (norm(dim) for _ in range(5))
        self.dropout = nn.Dropout(dropout) if dropout else None  # after attention and the FFs (ConvModule has its own)
        self.drop_path = DropPath(drop_path) if drop_path else None

    def forward(self, x: Tensor, *, mask: Tensor | None = None, key_padding_mask: Tensor | None = None) -> Tensor:
        """x (B, N, D), key_padding_mask (B, N) bool (True = real), mask broadcastable to (B, H, N, N)."""
        x = x + self._branch(self.ff1(self.ff1_norm(x)), 0.5)
        x = x + self._branch(self.attn(self.attn_norm(x), mask=mask, key_padding_mask=key_padding_mask))
        x = x + self._branch(self.conv(self.conv_norm(x), key_padding_mask), dropout=False)
        x = x + self._branch(self.ff2(self.ff2_norm(x)), 0.5)
        return self.out_norm(x)

    def _branch(self, h: Tensor, scale: float = 1.0, *, dropout: bool = True) -> Tensor:
        """A branch's output as it joins the residual stream: dropout, the half step, drop path."""
        if dropout and self.dropout is not None:
            h = self.dropout(h)
        if scale != 1.0:
            h = h * scale
        return self.drop_path(h) if self.drop_path is not None else h
