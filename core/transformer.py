"""Transformer stacks: ``Encoder`` (every node sees every node) and ``Decoder`` (causal, with
optional cross-attention to an encoder's output), built from one flat config dataclass.

Shape legend: B batch, N nodes, M context nodes, D width.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from tzoo.core._checks import check_nodes, check_padding_mask, is_finite_real, is_whole
from tzoo.core.attention import MultiHeadAttention
from tzoo.core.blocks import MLP, SwiGLU, TransformerBlock
from tzoo.core.cache import KVCache, LayerCache, LinearAttentionState, RollingKVCache
from tzoo.core.conformer import ConformerBlock, ConvModule
from tzoo.core.linear_attention import LinearAttention
from tzoo.core.positional import ALiBi, RelativePosition, RotaryEmbedding

__all__ = ["Decoder", "Encoder", "TransformerConfig", "init_gpt2"]


@dataclass
class TransformerConfig:
    """Sizes and choices of a transformer stack. Absolute positions belong to the task's embedder;
    ``position`` picks a relative scheme that acts inside attention.

    ``attention`` is the self-attention kind: ``softmax`` (with ``window``: a sliding window, O(N·W)
    on long inputs, decoded with a rolling KV cache) or ``linear`` (Katharopoulos et al. 2020:
    O(N), decoded with a fixed-size state; it takes GQA, RoPE and memory nodes, not window, top_k,
    attn_dropout, ALiBi or a mask). Cross-attention is always softmax.

    ``qk_norm``: RMS-normalise each head's queries and keys (a learned gain over the head width,
    ``norm_eps``) before RoPE and the scores, in self- and cross-attention (softmax attention
    only). ``feed_forward='squared_relu'``: an MLP with relu(x)² (So et al. 2021, Primer);
    ``'silu'``: Swish, Conformer's.

    ``block='conformer'`` (encoders only): Conformer blocks (``tzoo.core.conformer``: half-step
    feed-forward, self-attention, a depthwise convolution of ``conv_kernel`` nodes with a
    ``conv_norm``, half-step feed-forward, a final norm in each block); pre-norm only."""

    dim: int = 256
    depth: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None
    mlp_ratio: float = 4.0
    feed_forward: Literal["gelu", "gelu_tanh", "relu", "squared_relu", "silu", "swiglu"] = "gelu"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
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
    attention: Literal["softmax", "linear"] = "softmax"
    qk_norm: bool = False
    block: Literal["transformer", "conformer"] = "transformer"
    conv_kernel: int = 31
    conv_norm: Literal["batchnorm", "layernorm"] = "batchnorm"

    def __post_init__(self) -> None:
        self._check_fields()
        # options that are each valid alone but not together: say which conflicts with which
        if self.dim % self.num_heads:
            divisors = [d for d in range(1, self.dim + 1) if self.dim % d == 0 and d <= 64]
            raise ValueError(
                f"dim={self.dim} must be divisible by num_heads={self.num_heads}: every head gets dim / num_heads "
                f"channels (valid num_heads for this dim: {divisors}{', ...' if divisors[-1] < self.dim else ''})"
            )
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
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
        if self.attention == "linear":
            self._check_linear()
        if self.block == "conformer":
            if not self.norm_first:
                raise ValueError(
                    "block='conformer' conflicts with norm_first=False: Conformer blocks normalise each branch's "
                    "input (pre-norm) and end with a norm of their own; use norm_first=True or block='transformer'"
                )
            if self.layer_scale is not None:
                raise ValueError(
                    f"block='conformer' conflicts with layer_scale={self.layer_scale}: Conformer blocks scale their "
                    f"feed-forwards by 1/2 and have no layer scale; use layer_scale=None or block='transformer'"
                )
        if self.feed_forward == "swiglu" and int(2 * self.mlp_ratio * self.dim / 3) < 1:
            raise ValueError(
                f"feed_forward='swiglu' conflicts with mlp_ratio={self.mlp_ratio} at dim={self.dim}: "
                f"its hidden width 2/3 * mlp_ratio * dim rounds to 0 (raise mlp_ratio or dim)"
            )
        if self.feed_forward != "swiglu" and int(self.mlp_ratio * self.dim) < 1:
            raise ValueError(
                f"feed_forward={self.feed_forward!r} conflicts with mlp_ratio={self.mlp_ratio} at dim={self.dim}: "
                f"its hidden width mlp_ratio * dim rounds to 0 (raise mlp_ratio or dim)"
            )

    def _check_fields(self) -> None:
        """Each field alone: its type and range. The message names the field, the value and what is valid."""

        def bad(field: str, valid: str) -> ValueError:
            return ValueError(f"{field} must be {valid}, got {field}={getattr(self, field)!r}")

        for field, low in (("dim", 1), ("depth", 1), ("num_heads", 1), ("num_memory", 0)):
            if not (is_whole(getattr(self, field)) and getattr(self, field) >= low):
                raise bad(field, f"an integer >= {low}")
        for field, meaning in (
            ("num_kv_heads", "None (as many as num_heads)"),
            ("window", "None (no window)"),
            ("top_k", "None (keep every score)"),
        ):
            value = getattr(self, field)
            if value is not None and not (is_whole(value) and value >= 1):
                raise bad(field, f"an integer >= 1 or {meaning}")
        if not (is_finite_real(self.mlp_ratio) and self.mlp_ratio > 0):
            raise bad("mlp_ratio", "a finite number > 0 (the feed-forward's hidden width / dim, e.g. 4)")
        for field in ("dropout", "attn_dropout", "drop_path"):
            if not (is_finite_real(getattr(self, field)) and 0 <= getattr(self, field) < 1):
                raise bad(field, "a probability in [0, 1)")
        if self.layer_scale is not None and not (is_finite_real(self.layer_scale) and self.layer_scale > 0):
            raise bad("layer_scale", "a finite number > 0 (the initial per-channel scale, e.g. 1e-5) or None")
        if not (is_finite_real(self.norm_eps) and self.norm_eps > 0):
            raise bad("norm_eps", "a finite number > 0 (1e-5 in PyTorch, 1e-6 in timm's ViTs)")
        if not (is_whole(self.conv_kernel) and self.conv_kernel >= 1 and self.conv_kernel % 2 == 1):
            raise bad("conv_kernel", "an odd integer >= 1 (the depthwise convolution is centred on each node, e.g. 15 or 31)")
        if not (is_finite_real(self.rope_base) and self.rope_base > 1):
            raise bad("rope_base", "a finite number > 1 (10000 is usual)")
        for field in ("norm_first", "bias", "qk_norm"):
            if not isinstance(getattr(self, field), bool):
                raise bad(field, "True or False")
        choices = {
            "feed_forward": ("gelu", "gelu_tanh", "relu", "squared_relu", "silu", "swiglu"),
            "norm": ("layernorm", "rmsnorm"),
            "position": ("none", "rope", "alibi"),
            "attention": ("softmax", "linear"),
            "block": ("transformer", "conformer"),
            "conv_norm": ("batchnorm", "layernorm"),
        }
        for field, valid in choices.items():
            if getattr(self, field) not in valid:
                raise ValueError(f"{field}={getattr(self, field)!r} is not one of {valid}")

    def _check_linear(self) -> None:
        """attention='linear' has no score matrix: refuse the options that act on scores, naming both."""
        why = {
            "window": (self.window is not None, f"window={self.window}", "a sliding window masks single scores"),
            "top_k": (self.top_k is not None, f"top_k={self.top_k}", "top-k keeps the k highest scores of each query"),
            "attn_dropout": (self.attn_dropout > 0, f"attn_dropout={self.attn_dropout}", "attention dropout drops single attention weights"),
            "position": (self.position == "alibi", "position='alibi'", "ALiBi adds a bias to the scores"),
            "qk_norm": (self.qk_norm, "qk_norm=True", "QK-norm bounds the scores"),
        }
        for field, (conflicts, given, reason) in why.items():
            if conflicts:
                fixes = {"position": "position='rope' or 'none'", "attn_dropout": "attn_dropout=0.0", "qk_norm": "qk_norm=False"}
                fix = fixes.get(field, f"{field}=None")
                raise ValueError(
                    f"attention='linear' conflicts with {given}: {reason}, and linear attention never forms the "
                    f"scores; use {fix} with linear attention, or attention='softmax'"
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


def _norm(cfg: TransformerConfig) -> Callable[[int], nn.Module]:
    return functools.partial(nn.RMSNorm if cfg.norm == "rmsnorm" else nn.LayerNorm, eps=cfg.norm_eps)


def _block(
    cfg: TransformerConfig, index: int, pos: RelativePosition | None, *, cross_attention: bool, context_dim: int | None
) -> TransformerBlock | ConformerBlock:
    attn: MultiHeadAttention
    qk_norm = functools.partial(nn.RMSNorm, eps=cfg.norm_eps) if cfg.qk_norm else None
    if cfg.attention == "linear":
        attn = LinearAttention(cfg.dim, cfg.num_heads, num_kv_heads=cfg.num_kv_heads, bias=cfg.bias, num_memory=cfg.num_memory, pos=pos)
    else:
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
            qk_norm=qk_norm,
        )
    cross = None
    if cross_attention:
        cross = MultiHeadAttention(
            cfg.dim,
            cfg.num_heads,
            num_kv_heads=cfg.num_kv_heads,
            context_dim=context_dim,
            dropout=cfg.attn_dropout,
            bias=cfg.bias,
            qk_norm=qk_norm,
        )
    # stochastic depth grows linearly with depth (timm / DeiT)
    drop_path = cfg.drop_path * index / max(cfg.depth - 1, 1)
    if cfg.block == "conformer":
        conv = ConvModule(cfg.dim, cfg.conv_kernel, dropout=cfg.dropout, bias=cfg.bias, norm=cfg.conv_norm)
        return ConformerBlock(attn, _feed_forward(cfg), _feed_forward(cfg), conv, norm=_norm(cfg), dropout=cfg.dropout, drop_path=drop_path)
    return TransformerBlock(
        attn,
        _feed_forward(cfg),
        cross_attn=cross,
        norm=_norm(cfg),
        norm_first=cfg.norm_first,
        dropout=cfg.dropout,
        drop_path=drop_path,
        layer_scale=cfg.layer_scale,
    )


def _feed_forward(cfg: TransformerConfig) -> nn.Module:
    if cfg.feed_forward == "swiglu":
        return SwiGLU(cfg.dim, int(2 * cfg.mlp_ratio * cfg.dim / 3), dropout=cfg.dropout, bias=cfg.bias)
    return MLP(cfg.dim, int(cfg.mlp_ratio * cfg.dim), dropout=cfg.dropout, bias=cfg.bias, activation=cfg.feed_forward)


class _Stack(nn.Module):
    def __init__(self, cfg: TransformerConfig, *, cross_attention: bool, context_dim: int | None = None) -> None:
        super().__init__()
        self.config = cfg
        pos = _relative_position(cfg)  # one instance shared by every layer (tables only, no weights)
        self.blocks = nn.ModuleList(
            _block(cfg, i, pos, cross_attention=cross_attention, context_dim=context_dim) for i in range(cfg.depth)
        )
        self.cross_attention = cross_attention
        self.context_dim = cfg.dim if context_dim is None else context_dim
        # a pre-norm stack leaves its residual stream un-normalised: normalise once at the end
        # (Conformer blocks end with a norm of their own)
        self.norm = _norm(cfg)(cfg.dim) if cfg.norm_first and cfg.block == "transformer" else nn.Identity()

    def make_cache(self, max_len: int | None = None) -> list[LayerCache]:
        """One empty decoding cache per layer for its self-attention: a ``KVCache(max_len)`` for full
        attention, a ``RollingKVCache(window)`` (O(window) memory, no length limit) for a windowed
        layer, a ``LinearAttentionState`` for linear attention. ``max_len=None``: one context
        ``KVCache`` per layer for cross-attention."""
        if max_len is None:
            return [KVCache() for _ in self.blocks]
        return [_self_cache(block.attn, max_len) for block in self.blocks]


def _self_cache(attn: MultiHeadAttention, max_len: int) -> LayerCache:
    if isinstance(attn, LinearAttention):
        return LinearAttentionState()
    if attn.window is not None:
        return RollingKVCache(attn.window)
    return KVCache(max_len)


class Encoder(_Stack):
    """Bidirectional stack: every node attends to every (real) node. (B, N, D) -> (B, N, D)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__(cfg, cross_attention=False)

    def forward(self, x: Tensor, *, key_padding_mask: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """x (B, N, D), key_padding_mask (B, N) bool, mask broadcastable to (B, H, N, N) -> (B, N, D)."""
        return self.forward_layers(x, (), key_padding_mask=key_padding_mask, mask=mask)[0]

    def forward_layers(
        self,
        x: Tensor,
        layers: Sequence[int],
        *,
        key_padding_mask: Tensor | None = None,
        mask: Tensor | None = None,
        condition: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """``forward``, plus the nodes after each of ``layers`` (1 = after the first block, up to
        depth - 1; in block order), each through the stack's final norm as the output is: the intermediate outputs
        that intermediate CTC (Lee & Watanabe 2021) reads with the output's head. ``condition``:
        maps each kept (B, N, D) to an addition to the nodes before the next block (self-conditioned
        CTC, Nozaki & Komatsu 2021: the next layers see the intermediate prediction)."""
        check_nodes(x, "x", self.config.dim, "this Encoder's width is dim")
        if key_padding_mask is not None:
            check_padding_mask(key_padding_mask, "key_padding_mask", x.shape[0], x.shape[1], what="N")
        wanted = set(layers)
        if not wanted <= set(range(1, len(self.blocks))):
            raise ValueError(f"layers={list(layers)} must be block counts in 1..{len(self.blocks) - 1} (this Encoder has {len(self.blocks)} blocks)")
        kept = []
        for i, block in enumerate(self.blocks, start=1):
            x = block(x, mask=mask, key_padding_mask=key_padding_mask)
            if i in wanted:
                kept.append(self.norm(x))
                if condition is not None:
                    x = x + condition(kept[-1])
        return self.norm(x), kept


class Decoder(_Stack):
    """Causal stack, optionally cross-attending to an encoder's output. (B, N, D) -> (B, N, D).

    With ``cache`` (from ``make_cache``), x holds the nodes that follow the cached ones; with
    ``cross_cache`` the context's keys/values are computed on the first call only.
    """

    def __init__(self, cfg: TransformerConfig, *, cross_attention: bool = False, context_dim: int | None = None) -> None:
        if cfg.block != "transformer":
            raise ValueError(
                f"block={cfg.block!r} is an encoder block: its convolution sees the nodes on both sides, which a causal "
                f"Decoder must not; use block='transformer' for the decoder (an Encoder takes block='conformer')"
            )
        super().__init__(cfg, cross_attention=cross_attention, context_dim=context_dim)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        context_padding_mask: Tensor | None = None,
        cache: list[LayerCache] | None = None,
        cross_cache: list[KVCache] | None = None,
    ) -> Tensor:
        """x (B, N, D), context (B, M, Dc), key_padding_mask (B, cached + N), context_padding_mask
        (B, M) -> (B, N, D)."""
        check_nodes(x, "x", self.config.dim, "this Decoder's width is dim")
        if not self.cross_attention:
            if context is not None or context_padding_mask is not None or cross_cache is not None:
                given = [
                    name
                    for name, value in (("context", context), ("context_padding_mask", context_padding_mask), ("cross_cache", cross_cache))
                    if value is not None
                ]
                raise ValueError(
                    f"{' and '.join(given)} given, but this Decoder has no cross-attention, so it would be ignored: "
                    f"to attend to an encoder's output build it with Decoder(cfg, cross_attention=True, "
                    f"context_dim=<the encoder's width>)"
                )
        elif context is not None:
            check_nodes(context, "context", self.context_dim, "this Decoder's cross-attention takes context_dim", nodes="M")
            if context_padding_mask is not None:
                check_padding_mask(context_padding_mask, "context_padding_mask", context.shape[0], context.shape[1])
        if cache is not None or cross_cache is not None:
            self._check_caches(cache, cross_cache)
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

    def _check_caches(self, cache: list[LayerCache] | None, cross_cache: list[KVCache] | None) -> None:
        """One cache object per layer: a cache shared by layers mixes their keys and decodes garbage."""
        depth = len(self.blocks)
        named = (("cache", cache), ("cross_cache", cross_cache)) if cross_cache is not None else (("cache", cache),)
        named = named if cache is not None else named[1:]
        for name, caches in named:
            if isinstance(caches, (KVCache, RollingKVCache, LinearAttentionState)) or len(caches) != depth:
                single = isinstance(caches, (KVCache, RollingKVCache, LinearAttentionState))
                got = f"a single {type(caches).__name__}" if single else f"{len(caches)} caches"
                raise ValueError(
                    f"{name} must hold one KVCache per layer ({depth} for this Decoder), got {got}: "
                    f"make it with decoder.make_cache({'max_len' if name == 'cache' else ''})"
                )
        if torch.compiler.is_compiling():
            return  # the identity check would guard on each cache object and recompile per generation
        every = named[0][1] if len(named) == 1 else [*cache, *cross_cache]  # type: ignore[misc]
        if len(set(map(id, every))) == len(every):
            return
        seen: dict[int, tuple[str, int]] = {}
        for name, caches in named:
            for i, c in enumerate(caches):
                first = seen.setdefault(id(c), (name, i))
                if first != (name, i):
                    raise ValueError(
                        f"{first[0]}[{first[1]}] and {name}[{i}] are the same KVCache object, used by layers {first[1]} "
                        f"and {i}: every layer needs a cache of its own (a list like [KVCache(n)] * depth repeats one "
                        f"object); use decoder.make_cache(max_len) or [KVCache(max_len) for _ in range(depth)]"
                    )


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
