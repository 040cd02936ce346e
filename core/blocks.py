"""Feed-forward layers and the residual transformer block shared by encoders and decoders.

Shape legend: B batch, N nodes, M context nodes, D width, F feed-forward width.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tzoo.core._checks import is_finite_real, is_whole
from tzoo.core.attention import MultiHeadAttention
from tzoo.core.cache import KVCache, LayerCache

__all__ = ["DropPath", "LayerScale", "MLP", "SwiGLU", "TransformerBlock"]


def _check_widths(what: str, dim: int, hidden_dim: int, dropout: float) -> None:
    # a zero hidden width builds and silently turns the branch into a constant (its output bias)
    for name, value in (("dim", dim), ("hidden_dim", hidden_dim)):
        if not (is_whole(value) and value >= 1):
            raise ValueError(f"{what} needs an integer {name} >= 1, got {name}={value!r}")
    if not (is_finite_real(dropout) and 0.0 <= dropout < 1.0):
        raise ValueError(f"{what} dropout must be in [0, 1), got dropout={dropout!r}")


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,  # exact (erf) GELU: BERT, ViT, Whisper
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's "gelu_new"
    "relu": F.relu,  # the original Transformer, HF's Decision Transformer
    "squared_relu": lambda x: F.relu(x).square(),  # Primer (So et al. 2021), the modded-nanoGPT speedruns
    "silu": F.silu,  # Swish: Conformer's feed-forwards
}


class MLP(nn.Module):
    """Linear -> activation -> dropout -> Linear: (B, N, D) -> (B, N, D). ``activation``: one of
    ``ACTIVATIONS`` (exact GELU by default)."""

    def __init__(self, dim: int, hidden_dim: int, *, dropout: float = 0.0, bias: bool = True, activation: str = "gelu") -> None:
        super().__init__()
        _check_widths("MLP", dim, hidden_dim, dropout)
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLP activation={activation!r} is not one of {tuple(ACTIVATIONS)}")
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout else None
        self.activation = activation
        self._act = ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        h = self._act(self.fc1(x))  # (B, N, F)
        return self.fc2(self.dropout(h) if self.dropout is not None else h)


class SwiGLU(nn.Module):
    """Gated feed-forward of Shazeer (2020): W2 (silu(W1 x) * W3 x), (B, N, D) -> (B, N, D).

    Usually given 2/3 of the MLP's hidden width so both have the same parameter count.
    """

    def __init__(self, dim: int, hidden_dim: int, *, dropout: float = 0.0, bias: bool = False) -> None:
        super().__init__()
        _check_widths("SwiGLU", dim, hidden_dim, dropout)
        self.w1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.w3 = nn.Linear(dim, hidden_dim, bias=bias)
        self.w2 = nn.Linear(hidden_dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout else None

    def forward(self, x: Tensor) -> Tensor:
        h = F.silu(self.w1(x)) * self.w3(x)  # (B, N, F)
        return self.w2(self.dropout(h) if self.dropout is not None else h)


class LayerScale(nn.Module):
    """Learned per-channel scale of a residual branch (CaiT), initialised small."""

    def __init__(self, dim: int, init: float = 1e-5) -> None:
        super().__init__()
        if not is_finite_real(init):
            raise ValueError(f"LayerScale init must be a finite number (e.g. 1e-5), got init={init!r}")
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch for a whole sample with probability p."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not (is_finite_real(p) and 0.0 <= p < 1.0):
            raise ValueError(f"drop path probability must be in [0, 1), got {p!r}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class TransformerBlock(nn.Module):
    """Residual block: self-attention, optional cross-attention, feed-forward.

    Norm-first (pre-norm, GPT-2 and later): ``x + f(norm(x))``; norm-last (the original
    Transformer): ``norm(x + f(x))``. Each branch goes through dropout, layer scale and drop
    path. The same block serves an encoder (no mask or padding), a decoder (``is_causal``) and a
    decoder with cross-attention to an encoder's output (``context``).
    """

    def __init__(
        self,
        attn: MultiHeadAttention,
        feed_forward: nn.Module,
        *,
        cross_attn: MultiHeadAttention | None = None,
        norm: Callable[[int], nn.Module] = nn.LayerNorm,
        norm_first: bool = True,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        layer_scale: float | None = None,
    ) -> None:
        super().__init__()
        dim = attn.dim
        self.norm_first = norm_first
        self.attn, self.cross_attn, self.feed_forward = attn, cross_attn, feed_forward
        self.attn_norm, self.ff_norm = norm(dim), norm(dim)
        self.cross_norm = norm(dim) if cross_attn is not None else None

        def branch_end() -> nn.Module | None:  # None: nothing to call on the hot path
            parts: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
            parts += [LayerScale(dim, layer_scale)] if layer_scale is not None else []
            parts += [DropPath(drop_path)] if drop_path else []
            return nn.Sequential(*parts) if parts else None

        self.attn_out, self.ff_out = branch_end(), branch_end()
        self.cross_out = branch_end() if cross_attn is not None else None

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
        context_padding_mask: Tensor | None = None,
        cache: LayerCache | None = None,
        cross_cache: KVCache | None = None,
    ) -> Tensor:
        """x (B, N, D), context (B, M, Dc) -> (B, N, D)."""
        h = self.attn_norm(x) if self.norm_first else x
        h = self.attn(h, mask=mask, key_padding_mask=key_padding_mask, is_causal=is_causal, cache=cache)
        x = self._add(x, h, self.attn_norm, self.attn_out)
        if self.cross_attn is not None:
            if context is None:  # also with a filled cross_cache: it marks the call as cross-attention
                raise ValueError("this block has cross-attention: pass the encoder output as context=")
            assert self.cross_norm is not None
            h = self.cross_norm(x) if self.norm_first else x
            h = self.cross_attn(h, context, key_padding_mask=context_padding_mask, cache=cross_cache)
            x = self._add(x, h, self.cross_norm, self.cross_out)
        elif context is not None or context_padding_mask is not None or cross_cache is not None:
            given = "context" if context is not None else "context_padding_mask" if cross_cache is None else "cross_cache"
            raise ValueError(
                f"{given} was given but this block has no cross-attention, so it would be ignored: build the block "
                f"with cross_attn=MultiHeadAttention(dim, num_heads, context_dim=<the context's width>)"
            )
        h = self.feed_forward(self.ff_norm(x) if self.norm_first else x)
        return self._add(x, h, self.ff_norm, self.ff_out)

    def _add(self, x: Tensor, h: Tensor, norm: nn.Module, out: nn.Module | None) -> Tensor:
        """The residual connection of a branch output h (its input was normed first if norm-first)."""
        if out is not None:
            h = out(h)
        return x + h if self.norm_first else norm(x + h)
