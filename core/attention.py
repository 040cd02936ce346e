"""Multi-head attention: self / cross, masks, GQA, sliding window, top-k, memory nodes, KV cache.

A node attends to the nodes it is connected to. Which ones is the mask's business: all of them
(encoder), only the past (``is_causal``, decoder), a sliding window of neighbours (``window``),
the k best-scoring ones (``top_k``), another sequence (``context``, cross-attention), and always
the learned memory nodes when there are any.

Shape legend
    B batch, N query nodes, M key/value nodes (context, or cache + new), P memory nodes,
    D width, H query heads, Hkv key/value heads, Dh head width.

Masks (the meaning ``F.scaled_dot_product_attention`` gives them): boolean ``True`` = may attend,
float = added to the scores. ``key_padding_mask`` is (B, M) with ``True`` = real node; ``mask`` is
any 2- to 4-axis tensor that broadcasts to (B, H, N, M) as SDPA broadcasts it — (N, M), (B, 1, 1, M),
(1, 1, N, M), (B, H, N, M), ... — except that a 3-D mask means (B, N, M). M never counts memory
nodes: they are always visible.

Sliding windows: self-attention over N nodes with a ``window`` takes the banded path
(``tzoo.core.banded``, O(N·W) time and memory) by itself when it is the cheaper one — N at least
twice the keys a block scores (``use_banded``), no ``mask=`` (key padding is fine), no top-k and no
captured weights, which need the full score matrix. Otherwise the window is a mask on the (N, M) scores (the
reference path). Both give the same output. With a ``RollingKVCache`` a windowed layer decodes with
O(W) memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tzoo.core._checks import check_nodes, check_padding_mask, is_whole
from tzoo.core.banded import banded_attention, use_banded
from tzoo.core.cache import KVCache, LayerCache, LinearAttentionState, RollingKVCache
from tzoo.core.positional import RelativePosition

__all__ = ["KVCache", "MultiHeadAttention", "capture_attention"]


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention over H heads with separate q, k, v projections.

    ``num_kv_heads`` < ``num_heads`` shares each key/value head among a group of query heads
    (GQA; 1 = multi-query). ``window`` limits each query to nodes less than ``window`` positions
    away (only earlier ones when causal). ``top_k`` keeps, per query, only its k highest scores.
    ``pos`` is a relative positional scheme (RoPE, ALiBi) applied within self-attention.
    ``num_memory`` learned key/value nodes are visible to every query. ``qk_norm`` (a norm
    factory, e.g. ``nn.RMSNorm``) normalises each head's query and key over its Dh channels before
    the relative positions act and the scores are taken (QK-norm: bounded attention logits).

    The default path is ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on
    GPU); ``top_k`` needs the scores and takes the explicit path. Both return the same tensor.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        context_dim: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        window: int | None = None,
        top_k: int | None = None,
        num_memory: int = 0,
        pos: RelativePosition | None = None,
        qk_norm: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if dim < 1:
            raise ValueError(f"dim must be >= 1 (the width of the nodes), got dim={dim}")
        if context_dim is not None and context_dim < 1:
            raise ValueError(f"context_dim must be >= 1 (or None: the context has width dim), got context_dim={context_dim}")
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads} (num_heads >= 1)")
        if num_kv_heads < 1 or num_heads % num_kv_heads:
            raise ValueError(
                f"num_heads={num_heads} must be divisible by num_kv_heads={num_kv_heads} "
                f"(valid: a divisor of {num_heads})"
            )
        if window is not None and not (is_whole(window) and window >= 1):
            raise ValueError(f"window must be >= 1 node, a whole number (or None for no window), got window={window!r}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 (or None to keep every score), got top_k={top_k}")
        if num_memory < 0:
            raise ValueError(f"num_memory must be >= 0, got {num_memory}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if pos is not None:
            if not isinstance(pos, RelativePosition):
                raise TypeError(
                    f"pos must be a RelativePosition module (e.g. RotaryEmbedding(head_dim), ALiBi(num_heads)) "
                    f"or None, got {pos!r}"
                )
            pos.check_fits(num_heads, dim // num_heads)
        self.dim, self.num_heads, self.num_kv_heads = dim, num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        self.dropout, self.window, self.top_k, self.pos = dropout, window, top_k, pos
        kv_dim = num_kv_heads * self.head_dim
        # q, k and v projections stored as one (D + 2·Hkv·Dh, D) matrix, rows [q; k; v], when keys
        # come from nodes of the same width: self-attention then takes one matmul, and
        # cross-attention uses the q rows and the k, v rows separately (views, no copies). With
        # another context width the layer can only cross-attend (k, v take width context_dim).
        self.context_dim = dim if context_dim is None else context_dim
        self.qkv_proj: nn.Linear | None = None
        self.q_proj: nn.Linear | None = None
        self.kv_proj: nn.Linear | None = None
        if context_dim is None or context_dim == dim:
            self.qkv_proj = nn.Linear(dim, dim + 2 * kv_dim, bias=bias)
        else:
            self.q_proj = nn.Linear(dim, dim, bias=bias)
            self.kv_proj = nn.Linear(context_dim, 2 * kv_dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.memory = nn.Parameter(torch.randn(2, num_kv_heads, num_memory, self.head_dim) * 0.02) if num_memory else None
        # one learned gain over the head width, shared by the heads (as in OLMo 2 / the speedrun GPTs)
        self.q_norm = qk_norm(self.head_dim) if qk_norm is not None else None
        self.k_norm = qk_norm(self.head_dim) if qk_norm is not None else None
        # Set by `capture_attention`: the lists (one per active capture) that receive this layer's
        # attention weights; None when nothing captures.
        self.captured: list[list[Tensor]] | None = None

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
        cache: LayerCache | None = None,
    ) -> Tensor:
        """x (B, N, D), context (B, M, Dc) or None for self-attention -> (B, N, D).

        With a ``cache``, self-attention treats x as the nodes following the cached ones (a causal
        decoder step or a prefill; a ``KVCache`` or, for a windowed layer, a ``RollingKVCache``);
        cross-attention computes the context's keys/values once (a ``KVCache``).
        """
        check_nodes(x, "x", self.dim, "this attention's width is dim")
        B, N, _ = x.shape
        H, Hkv, Dh = self.num_heads, self.num_kv_heads, self.head_dim
        offset = 0  # the position of x's first node (RoPE rotates by it)
        if isinstance(cache, LinearAttentionState):
            raise ValueError(
                "a LinearAttentionState is the cache of linear attention, but this layer is softmax attention: "
                "give it a KVCache (or a RollingKVCache for a windowed layer), e.g. from decoder.make_cache(max_len)"
            )
        if context is None:
            if self.qkv_proj is None:
                raise ValueError(
                    f"this MultiHeadAttention was built with context_dim={self.context_dim} != dim={self.dim}, so it can "
                    f"only cross-attend: pass context= (B, M, {self.context_dim}), or build it without context_dim "
                    f"for self-attention"
                )
            if cache is not None:
                offset = cache.length
            q, k, v = self._project_self(x, offset)  # (B, H, N, Dh), (B, Hkv, N, Dh) twice
            if cache is not None:
                k, v = cache.append(k, v)  # (B, Hkv, M, Dh), M = offset + N (KVCache) or retained + N
                if key_padding_mask is not None and isinstance(cache, RollingKVCache) and key_padding_mask.shape[-1] == cache.length:
                    key_padding_mask = key_padding_mask[:, cache.length - k.shape[2] :]  # the columns of the keys kept
        else:
            check_nodes(
                context, "context", self.context_dim, "this attention takes context of width context_dim", nodes="M"
            )
            if context.shape[0] != B:
                raise ValueError(f"context has batch size {context.shape[0]} but x has {B}: give each sequence in x its own context")
            if is_causal:
                raise ValueError(
                    "is_causal=True applies to self-attention (a node and the nodes before it); a query may see all of "
                    "the context in cross-attention: pass a mask= to restrict it"
                )
            wq, bq, wkv, bkv = self._cross_weights()
            q = F.linear(x, wq, bq).view(B, N, H, Dh).transpose(1, 2)  # (B, H, N, Dh)
            if self.q_norm is not None:
                q = self.q_norm(q)
            if isinstance(cache, RollingKVCache):
                raise ValueError("a RollingKVCache keeps a self-attention window; a cross-attention context needs a KVCache() of its own")
            if cache is not None and cache.length:
                k, v = cache.cached()
            else:
                Mc = context.shape[1]
                kv = F.linear(context, wkv, bkv).view(B, Mc, 2 * Hkv, Dh).transpose(1, 2)  # (B, 2Hkv, M, Dh)
                k, v = kv.split([Hkv, Hkv], dim=1)
                if self.k_norm is not None:
                    k = self.k_norm(k)
                if cache is not None:
                    k, v = cache.append(k, v)
        M = k.shape[2]
        # x's first position counted from the first key: the offset, unless a rolling cache dropped old keys
        start = M - N if context is None else 0
        causal = is_causal and context is None
        dropout = self.dropout if self.training else 0.0
        if self._banded(context, N, M, mask, causal):
            assert self.window is not None
            if key_padding_mask is not None:
                check_padding_mask(key_padding_mask, "key_padding_mask", B, M)
            memory = (self.memory[0], self.memory[1]) if self.memory is not None else None
            out = banded_attention(
                q, k, v, window=self.window, causal=causal, key_padding_mask=key_padding_mask, pos=self.pos, memory=memory, dropout=dropout
            )  # (B, H, N, Dh)
            return self.out_proj(out.transpose(1, 2).reshape(B, N, self.dim))

        bias = self.pos.bias(N, M, start) if self.pos is not None and context is None else None
        # a window at least as wide as the span of positions masks nothing (e.g. a decoding step on a
        # rolling cache, which holds only keys inside the window): no mask to build for it
        window = self.window if self.window is not None and max(M, start + N) > self.window else None
        if mask is None and key_padding_mask is None and bias is None and window is None and (not causal or N == 1):
            attn_mask, sdpa_causal = None, False  # the common decoder step and plain encoder: nothing to build
        else:
            attn_mask, sdpa_causal = self._mask(B, N, M, start, causal, window, mask, key_padding_mask, bias, x.device)
        if self.memory is not None:
            k, v, attn_mask = self._add_memory(k, v, attn_mask, B, N, sdpa_causal, start)
            sdpa_causal = False

        if sdpa_causal and (self.top_k is not None or self.captured is not None):
            # the explicit paths need the causal rule written out
            attn_mask, sdpa_causal = torch.ones(N, M, dtype=torch.bool, device=x.device).tril(), False

        if self.top_k is not None:
            out = _explicit_attention(q, k, v, attn_mask, top_k=self.top_k, dropout=dropout, training=self.training)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout, is_causal=sdpa_causal, enable_gqa=Hkv != H
            )  # (B, H, N, Dh)
        if self.captured is not None:
            weights = _attention_weights(q, k, attn_mask, top_k=self.top_k).detach()
            for record in self.captured:  # nested captures of this layer each get the weights
                record.append(weights)
        out = out.transpose(1, 2).reshape(B, N, self.dim)  # (B, N, D)
        return self.out_proj(out)

    def _banded(self, context: Tensor | None, N: int, M: int, mask: Tensor | None, causal: bool) -> bool:
        """Whether this call takes the banded window path: self-attention of N nodes over the same
        N nodes (no cached keys before them), long enough, and nothing that needs the (N, M) scores."""
        return (
            self.window is not None
            and context is None
            and M == N
            and mask is None
            and self.top_k is None
            and self.captured is None
            and use_banded(N, self.window, causal)
        )

    def _project_self(self, x: Tensor, offset: int) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v of the same nodes with one matmul, q and k rotated together by a relative
        positional scheme. (B, N, D) -> (B, H, N, Dh), (B, Hkv, N, Dh), (B, Hkv, N, Dh)."""
        B, N, _ = x.shape
        H, Hkv, Dh = self.num_heads, self.num_kv_heads, self.head_dim
        assert self.qkv_proj is not None  # forward refused self-attention for a cross-only layer
        qkv = self.qkv_proj(x).view(B, N, H + 2 * Hkv, Dh).transpose(1, 2)  # (B, H + 2Hkv, N, Dh)
        if self.q_norm is None:
            if self.pos is None:
                return qkv.split([H, Hkv, Hkv], dim=1)
            qk, v = qkv.split([H + Hkv, Hkv], dim=1)
        else:
            assert self.k_norm is not None
            q, k, v = qkv.split([H, Hkv, Hkv], dim=1)
            q, k = self.q_norm(q), self.k_norm(k)  # over each head's Dh channels, before the rotation
            if self.pos is None:
                return q, k, v
            qk = torch.cat([q, k], dim=1)  # (B, H + Hkv, N, Dh)
        q, k = self.pos.rotate(qk, offset).split([H, Hkv], dim=1)  # (B, H, N, Dh), (B, Hkv, N, Dh)
        return q, k, v

    def _cross_weights(self) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        """(W_q, b_q, W_kv, b_kv): the query rows and the key/value rows of the projections."""
        if self.qkv_proj is None:
            assert self.q_proj is not None and self.kv_proj is not None
            return self.q_proj.weight, self.q_proj.bias, self.kv_proj.weight, self.kv_proj.bias
        w, b = self.qkv_proj.weight, self.qkv_proj.bias
        return w[: self.dim], None if b is None else b[: self.dim], w[self.dim :], None if b is None else b[self.dim :]

    def projections(self) -> dict[str, tuple[Tensor, Tensor | None]]:
        """The separate q, k and v projections as ``{"q": (weight, bias), "k": ..., "v": ...}``
        (views of the stored parameters), e.g. to compare with or load from another library."""
        wq, bq, wkv, bkv = self._cross_weights()
        wk, wv = wkv.chunk(2)
        bk, bv = (None, None) if bkv is None else bkv.chunk(2)
        return {"q": (wq, bq), "k": (wk, bk), "v": (wv, bv)}

    def _mask(
        self,
        B: int,
        N: int,
        M: int,
        start: int,
        causal: bool,
        window: int | None,
        mask: Tensor | None,
        key_padding_mask: Tensor | None,
        bias: Tensor | None,
        device: torch.device,
    ) -> tuple[Tensor | None, bool]:
        """Combine every rule into one SDPA mask: (bool or additive float, broadcastable to
        (B, H, N, M)) for queries at positions start .. start + N - 1 against keys 0 .. M - 1, and
        whether SDPA's own ``is_causal`` can stand in for it."""
        if mask is None and key_padding_mask is None and bias is None and window is None:
            if not causal or N == 1:  # a single new node may see every cached one
                return None, False
            if start == 0 and N == M:
                return None, True
        allowed: Tensor | None = None
        if causal or window is not None:
            q_pos = torch.arange(start, start + N, device=device)[:, None]
            k_pos = torch.arange(M, device=device)[None, :]
            allowed = k_pos <= q_pos if causal else torch.ones(N, M, dtype=torch.bool, device=device)
            if window is not None:
                allowed = allowed & ((q_pos - k_pos).abs() < window)  # (N, M)
        if key_padding_mask is not None:
            check_padding_mask(key_padding_mask, "key_padding_mask", B, M)
            kp = key_padding_mask[:, None, None, :]  # (B, 1, 1, M)
            allowed = kp if allowed is None else allowed & kp
        additive = bias
        if mask is not None:
            mask = self._check_mask(mask, B, N, M)
            if mask.dtype == torch.bool:
                allowed = mask if allowed is None else allowed & mask
            else:
                additive = mask if additive is None else additive + mask
        if additive is None:
            return allowed, False
        if allowed is not None:
            additive = additive.masked_fill(~allowed, float("-inf"))
        return additive, False

    def _check_mask(self, mask: Tensor, B: int, N: int, M: int) -> Tensor:
        """A bool or float mask that broadcasts to (B, H, N, M) -> one SDPA broadcasts the same way."""
        if not isinstance(mask, Tensor) or not (mask.dtype == torch.bool or mask.is_floating_point()):
            got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise TypeError(f"mask must be a bool tensor (True = may attend) or a floating one (added to the scores), got {got}")
        shape, d = tuple(mask.shape), mask.dim()
        # a 3-D mask is (B, N, M), as documented; every other rank aligns with (B, H, N, M) from the right
        full = (B, N, M) if d == 3 else (B, self.num_heads, N, M)
        if not 2 <= d <= 4 or any(s != 1 and s != f for s, f in zip(shape, full[len(full) - d :])):
            raise ValueError(
                f"mask has shape {shape}, which does not broadcast to (B, H, N, M) = ({B}, {self.num_heads}, {N}, {M}): "
                f"it needs 2 to 4 axes, each 1 or the full size, e.g. (N, M) = ({N}, {M}), (B, 1, 1, M), (1, 1, N, M), "
                f"(B, H, N, M), or (B, N, M) = ({B}, {N}, {M}) for a 3-D mask "
                f"(for a (B, M) key-padding mask use key_padding_mask=)"
            )
        return mask[:, None] if d == 3 else mask  # (B, 1, N, M)

    def _add_memory(
        self, k: Tensor, v: Tensor, attn_mask: Tensor | None, B: int, N: int, causal: bool, start: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Prepend the P memory nodes to keys/values; every query may attend to them."""
        assert self.memory is not None
        P, M = self.memory.shape[2], k.shape[2]
        mem_k = self.memory[0].to(k.dtype).expand(B, -1, -1, -1)  # (B, Hkv, P, Dh)
        mem_v = self.memory[1].to(v.dtype).expand(B, -1, -1, -1)
        k, v = torch.cat([mem_k, k], dim=2), torch.cat([mem_v, v], dim=2)  # (B, Hkv, P + M, Dh)
        if causal:
            attn_mask = torch.ones(N, M, dtype=torch.bool, device=k.device).tril(start)
        if attn_mask is None:
            return k, v, None
        lead = attn_mask.shape[:-1]
        if attn_mask.dtype == torch.bool:
            pad = torch.ones(*lead, P, dtype=torch.bool, device=attn_mask.device)
        else:
            pad = torch.zeros(*lead, P, dtype=attn_mask.dtype, device=attn_mask.device)
        return k, v, torch.cat([pad, attn_mask], dim=-1)  # (..., N, P + M)


def _scores(q: Tensor, k: Tensor, attn_mask: Tensor | None, top_k: int | None) -> Tensor:
    """Masked (and top-k filtered) attention logits, (B, H, N, M)."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)  # (B, H, M, Dh)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, H, N, M)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    if top_k is not None and top_k < scores.shape[-1]:
        kth = scores.topk(top_k, dim=-1).values[..., -1:]  # (B, H, N, 1); ties with the k-th are kept
        scores = scores.masked_fill(scores < kth, float("-inf"))
    return scores


def _attention_weights(q: Tensor, k: Tensor, attn_mask: Tensor | None, *, top_k: int | None = None) -> Tensor:
    """softmax(q kᵀ / sqrt(Dh) + mask), (B, H, N, M), rows summing to 1."""
    return torch.softmax(_scores(q, k, attn_mask, top_k).float(), dim=-1).to(q.dtype)


def _explicit_attention(
    q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, *, top_k: int | None, dropout: float, training: bool
) -> Tensor:
    weights = _attention_weights(q, k, attn_mask, top_k=top_k)
    if dropout:
        weights = F.dropout(weights, dropout, training=training)
    groups = q.shape[1] // v.shape[1]
    if groups > 1:
        v = v.repeat_interleave(groups, dim=1)  # (B, H, M, Dh)
    return weights @ v  # (B, H, N, Dh)


@contextmanager
def capture_attention(model: nn.Module, layers: Iterable[str] | str | None = None) -> Iterator[dict[str, list[Tensor]]]:
    """Record the attention weights of chosen layers while the model runs on its fast path.

    Yields ``{layer name: [weights (B, H, N, P + M) per forward call]}``. Only the chosen layers
    recompute softmax(q kᵀ + mask), from the same q and k the fast path used; the output is
    unchanged. ``layers`` are names from ``model.named_modules()`` (default: every attention), or
    one such name. Captures nest: an inner one on the same layer does not take the outer one's maps.
    """
    found = {name: m for name, m in model.named_modules() if isinstance(m, MultiHeadAttention)}
    if isinstance(layers, str):  # one name, not a sequence of one-letter names
        layers = [layers]
    names = list(found) if layers is None else list(dict.fromkeys(layers))
    unknown = [n for n in names if n not in found]
    if unknown:
        raise ValueError(f"no attention layer named {', '.join(map(repr, unknown))}; attention layers: {list(found)}")
    maps: dict[str, list[Tensor]] = {name: [] for name in names}
    for name in names:
        found[name].captured = [*(found[name].captured or []), maps[name]]
    try:
        yield maps
    finally:
        for name in names:  # remove this capture's list only: an enclosing capture keeps recording
            rest = [record for record in found[name].captured or [] if record is not maps[name]]
            found[name].captured = rest or None
