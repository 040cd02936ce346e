"""What a self-attention layer keeps between incremental decoding steps.

Three kinds, one per way of attending:

- ``KVCache``: every key/value so far (full attention; or the context of cross-attention).
  Memory grows with the sequence, up to ``max_len``.
- ``RollingKVCache``: the keys/values a sliding window can still see — the last ``window - 1``
  (the query's own key is the new one). Memory O(window) however long decoding runs.
- ``LinearAttentionState``: linear attention's running sums, a (Dh, Dh) matrix and a (Dh,) vector per
  key/value head. Memory O(1) in the sequence length.

Each has ``length`` (the nodes seen so far, i.e. the position of the next one), ``reset()`` and
``reorder(rows)`` (keep the batch rows ``rows``, in that order, as a beam search does).

Shape legend: B batch, Hkv key/value heads, N new nodes, M returned nodes, Dh head width.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tzoo.core._checks import is_whole

__all__ = ["KVCache", "LayerCache", "LinearAttentionState", "RollingKVCache"]


class KVCache:
    """Keys and values of one attention layer, kept between incremental decoding steps.

    Self-attention appends the new nodes' keys/values each call. Cross-attention stores the
    context's keys/values on the first call and reuses them afterwards. The buffer is allocated on
    the first append (batch, heads and dtype come from the keys) with room for ``max_len`` nodes.
    """

    def __init__(self, max_len: int | None = None) -> None:
        if max_len is not None and not (is_whole(max_len) and max_len >= 1):
            raise ValueError(f"KVCache max_len must be an integer >= 1 (or None for a context cache), got {max_len!r}")
        self.max_len = max_len
        self.length = 0
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add (B, Hkv, N, Dh) keys/values; return all cached ones, (B, Hkv, length, Dh)."""
        n = k.shape[2]
        if self.k is None:
            size = self.max_len if self.max_len is not None else n
            self.k = k.new_empty(k.shape[0], k.shape[1], size, k.shape[3])
            self.v = v.new_empty(v.shape[0], v.shape[1], size, v.shape[3])
        assert self.v is not None
        end = self.length + n
        if end > self.k.shape[2]:
            raise ValueError(
                f"the KV cache holds {self.k.shape[2]} nodes; appending {n} to the {self.length} "
                f"cached would overflow it (make it with a larger max_len, or reset it)"
            )
        # narrow() rather than slice indexing: this runs per layer per generated token
        self.k.narrow(2, self.length, n).copy_(k)
        self.v.narrow(2, self.length, n).copy_(v)
        self.length = end
        return self.k.narrow(2, 0, end), self.v.narrow(2, 0, end)

    def cached(self) -> tuple[Tensor, Tensor]:
        assert self.k is not None and self.v is not None
        return self.k.narrow(2, 0, self.length), self.v.narrow(2, 0, self.length)

    def reset(self) -> None:
        self.length = 0

    def reorder(self, rows: Tensor) -> None:
        """Keep batch rows ``rows`` (in that order), e.g. the hypotheses a beam search keeps. Only
        the filled positions are gathered: a beam reorders every step, and copying the buffer's
        free room too made the copies grow with ``max_len`` instead of with what was decoded."""
        if self.k is not None and self.v is not None:
            self.k, self.v = self._gather(self.k, rows), self._gather(self.v, rows)

    def _gather(self, buffer: Tensor, rows: Tensor) -> Tensor:
        out = buffer.new_empty(len(rows), *buffer.shape[1:])
        out.narrow(2, 0, self.length).copy_(buffer.narrow(2, 0, self.length).index_select(0, rows))
        return out


class RollingKVCache:
    """The keys/values a sliding-window self-attention layer can still use: the last ``window - 1``.

    A query at position p sees keys p - window + 1 .. p, so after a step only the newest
    ``window - 1`` keys matter. ``append`` returns them followed by the new ones — contiguous and in
    order, (B, Hkv, retained + N, Dh), keys of positions ``length - M + N .. length + N - 1`` — and
    keeps the newest ``window - 1`` for the next call.

    Storage is one buffer of 2·window nodes per tensor: new keys are written after the retained
    ones, and when the buffer is full the retained ``window - 1`` move to its front (one copy every
    ~window steps, so O(1) per step amortised; no reallocation, no per-step concatenation). Memory
    is O(window) however long decoding runs. A chunk longer than the buffer (a long prompt) is
    returned as it is and only its tail is kept.
    """

    def __init__(self, window: int) -> None:
        if not (is_whole(window) and window >= 1):
            raise ValueError(f"RollingKVCache window must be an integer >= 1 (the attention's window), got {window!r}")
        self.window = window
        self.length = 0
        self.k: Tensor | None = None  # (B, Hkv, 2 * window, Dh)
        self.v: Tensor | None = None
        self._start = 0  # the retained keys are k[:, :, _start:_end]
        self._end = 0

    @property
    def retained(self) -> int:
        return self._end - self._start

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add (B, Hkv, N, Dh) keys/values; return the retained ones followed by them, (B, Hkv, M, Dh)."""
        n, keep = k.shape[2], self.window - 1
        if self.k is None:
            self.k = k.new_empty(k.shape[0], k.shape[1], 2 * self.window, k.shape[3])
            self.v = v.new_empty(v.shape[0], v.shape[1], 2 * self.window, v.shape[3])
        assert self.v is not None
        self.length += n
        r, size = self.retained, self.k.shape[2]
        if r + n > size:  # a chunk longer than the buffer: hand back a concatenation, keep its tail
            k_all = torch.cat([self.k.narrow(2, self._start, r), k], dim=2)
            v_all = torch.cat([self.v.narrow(2, self._start, r), v], dim=2)
            self._keep(k_all, v_all, keep)
            return k_all, v_all
        if self._end + n > size:  # no room after the retained keys: move them to the front
            if self._start < r:  # overlapping source and destination
                self.k[:, :, :r] = self.k[:, :, self._start : self._end].clone()
                self.v[:, :, :r] = self.v[:, :, self._start : self._end].clone()
            else:
                self.k.narrow(2, 0, r).copy_(self.k.narrow(2, self._start, r))
                self.v.narrow(2, 0, r).copy_(self.v.narrow(2, self._start, r))
            self._start, self._end = 0, r
        self.k.narrow(2, self._end, n).copy_(k)
        self.v.narrow(2, self._end, n).copy_(v)
        first = self._start
        self._end += n
        self._start = self._end - min(keep, r + n)
        return self.k.narrow(2, first, r + n), self.v.narrow(2, first, r + n)

    def _keep(self, k_all: Tensor, v_all: Tensor, keep: int) -> None:
        assert self.k is not None and self.v is not None
        m = min(keep, k_all.shape[2])
        self.k.narrow(2, 0, m).copy_(k_all.narrow(2, k_all.shape[2] - m, m))
        self.v.narrow(2, 0, m).copy_(v_all.narrow(2, v_all.shape[2] - m, m))
        self._start, self._end = 0, m

    def reset(self) -> None:
        self.length = self._start = self._end = 0

    def reorder(self, rows: Tensor) -> None:
        if self.k is not None and self.v is not None:
            self.k, self.v = self.k.index_select(0, rows), self.v.index_select(0, rows)


class LinearAttentionState:
    """Linear attention's decoding state: ``kv`` = Σ φ(k) vᵀ, (B, Hkv, Dh, Dh), and ``k_sum`` = Σ φ(k),
    (B, Hkv, Dh), over the nodes seen so far (with RoPE ``kv`` sums the rotated φ(k)). Fixed size:
    O(1) memory per generated node. Filled by ``LinearAttention``; ``None`` until its first call."""

    def __init__(self) -> None:
        self.length = 0
        self.kv: Tensor | None = None
        self.k_sum: Tensor | None = None

    def reset(self) -> None:
        self.length = 0
        self.kv = self.k_sum = None

    def reorder(self, rows: Tensor) -> None:
        if self.kv is not None and self.k_sum is not None:
            self.kv, self.k_sum = self.kv.index_select(0, rows), self.k_sum.index_select(0, rows)


LayerCache = KVCache | RollingKVCache | LinearAttentionState
