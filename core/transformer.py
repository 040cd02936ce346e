"""Transformer stacks: ``Encoder`` (every node sees every node) and ``Decoder`` (causal, with
optional cross-attention to an encoder's output), built from one flat config dataclass.

Shape legend: B batch, N nodes, M context nodes, D width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from tzoo.core.attention import KVCache, MultiHeadAttention
from tzoo.core.blocks import MLP, SwiGLU, TransformerBlock
from tzoo.core.positional import ALiBi, RelativePosition, RotaryEmbedding

__all__ = ["Decoder", "Encoder", "TransformerConfig", "init_gpt2"]


@dataclass
class TransformerConfig:
    """Sizes and choices of a transformer stack. Absolute positions belong to the task's embedder;
    ``position`` picks a relative scheme that acts inside attention."""

    dim: int = 256
    depth: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None
    mlp_ratio: float = 4.0
    feed_forward: Literal["gelu", "swiglu"] = "gelu"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_first: bool = True
    bias: bool = True
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    layer_scale: float | None = None
    window: int | None = None
    top_k: int | None = None
    num_memory: int = 0
    position: Literal["none", "rope", "alibi"] = "none"
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if self.num_heads < 1 or self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        choices = {"feed_forward": ("gelu", "swiglu"), "norm": ("layernorm", "rmsnorm"), "position": ("none", "rope", "alibi")}
        for field, valid in choices.items():
            if getattr(self, field) not in valid:
                raise ValueError(f"{field}={getattr(self, field)!r} is not one of {valid}")
        # options that are each valid alone but not together: say which conflicts with which
        if self.num_kv_heads is not None and (self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads):
            divisors = [d for d in range(1, self.num_heads + 1) if self.num_heads % d == 0]
            raise ValueError(
                f"num_kv_heads={self.num_kv_heads} conflicts with num_heads={self.num_heads}: each key/value head "
                f"serves a whole group of query heads, so num_kv_heads must divide num_heads (valid: {divisors})"
            )
        if self.position == "rope" and self.head_dim % 2:
            raise ValueError(
                f"position='rope' conflicts with dim={self.dim} and num_heads={self.num_heads}: RoPE rotates pairs of "
                f"channels, so the head width dim / num_heads = {self.head_dim} must be even"
            )
        if self.feed_forward == "swiglu" and int(2 * self.mlp_ratio * self.dim / 3) < 1:
            raise ValueError(
                f"feed_forward='swiglu' conflicts with mlp_ratio={self.mlp_ratio} at dim={self.dim}: "
                f"its hidden width 2/3 * mlp_ratio * dim rounds to 0 (raise mlp_ratio or dim)"
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


def _relative_position(cfg: TransformerConfig) -> RelativePosition | None:
    if cfg.position == "rope":
        return RotaryEmbedding(cfg.head_dim, base=cfg.rope_base)
    if cfg.position == "alibi":
        return ALiBi(cfg.num_heads)
    return None


def _norm(cfg: TransformerConfig) -> type[nn.Module]:
    return nn.RMSNorm if cfg.norm == "rmsnorm" else nn.LayerNorm


def _block(
    cfg: TransformerConfig, index: int, pos: RelativePosition | None, *, cross_attention: bool, context_dim: int | None
) -> TransformerBlock:
    attn = MultiHeadAttention(
        cfg.dim,
        cfg.num_heads,
        num_kv_heads=cfg.num_kv_heads,
        dropout=cfg.attn_dropout,
        bias=cfg.bias,
        window=cfg.window,
        top_k=cfg.top_k,
        num_memory=cfg.num_memory,
        pos=pos,
    )
    cross = None
    if cross_attention:
        cross = MultiHeadAttention(
            cfg.dim, cfg.num_heads, num_kv_heads=cfg.num_kv_heads, context_dim=context_dim, dropout=cfg.attn_dropout, bias=cfg.bias
        )
    if cfg.feed_forward == "swiglu":
        hidden = int(2 * cfg.mlp_ratio * cfg.dim / 3)
        ff: nn.Module = SwiGLU(cfg.dim, hidden, dropout=cfg.dropout, bias=cfg.bias)
    else:
        ff = MLP(cfg.dim, int(cfg.mlp_ratio * cfg.dim), dropout=cfg.dropout, bias=cfg.bias)
    # stochastic depth grows linearly with depth (timm / DeiT)
    drop_path = cfg.drop_path * index / max(cfg.depth - 1, 1)
    return TransformerBlock(
        attn,
        ff,
        cross_attn=cross,
        norm=_norm(cfg),
        norm_first=cfg.norm_first,
        dropout=cfg.dropout,
        drop_path=drop_path,
        layer_scale=cfg.layer_scale,
    )


class _Stack(nn.Module):
    def __init__(self, cfg: TransformerConfig, *, cross_attention: bool, context_dim: int | None = None) -> None:
        super().__init__()
        self.config = cfg
        pos = _relative_position(cfg)  # one instance shared by every layer (tables only, no weights)
        self.blocks = nn.ModuleList(
            _block(cfg, i, pos, cross_attention=cross_attention, context_dim=context_dim) for i in range(cfg.depth)
        )
        # a pre-norm stack leaves its residual stream un-normalised: normalise once at the end
        self.norm = _norm(cfg)(cfg.dim) if cfg.norm_first else nn.Identity()

    def make_cache(self, max_len: int | None = None) -> list[KVCache]:
        """One empty ``KVCache`` per layer (``max_len=None``: a cross-attention context cache)."""
        return [KVCache(max_len) for _ in self.blocks]


class Encoder(_Stack):
    """Bidirectional stack: every node attends to every (real) node. (B, N, D) -> (B, N, D)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__(cfg, cross_attention=False)

    def forward(self, x: Tensor, *, key_padding_mask: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        for block in self.blocks:
            x = block(x, mask=mask, key_padding_mask=key_padding_mask)
        return self.norm(x)


class Decoder(_Stack):
    """Causal stack, optionally cross-attending to an encoder's output. (B, N, D) -> (B, N, D).

    With ``cache`` (from ``make_cache``), x holds the nodes that follow the cached ones; with
    ``cross_cache`` the context's keys/values are computed on the first call only.
    """

    def __init__(self, cfg: TransformerConfig, *, cross_attention: bool = False, context_dim: int | None = None) -> None:
        super().__init__(cfg, cross_attention=cross_attention, context_dim=context_dim)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        context_padding_mask: Tensor | None = None,
        cache: list[KVCache] | None = None,
        cross_cache: list[KVCache] | None = None,
    ) -> Tensor:
        for i, block in enumerate(self.blocks):
            x = block(
                x,
                context,
                key_padding_mask=key_padding_mask,
                is_causal=True,
                context_padding_mask=context_padding_mask,
                cache=cache[i] if cache is not None else None,
                cross_cache=cross_cache[i] if cross_cache is not None else None,
            )
        return self.norm(x)


RESIDUAL_OUTPUTS = ("out_proj.weight", "fc2.weight", "w2.weight")  # the projections that write into the residual stream


def init_gpt2(model: nn.Module, depth: int, *, std: float = 0.02) -> None:
    """GPT-2 initialisation (Radford et al. 2019) in place: every Linear/Embedding weight N(0, std),
    biases zero, and the projections that write into the residual stream (attention ``out_proj``,
    MLP ``fc2``, SwiGLU ``w2``) N(0, std / sqrt(2 * depth)), so the residual's variance does not grow
    with depth. ``depth`` counts blocks that add to one residual stream."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1 (the number of residual blocks), got {depth}")
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    for name, p in model.named_parameters():
        if name.endswith(RESIDUAL_OUTPUTS):
            nn.init.normal_(p, std=std / math.sqrt(2 * depth))
