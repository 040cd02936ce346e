"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"): O(N) time, O(1) decoding state.

Softmax attention's similarity exp(q·k / sqrt(Dh)) is replaced by φ(q)·φ(k) with the positive
feature map φ(x) = elu(x) + 1. Then a query's output needs only two running sums over the keys it
sees, whatever their number:

    out_i = φ(q_i)ᵀ S_i / (φ(q_i)ᵀ z_i + eps),    S_i = Σ_j φ(k_j) v_jᵀ  (Dh, Dh),    z_i = Σ_j φ(k_j)  (Dh,)

(j ≤ i when causal, every j otherwise). Two ways to compute the causal case, equal up to rounding:

- parallel (training, prefill): the nodes are cut into chunks of C; inside a chunk the (C, C) matrix
  φ(q) φ(k)ᵀ is masked causally, and S, z of the earlier chunks come from a cumulative sum of
  per-chunk sums. O(N·C·Dh + N·Dh²) time, O(N·C + N/C·Dh²) memory.
- recurrent (decoding): S and z are the state (``LinearAttentionState``), updated by one node per
  step: O(Dh²) per node, O(1) memory in the sequence length.

Relative positions: RoPE rotates φ(q) and φ(k) in the numerator only; the normaliser keeps the
unrotated (positive) features (RoFormer, Su et al. 2021, section 3.3). A score bias (ALiBi) cannot
apply: there are no scores. Memory nodes add a constant Σ φ(k_p) v_pᵀ, Σ φ(k_p) to every query's
sums. Key padding zeroes the padded keys' features. Cross-attention (``context``) is the
non-causal form over the context.

What linear attention cannot do, and refuses: a ``mask=`` (bool or float, it needs the (N, M)
scores), a sliding window, top-k, attention dropout, and a score-bias positional scheme (ALiBi).

Shape legend: B batch, N nodes, M context nodes, H query heads, Hkv key/value heads (GQA: g = H / Hkv
query heads share one), Dh head width, C chunk length, nc number of chunks, P memory nodes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tzoo.core._checks import check_nodes, check_padding_mask
from tzoo.core.attention import MultiHeadAttention
from tzoo.core.cache import KVCache, LayerCache, LinearAttentionState
from tzoo.core.positional import RelativePosition

__all__ = ["LinearAttention", "feature_map", "linear_attention", "linear_attention_recurrent"]

EPS = 1e-6  # keeps the normaliser away from 0 (fast-transformers uses the same)
CHUNK = 64  # nodes per chunk of the parallel form: the (C, C) blocks against the (Dh, Dh) state sums

State = tuple[Tensor, Tensor]  # (S (B, Hkv, Dh, Dh), z (B, Hkv, Dh))


def feature_map(x: Tensor) -> Tensor:
    """φ(x) = elu(x) + 1 > 0, elementwise."""
    return F.elu(x) + 1


def linear_attention(
    fq: Tensor,
    fk: Tensor,
    v: Tensor,
    *,
    causal: bool,
    rq: Tensor | None = None,
    rk: Tensor | None = None,
    state: State | None = None,
    memory: State | None = None,
    chunk: int = CHUNK,
) -> tuple[Tensor, State]:
    """The parallel form. fq = φ(q) (B, H, N, Dh); fk = φ(k) (B, Hkv, N, Dh) with padded keys zeroed;
    v (B, Hkv, N, Dh); rq, rk the numerator's (rotated) features (default fq, fk); ``state`` the sums
    of earlier nodes (a decoding cache); ``memory`` sums every query sees (memory nodes)
    -> out (B, H, N, Dh), state + this call's keys (without ``memory``).

    Computed in float32 at least (the running sums of a long sequence lose too much in half precision)."""
    dtype = v.dtype
    work = torch.promote_types(dtype, torch.float32)
    fq, fk, v = fq.to(work), fk.to(work), v.to(work)
    rq = fq if rq is None else rq.to(work)
    rk = fk if rk is None else rk.to(work)
    B, H, N, Dh = fq.shape
    Hkv = fk.shape[1]
    g = H // Hkv
    S0, z0 = state if state is not None else (fk.new_zeros(B, Hkv, Dh, Dh), fk.new_zeros(B, Hkv, Dh))
    Sm, zm = memory if memory is not None else (0.0, 0.0)
    if not causal:
        S = S0 + rk.transpose(-1, -2) @ v  # (B, Hkv, Dh, Dh)
        z = z0 + fk.sum(2)  # (B, Hkv, Dh)
        num = rq.view(B, Hkv, g, N, Dh) @ (S + Sm)[:, :, None]  # (B, Hkv, g, N, Dh)
        den = fq.view(B, Hkv, g, N, Dh) @ (z + zm)[:, :, None, :, None]  # (B, Hkv, g, N, 1)
        return (num / (den + EPS)).view(B, H, N, Dh).to(dtype), (S, z)

    C = min(chunk, N)
    nc = -(-N // C)
    pad = nc * C - N  # zero features after the last node: padded keys add nothing

    def chunks(x: Tensor, heads: int, groups: int) -> Tensor:  # (B, heads·groups, N, Dh) -> (B, heads, groups, nc, C, Dh)
        return F.pad(x, (0, 0, 0, pad)).view(B, heads, groups, nc, C, Dh)

    fq6, rq6 = chunks(fq, Hkv, g), chunks(rq, Hkv, g)
    fk6, rk6, v6 = chunks(fk, Hkv, 1), chunks(rk, Hkv, 1), chunks(v, Hkv, 1)
    S_chunk = rk6.transpose(-1, -2) @ v6  # (B, Hkv, 1, nc, Dh, Dh): each chunk's own sum
    z_chunk = fk6.sum(-2)  # (B, Hkv, 1, nc, Dh)
    S_incl, z_incl = S_chunk.cumsum(3), z_chunk.cumsum(3)
    # the sums of the chunks before each chunk (exclusive), plus the earlier state
    S_before = F.pad(S_incl[:, :, :, :-1], (0, 0, 0, 0, 1, 0)) + S0[:, :, None, None]  # (B, Hkv, 1, nc, Dh, Dh)
    z_before = F.pad(z_incl[:, :, :, :-1], (0, 0, 1, 0)) + z0[:, :, None, None]  # (B, Hkv, 1, nc, Dh)
    inside = torch.ones(C, C, dtype=torch.bool, device=fq.device).tril()  # (C, C): key j <= query i
    num = ((rq6 @ rk6.transpose(-1, -2)) * inside) @ v6 + rq6 @ (S_before + _expand(Sm, 2))  # (B, Hkv, g, nc, C, Dh)
    den = ((fq6 @ fk6.transpose(-1, -2)) * inside).sum(-1, keepdim=True) + fq6 @ (z_before + _expand(zm, 1))[..., None]
    out = (num / (den + EPS)).view(B, H, nc * C, Dh)[:, :, :N]
    return out.to(dtype), (S_incl[:, :, 0, -1] + S0, z_incl[:, :, 0, -1] + z0)


def _expand(x: Tensor | float, trailing: int) -> Tensor | float:
    """Memory sums (B or 1, Hkv, *trailing) -> (B or 1, Hkv, 1, 1, *trailing) against the chunked layout."""
    if isinstance(x, float):
        return x
    return x.view(*x.shape[:2], 1, 1, *x.shape[2:])


def linear_attention_recurrent(
    fq: Tensor,
    fk: Tensor,
    v: Tensor,
    *,
    rq: Tensor | None = None,
    rk: Tensor | None = None,
    state: State | None = None,
    memory: State | None = None,
) -> tuple[Tensor, State]:
    """The recurrent (causal) form, node by node: S += φ(k_t) v_tᵀ, z += φ(k_t), out_t = φ(q_t)ᵀ S / (φ(q_t)ᵀ z + eps).
    Same arguments and result as ``linear_attention(..., causal=True)``; used for one-node decoding steps."""
    dtype = v.dtype
    work = torch.promote_types(dtype, torch.float32)
    fq, fk, v = fq.to(work), fk.to(work), v.to(work)
    rq = fq if rq is None else rq.to(work)
    rk = fk if rk is None else rk.to(work)
    B, H, N, Dh = fq.shape
    Hkv = fk.shape[1]
    g = H // Hkv
    S, z = state if state is not None else (fk.new_zeros(B, Hkv, Dh, Dh), fk.new_zeros(B, Hkv, Dh))
    Sm, zm = memory if memory is not None else (0.0, 0.0)
    outs = []
    for t in range(N):
        S = S + rk[:, :, t, :, None] * v[:, :, t, None, :]  # (B, Hkv, Dh, Dh): the outer product φ(k_t) v_tᵀ
        z = z + fk[:, :, t]  # (B, Hkv, Dh)
        num = rq[:, :, t].view(B, Hkv, g, 1, Dh) @ (S + Sm)[:, :, None]  # (B, Hkv, g, 1, Dh)
        den = fq[:, :, t].view(B, Hkv, g, 1, Dh) @ (z + zm)[:, :, None, :, None]  # (B, Hkv, g, 1, 1)
        outs.append((num / (den + EPS)).view(B, H, 1, Dh))
    return torch.cat(outs, dim=2).to(dtype), (S, z)


class LinearAttention(MultiHeadAttention):
    """Multi-head linear attention: the projections, GQA, memory nodes and RoPE of
    ``MultiHeadAttention``, with φ(q)·φ(k) in place of softmax scores. (B, N, D) -> (B, N, D).

    Its decoding cache is a ``LinearAttentionState`` (``Decoder.make_cache`` gives one). No ``window``,
    ``top_k`` or attention dropout, and ``pos`` may rotate (RoPE) but not add a score bias (ALiBi).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        context_dim: int | None = None,
        bias: bool = True,
        num_memory: int = 0,
        pos: RelativePosition | None = None,
    ) -> None:
        if pos is not None and isinstance(pos, RelativePosition) and type(pos).bias is not RelativePosition.bias:
            raise ValueError(
                f"linear attention cannot use {type(pos).__name__}: it adds a bias to the attention scores, and "
                f"linear attention never forms scores (use RotaryEmbedding, or no relative position, or softmax attention)"
            )
        super().__init__(dim, num_heads, num_kv_heads=num_kv_heads, context_dim=context_dim, bias=bias, num_memory=num_memory, pos=pos)

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
        """x (B, N, D), context (B, M, Dc) or None for self-attention, key_padding_mask (B, M) (with a
        cache: (B, cached + N), of which the last N columns are used) -> (B, N, D)."""
        check_nodes(x, "x", self.dim, "this attention's width is dim")
        if mask is not None:
            raise ValueError(
                "linear attention cannot apply mask=: a bool mask removes single (query, key) pairs and a float "
                "mask adds to single scores, and linear attention never forms the (N, M) scores; pass "
                "key_padding_mask= for padding, or use softmax attention (attention='softmax') for this mask"
            )
        B, N, _ = x.shape
        H, Hkv, Dh = self.num_heads, self.num_kv_heads, self.head_dim
        if context is None:
            if self.qkv_proj is None:
                raise ValueError(
                    f"this LinearAttention was built with context_dim={self.context_dim} != dim={self.dim}, so it can only "
                    f"cross-attend: pass context= (B, M, {self.context_dim})"
                )
            if cache is not None and not isinstance(cache, LinearAttentionState):
                raise ValueError(
                    f"linear attention keeps a LinearAttentionState (fixed-size sums) between decoding steps, not a "
                    f"{type(cache).__name__}: make the caches with decoder.make_cache(max_len)"
                )
            if cache is not None and not is_causal:
                raise ValueError("a LinearAttentionState decodes causally: call with is_causal=True (each node sees the earlier ones)")
            offset = cache.length if cache is not None else 0
            qkv = self.qkv_proj(x).view(B, N, H + 2 * Hkv, Dh).transpose(1, 2)  # (B, H + 2Hkv, N, Dh)
            qk, v = qkv.split([H + Hkv, Hkv], dim=1)
            fqk = feature_map(qk)
            rqk = self.pos.rotate(fqk, offset) if self.pos is not None else fqk
            (fq, fk), (rq, rk) = fqk.split([H, Hkv], dim=1), rqk.split([H, Hkv], dim=1)
            if key_padding_mask is not None:
                check_padding_mask(key_padding_mask, "key_padding_mask", B, offset + N)
                keep = key_padding_mask[:, None, offset:, None].to(fk.dtype)  # (B, 1, N, 1)
                fk, rk = fk * keep, rk * keep
            causal = is_causal
        else:
            check_nodes(context, "context", self.context_dim, "this attention takes context of width context_dim", nodes="M")
            if context.shape[0] != B:
                raise ValueError(f"context has batch size {context.shape[0]} but x has {B}: give each sequence in x its own context")
            if is_causal:
                raise ValueError("is_causal=True applies to self-attention; in cross-attention a query sees all of the context")
            if cache is not None and not isinstance(cache, KVCache):
                raise ValueError("cross-attention keeps the context's keys/values in a KVCache() (decoder.make_cache())")
            wq, bq, wkv, bkv = self._cross_weights()
            q = F.linear(x, wq, bq).view(B, N, H, Dh).transpose(1, 2)  # (B, H, N, Dh)
            if isinstance(cache, KVCache) and cache.length:
                k, v = cache.cached()
            else:
                Mc = context.shape[1]
                k, v = F.linear(context, wkv, bkv).view(B, Mc, 2 * Hkv, Dh).transpose(1, 2).split([Hkv, Hkv], dim=1)  # (B, Hkv, M, Dh)
                if isinstance(cache, KVCache):
                    k, v = cache.append(k, v)
            fq, fk = feature_map(q), feature_map(k)
            rq, rk = fq, fk
            if key_padding_mask is not None:
                check_padding_mask(key_padding_mask, "key_padding_mask", B, k.shape[2])
                keep = key_padding_mask[:, None, :, None].to(fk.dtype)
                fk, rk = fk * keep, rk * keep
            causal, cache = False, None

        memory = self._memory_sums()
        state = (cache.kv, cache.k_sum) if isinstance(cache, LinearAttentionState) and cache.kv is not None else None
        if self.captured is not None:
            if state is not None:
                raise ValueError("capture_attention records whole sequences: run the model without a decoding cache while capturing")
            weights = _linear_weights(fq, fk, rq, rk, causal, self._memory_features()).detach()
            for record in self.captured:
                record.append(weights)
        if causal and N == 1 and state is not None:
            out, new_state = linear_attention_recurrent(fq, fk, v, rq=rq, rk=rk, state=state, memory=memory)
        else:
            out, new_state = linear_attention(fq, fk, v, causal=causal, rq=rq, rk=rk, state=state, memory=memory)
        if isinstance(cache, LinearAttentionState):
            cache.kv, cache.k_sum = new_state
            cache.length += N
        return self.out_proj(out.transpose(1, 2).reshape(B, N, self.dim))  # (B, N, D)

    def _memory_features(self) -> tuple[Tensor, Tensor] | None:
        """φ(memory keys) and memory values, (1, Hkv, P, Dh) each, or None."""
        if self.memory is None:
            return None
        return feature_map(self.memory[0])[None], self.memory[1][None]

    def _memory_sums(self) -> State | None:
        """The memory nodes' Σ φ(k_p) v_pᵀ (1, Hkv, Dh, Dh) and Σ φ(k_p) (1, Hkv, Dh), or None."""
        features = self._memory_features()
        if features is None:
            return None
        fk, v = features[0].float(), features[1].float()
        return fk.transpose(-1, -2) @ v, fk.sum(2)


def _linear_weights(fq: Tensor, fk: Tensor, rq: Tensor, rk: Tensor, causal: bool, memory: tuple[Tensor, Tensor] | None) -> Tensor:
    """The weights linear attention gives each key, (B, H, N, P + M): φ(q_i)·φ(k_j) (rotated in the
    numerator) over the normaliser; each row sums to 1 without RoPE. Quadratic: for inspection only."""
    B, H, N, _ = fq.shape
    g = H // fk.shape[1]
    fk, rk = fk.repeat_interleave(g, dim=1), rk.repeat_interleave(g, dim=1)  # (B, H, M, Dh)
    num, den = rq @ rk.transpose(-1, -2), fq @ fk.transpose(-1, -2)  # (B, H, N, M)
    if causal:
        seen = torch.ones(N, fk.shape[2], dtype=torch.bool, device=fq.device).tril()
        num, den = num * seen, den * seen
    if memory is not None:
        mk = memory[0].repeat_interleave(g, dim=1).to(fq.dtype)  # (1, H, P, Dh)
        # memory keys carry no position; the query is rotated in the numerator as against any key
        num, den = torch.cat([rq @ mk.transpose(-1, -2), num], dim=-1), torch.cat([fq @ mk.transpose(-1, -2), den], dim=-1)
    return num / (den.sum(-1, keepdim=True) + EPS)
