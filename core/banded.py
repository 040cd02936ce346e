"""Banded sliding-window attention: O(N·W) time and memory instead of O(N²).

A query at position p sees the keys p - W + 1 .. p (causal) or p - W + 1 .. p + W - 1 (symmetric).
The masked reference path (``MultiHeadAttention`` building an (N, N) window mask) still scores
every pair. Here the N queries are cut into blocks of Q consecutive nodes (``block_size``); block b
attends only to the keys its queries can see — its own block plus the W - 1 nodes before it (and
the W - 1 after it when symmetric) — in one batched ``F.scaled_dot_product_attention`` call with a
band mask:

    block b:  queries  b·Q .. b·Q + Q - 1
              keys     b·Q - (W - 1) .. b·Q + Q - 1 (+ W - 1 when symmetric)     L = Q + W - 1 (+ W - 1)

Keys before the first node and after the last (the first block, a ragged last block) are masked
out, as are padded keys (``key_padding_mask``). Relative positions work unchanged: RoPE has rotated
q and k already, and an additive bias that depends only on q - k (ALiBi) is the same for every
block, so it is computed once for a (Q, L) block. Memory nodes are prepended to every block's keys.

Why SDPA on blocks and not ``torch.nn.attention.flex_attention`` with a block mask: in torch 2.14
flex attention has no backward on CPU, and eager flex attention materialises the full score matrix
(compiled, forward only, it is about as fast as these blocks on CPU: docs/attention_scaling.md). So
the blocks are used on every device; one SDPA call keeps the fused CPU / GPU kernels.

Shape legend: B batch, N nodes, H query heads, Hkv key/value heads, Dh head width, W window,
Q nodes per query block, L keys per block, P memory nodes, nb number of blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tzoo.core.positional import RelativePosition

__all__ = ["banded_attention", "block_size", "keys_per_block", "use_banded"]

MIN_BLOCK = 64  # below this many queries per block the per-block overhead outweighs what the band saves


def block_size(window: int) -> int:
    """Queries per block: half the window, at least MIN_BLOCK. A smaller block wastes less of the band
    (a causal block scores Q + W - 1 keys per query, W of them in its window) until per-block
    overhead wins. Measured on CPU (fwd+bwd, T=8192, one thread, three sizes per window): W=64 ->
    64 fastest (of 32, 64, 128); W=256 -> 128 fastest (of 64, 128, 256); W=1024 -> 512 within 8% of
    the fastest, 256 (of 256, 512, 1024)."""
    return max(MIN_BLOCK, window // 2)


def keys_per_block(window: int, causal: bool) -> int:
    """L: the keys a block of queries is scored against."""
    return block_size(window) + (window - 1) * (1 if causal else 2)


def use_banded(num_nodes: int, window: int, causal: bool) -> bool:
    """Whether the banded path is the cheaper one: it scores N·L (query, key) pairs, the masked path
    N², so take it from N = 2·L on (half the work or less, more than one block)."""
    return num_nodes >= 2 * keys_per_block(window, causal)


def banded_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    window: int,
    causal: bool,
    key_padding_mask: Tensor | None = None,
    pos: RelativePosition | None = None,
    memory: tuple[Tensor, Tensor] | None = None,
    dropout: float = 0.0,
) -> Tensor:
    """Sliding-window attention of N nodes over the same N nodes.

    q (B, H, N, Dh), k and v (B, Hkv, N, Dh) (q, k already rotated by RoPE), key_padding_mask
    (B, N) bool (True = real node), ``pos`` an additive relative bias (ALiBi) or None, ``memory``
    keys and values (Hkv, P, Dh) every query sees -> (B, H, N, Dh), equal to SDPA with the (N, N)
    window mask.
    """
    B, H, N, Dh = q.shape
    Hkv = k.shape[1]
    Q = block_size(window)
    left, right = window - 1, 0 if causal else window - 1
    L = keys_per_block(window, causal)
    nb = -(-N // Q)
    pad = nb * Q - N  # query slots after the last node (a ragged last block)

    qb = F.pad(q, (0, 0, 0, pad)).view(B, H, nb, Q, Dh).transpose(1, 2).reshape(B * nb, H, Q, Dh)
    kb, vb = _key_blocks(k, nb, Q, left, right), _key_blocks(v, nb, Q, left, right)  # (B·nb, Hkv, L, Dh)

    # which (query, key) pairs of a block are in the window: d = q_pos - k_pos = i + left - j
    i = torch.arange(Q, device=q.device)[:, None]
    j = torch.arange(L, device=q.device)[None, :]
    d = i + left - j
    band = (d >= 0) & (d < window) if causal else d.abs() < window  # (Q, L)
    k_pos = torch.arange(nb, device=q.device)[:, None] * Q - left + j  # (nb, L)
    real = (k_pos >= 0) & (k_pos < N)
    if key_padding_mask is not None:
        padded = F.pad(key_padding_mask, (left, right + pad), value=False)  # (B, left + nb·Q + right)
        real = real & padded.unfold(1, L, Q)  # (B, nb, L)
    allowed = band & real[..., None, :]  # (B or 1, nb, Q, L)
    # query slots past the last node see every key: their outputs are dropped, and a row with no
    # visible key would put NaN into the backward pass
    q_pos = torch.arange(nb * Q, device=q.device).view(nb, Q, 1)
    allowed = (allowed | (q_pos >= N)).expand(B, nb, Q, L).reshape(B * nb, 1, Q, L)

    mask: Tensor = allowed
    bias = pos.bias(Q, L, left) if pos is not None else None  # (H, Q, L): the same for every block
    if bias is not None:
        mask = bias.to(q.dtype).masked_fill(~allowed, float("-inf"))  # (B·nb, H, Q, L)
    if memory is not None:
        mem_k, mem_v = memory
        P = mem_k.shape[1]
        kb = torch.cat([mem_k.to(kb.dtype).expand(B * nb, -1, -1, -1), kb], dim=2)  # (B·nb, Hkv, P + L, Dh)
        vb = torch.cat([mem_v.to(vb.dtype).expand(B * nb, -1, -1, -1), vb], dim=2)
        if mask.dtype == torch.bool:
            seen = torch.ones(*mask.shape[:-1], P, dtype=torch.bool, device=mask.device)
        else:
            seen = torch.zeros(*mask.shape[:-1], P, dtype=mask.dtype, device=mask.device)
        mask = torch.cat([seen, mask], dim=-1)  # (B·nb, 1 or H, Q, P + L)

    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, dropout_p=dropout, enable_gqa=Hkv != H)  # (B·nb, H, Q, Dh)
    return out.view(B, nb, H, Q, Dh).transpose(1, 2).reshape(B, H, nb * Q, Dh)[:, :, :N]


def _key_blocks(x: Tensor, nb: int, Q: int, before: int, after: int) -> Tensor:
    """(B, Hkv, N, Dh) -> (B·nb, Hkv, before + Q + after, Dh): block b holds nodes
    b·Q - before .. b·Q + Q + after - 1 (zeros outside 0..N-1; the mask hides them).

    Built from whole blocks — the tails of the previous ones, the block, the heads of the next ones —
    because slices and a concatenation have a cheap backward (``Tensor.unfold``'s is not)."""
    B, Hkv, N, Dh = x.shape
    body = F.pad(x, (0, 0, 0, nb * Q - N)).view(B, Hkv, nb, Q, Dh)

    def shifted(s: int) -> Tensor:  # block b -> block b - s (zeros where that is outside), (B, Hkv, nb, Q, Dh)
        if abs(s) >= nb:
            return torch.zeros_like(body)
        return F.pad(body[:, :, : nb - s], (0, 0, 0, 0, s, 0)) if s > 0 else F.pad(body[:, :, -s:], (0, 0, 0, 0, 0, -s))

    parts = [body]
    if before:
        p = -(-before // Q)  # earlier blocks the window reaches into
        parts.insert(0, torch.cat([shifted(s) for s in range(p, 0, -1)], dim=3)[:, :, :, p * Q - before :])
    if after:
        p = -(-after // Q)
        parts.append(torch.cat([shifted(-s) for s in range(1, p + 1)], dim=3)[:, :, :, :after])
    blocks = torch.cat(parts, dim=3) if len(parts) > 1 else body  # (B, Hkv, nb, L, Dh)
    return blocks.transpose(1, 2).reshape(B * nb, Hkv, -1, Dh)
