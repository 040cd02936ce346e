"""GPT: token nodes -> causal core decoder -> next-token logits, and a sampler using the KV cache.

Shape legend: B batch, N tokens, V vocabulary, D width.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tzoo.core import Decoder, LayerCache, LearnedPositionalEmbedding, TransformerConfig, init_gpt2

__all__ = ["GPT", "GPTConfig", "filter_logits", "sample_next"]


def _gpt_transformer() -> TransformerConfig:
    return TransformerConfig(dim=384, depth=6, num_heads=6, bias=False)


@dataclass
class GPTConfig:
    """The language model: its own fields and the core stack's ``TransformerConfig``.

    ``vocab_size`` is linked from the data by the CLI. ``block_size`` is the most positions the
    model takes. ``position`` is the absolute scheme added to token embeddings (``learned``, or
    ``none`` when the stack's relative ``transformer.position`` is ``rope`` / ``alibi``).

    ``tie_embeddings``: the output head shares the token embedding's weights (GPT-2); False gives
    the head its own, initialised to zero with ``zero_init_head`` (every logit 0 at the start: the
    uniform prediction). ``logit_softcap``: logits become cap · tanh(logits / cap), bounded by
    ±cap and unchanged near 0 (Gemma 2; None: no cap)."""

    vocab_size: int | None = None
    block_size: int = 256
    position: Literal["learned", "none"] = "learned"
    transformer: TransformerConfig = field(default_factory=_gpt_transformer)
    tie_embeddings: bool = True
    zero_init_head: bool = False
    logit_softcap: float | None = None

    def __post_init__(self) -> None:
        if self.vocab_size is not None and self.vocab_size < 1:
            raise ValueError(f"net.vocab_size must be >= 1, got {self.vocab_size}")
        if self.block_size < 1:
            raise ValueError(f"net.block_size must be >= 1, got {self.block_size}")
        if self.position not in ("learned", "none"):
            raise ValueError(
                f"net.position={self.position!r} is not one of ('learned', 'none'); relative positions are "
                f"net.transformer.position ('rope', 'alibi')"
            )
        for name in ("tie_embeddings", "zero_init_head"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"net.{name} must be True or False, got {getattr(self, name)!r}")
        if self.zero_init_head and self.tie_embeddings:
            raise ValueError(
                "net.zero_init_head=True conflicts with net.tie_embeddings=True: a head tied to the token embedding "
                "would zero the embedding too; set net.tie_embeddings=false for a zero-initialised head of its own"
            )
        cap = self.logit_softcap
        if cap is not None and not (isinstance(cap, (int, float)) and math.isfinite(cap) and cap > 0):
            raise ValueError(f"net.logit_softcap must be a finite number > 0 (e.g. 15 or 30) or None for no cap, got {cap!r}")


class GPT(nn.Module):
    """Token embedding (+ learned positions, or RoPE / ALiBi inside attention) -> causal decoder
    blocks -> final norm -> LM head (tied to the embedding, or its own) -> optional soft cap."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError(
                "net.vocab_size is not set: the tzoo CLI links it from the data; when building the model "
                "yourself pass GPTConfig(vocab_size=<the tokenizer's vocab_size>, ...)"
            )
        self.cfg = cfg
        t = cfg.transformer
        self.vocab_size, self.block_size = cfg.vocab_size, cfg.block_size
        self.embed = nn.Embedding(cfg.vocab_size, t.dim)
        self.pos = LearnedPositionalEmbedding(cfg.block_size, t.dim) if cfg.position == "learned" else None
        self.drop = nn.Dropout(t.dropout) if t.dropout else None
        self.decoder = Decoder(t)
        self.head = nn.Linear(t.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight  # tied (Press & Wolf 2017)
        self.logit_softcap = cfg.logit_softcap
        init_gpt2(self, t.depth)
        if cfg.zero_init_head:
            nn.init.zeros_(self.head.weight)
        self._compiled_forward: Callable[..., Tensor] | None = None  # made by compiled_forward(); not state

    def num_params(self, *, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - (self.pos.weight.numel() if non_embedding and self.pos is not None else 0)

    @property
    def unbounded(self) -> bool:
        """Whether the model reads text of any length the same way: no learned position table
        (``position='none'``; RoPE / ALiBi / nothing inside attention) and self-attention that sees a
        bounded stretch (``window``) or a fixed-size summary (linear attention) of the past. Its
        decoding caches hold O(window) / O(1) per layer and generation never starts over."""
        t = self.cfg.transformer
        return self.pos is None and (t.window is not None or t.attention == "linear")

    def forward(self, idx: Tensor, *, cache: list[LayerCache] | None = None) -> Tensor:
        """idx (B, N) token ids following the ``cache``'s nodes -> logits (B, N, V). Positions past
        ``block_size`` only for an ``unbounded`` model."""
        offset = cache[0].length if cache is not None else 0
        if offset + idx.shape[1] > self.block_size and not self.unbounded:
            raise ValueError(
                f"{idx.shape[1]} tokens at position {offset} exceed the model's block_size={self.block_size} "
                f"(its maximum positions); crop the input to the last {self.block_size - offset} tokens"
            )
        x = self.embed(idx)  # (B, N, D)
        if self.pos is not None:
            x = self.pos(x, offset=offset)
        if self.drop is not None:
            x = self.drop(x)
        x = self.decoder(x, cache=cache)
        logits = self.head(x)  # (B, N, V)
        if self.logit_softcap is not None:
            logits = self.logit_softcap * torch.tanh(logits / self.logit_softcap)
        return logits

    def compiled_forward(self) -> Callable[..., Tensor]:
        """``forward`` through ``torch.compile`` with dynamic shapes, made once per model."""
        if self._compiled_forward is None:
            self._compiled_forward = torch.compile(self.forward, dynamic=True)
        return self._compiled_forward

    @torch.inference_mode()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        stop: int | None = None,
        generator: torch.Generator | None = None,
        compile: bool = False,
    ) -> Tensor:
        """Extend idx (B, N0) by up to ``max_new_tokens`` -> (B, N0 + new).

        ``use_cache=False`` recomputes the last ``block_size`` tokens every step (the reference).
        With the cache each step feeds one token; both give the same tokens while the sequence fits
        in ``block_size``. Past it, the cached sampler re-reads the last half block into a fresh
        cache and goes on from there (the reference slides by one token each step instead) — except
        for an ``unbounded`` model (relative positions and a window or linear attention): its rolling
        KV caches / linear-attention states just go on, O(window) / O(1) memory per layer however
        long the text. A windowed one then gives the reference's tokens whenever block_size >=
        depth · (window - 1) + 1 (the last node's receptive field through the layers fits in the block).
        Generation ends early once every row has produced ``stop``; later tokens of rows that
        stopped earlier are ``stop`` too. ``temperature=0`` is greedy.

        ``compile=True`` runs the forward passes through ``torch.compile`` (dynamic shapes, so one
        compilation serves every cache length and window): a one-token step runs inductor's generated
        kernels instead of several hundred eager operator calls. Compiling takes tens of seconds once per model and
        process; it pays off for long generations. Same tokens as without it.
        """
        _check_sampling(temperature, top_k, top_p)
        if idx.dim() != 2 or idx.shape[1] < 1:
            raise ValueError(f"idx must be (B, N) token ids with N >= 1, got shape {tuple(idx.shape)}")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a whole number >= 0, got {max_new_tokens!r}")
        was_training = self.training
        self.eval()
        B, n0 = idx.shape
        out = torch.empty(B, n0 + max_new_tokens, dtype=idx.dtype, device=idx.device)  # (B, N0 + new)
        out[:, :n0] = idx
        end = n0
        done = torch.zeros(B, dtype=torch.bool, device=idx.device)
        forward = self.compiled_forward() if compile else self
        cache = self.decoder.make_cache(self.block_size) if use_cache else None
        logits = forward(idx[:, -self.block_size :], cache=cache)[:, -1] if cache is not None else None
        for step in range(max_new_tokens):
            if cache is None:
                logits = forward(out[:, max(0, end - self.block_size) : end])[:, -1]  # (B, V)
            assert logits is not None
            nxt = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)  # (B, 1)
            if stop is not None:
                nxt = nxt.masked_fill(done[:, None], stop)
                done |= nxt[:, 0] == stop
            out[:, end : end + 1] = nxt
            end += 1
            if (stop is not None and bool(done.all())) or step == max_new_tokens - 1:
                break
            if cache is not None:
                if cache[0].length >= self.block_size and not self.unbounded:
                    for c in cache:
                        c.reset()
                    keep = self.block_size // 2 or 1
                    logits = forward(out[:, end - keep : end], cache=cache)[:, -1]
                else:
                    logits = forward(nxt, cache=cache)[:, -1]
        self.train(was_training)
        return out[:, :end]


def _check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not (math.isfinite(temperature) and temperature >= 0):  # NaN would sample from NaN probabilities
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None for no limit), got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (or None for no limit), got {top_p}")


def filter_logits(logits: Tensor, *, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set every logit outside the top-k / the top-p nucleus to -inf. logits (B, V) -> (B, V)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = F.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already reach top_p (the first always stays)
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One token per row from logits (B, V) -> (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = filter_logits(logits.float() / temperature, top_k=top_k, top_p=top_p)
    probs = F.softmax(logits, dim=-1)
    # argmax of p_i / E_i with E_i ~ Exp(1) draws i with probability p_i (the exponential race):
    # the same distribution as torch.multinomial, at a fraction of its per-call cost
    race = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / race).argmax(dim=-1, keepdim=True)
