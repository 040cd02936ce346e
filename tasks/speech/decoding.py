"""Turning model outputs into token ids: CTC greedy, attention greedy and attention beam search.

The attention decoders use the core KV cache by default: the decoder's self-attention keeps the
keys/values of the tokens so far and each step feeds one new token, and cross-attention computes
the encoder output's keys/values once. ``use_cache=False`` recomputes everything every step (the
reference both must agree with).

Shape legend: B batch, N audio nodes, T tokens, V vocabulary, K beam width, D width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tzoo.core import KVCache
from tzoo.tasks.speech.model import SpeechTransformer
from tzoo.tasks.speech.tokenizer import BLANK, BOS, EOS

__all__ = ["beam_search", "ctc_greedy", "ctc_log_likelihood", "greedy", "max_tokens"]


def ctc_greedy(logits: Tensor, mask: Tensor) -> list[list[int]]:
    """CTC logits (B, N, V), mask (B, N) -> per utterance: the best path with repeats merged and
    blanks removed."""
    best = logits.argmax(-1)  # (B, N)
    out = []
    for path, real in zip(best.tolist(), mask.sum(-1).tolist()):
        ids, previous = [], None
        for token in path[:real]:
            if token != previous and token != BLANK:
                ids.append(token)
            previous = token
        out.append(ids)
    return out


def ctc_log_likelihood(logits: Tensor, hypotheses: list[list[int]]) -> Tensor:
    """One utterance's CTC logits (N, V) and K token sequences -> (K,) log P_ctc(sequence | audio),
    summed over every alignment (-inf where no alignment fits in N nodes)."""
    K, N = len(hypotheses), logits.shape[0]
    log_probs = logits.float().log_softmax(-1)[:, None].expand(N, K, -1)  # (N, K, V)
    lengths = torch.tensor([len(h) for h in hypotheses], dtype=torch.long)
    targets = torch.zeros(K, max(1, int(lengths.max()) if K else 1), dtype=torch.long)
    for i, h in enumerate(hypotheses):
        targets[i, : len(h)] = torch.tensor(h, dtype=torch.long)
    nll = F.ctc_loss(log_probs, targets.to(logits.device), torch.full((K,), N, dtype=torch.long), lengths,
                     blank=BLANK, reduction="none", zero_infinity=False)  # fmt: skip
    return -nll


def max_tokens(num_nodes: int, limit: int) -> int:
    """How many tokens decoding may produce for N audio nodes (20 or 40 ms each): at most one character
    per node (25 or 50 per second, faster than anyone speaks) plus a margin, and never more than ``limit``."""
    return min(limit, num_nodes + 10)


def _strip(ids: list[int]) -> list[int]:
    return ids[: ids.index(EOS)] if EOS in ids else ids


@torch.inference_mode()
def greedy(model: SpeechTransformer, memory: Tensor, mask: Tensor, *, max_len: int, use_cache: bool = True) -> list[list[int]]:
    """Encoder output (B, N, D) and its mask (B, N) -> per utterance the argmax tokens until </s>."""
    B = memory.shape[0]
    padding = None if bool(mask.all()) else mask
    tokens = torch.full((B, max_len + 1), BOS, dtype=torch.long, device=memory.device)  # (B, 1 + T)
    cache = model.decoder.make_cache(max_len + 1) if use_cache else None
    cross = model.decoder.make_cache() if use_cache else None
    done = torch.zeros(B, dtype=torch.bool, device=memory.device)
    end = 1
    for _ in range(max_len):
        step = tokens[:, end - 1 : end] if use_cache else tokens[:, :end]
        nxt = model.decode(step, memory, padding, cache=cache, cross_cache=cross)[:, -1].argmax(-1)  # (B,)
        nxt = nxt.masked_fill(done, EOS)
        tokens[:, end] = nxt
        end += 1
        done |= nxt == EOS
        if bool(done.all()):
            break
    return [_strip(row) for row in tokens[:, 1:end].tolist()]


def _reorder(caches: list[KVCache], rows: Tensor) -> None:
    """Keep the cached keys/values of the chosen beam rows (in that order)."""
    for cache in caches:
        assert cache.k is not None and cache.v is not None
        cache.k, cache.v = cache.k.index_select(0, rows), cache.v.index_select(0, rows)


@torch.inference_mode()
def beam_search(
    model: SpeechTransformer,
    memory: Tensor,
    *,
    beam: int = 4,
    max_len: int = 200,
    use_cache: bool = True,
    ctc_logits: Tensor | None = None,
    ctc_weight: float = 0.0,
) -> list[int]:
    """One utterance's encoder output (1, N, D) -> the most probable token sequence found by a beam
    of width ``beam`` (scores: summed log-probabilities).

    Each step extends every live hypothesis by every token, keeps the ``beam`` best that do not end
    and sets aside those that do. The search stops when ``beam`` hypotheses have ended and none of the
    live ones can still beat the best ended one (log-probabilities only fall), or at ``max_len``.

    With ``ctc_logits`` (N, V) and ``ctc_weight`` w > 0 the ended hypotheses are ranked by
    (1 - w) * log P_attention + w * log P_ctc: the CTC head, which must account for every audio
    node, vetoes the decoder's typical failures (words repeated, or an early end).
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1] (the CTC share of the hypothesis score), got {ctc_weight}")
    if memory.dim() != 3 or memory.shape[0] != 1:
        raise ValueError(f"beam_search takes one utterance's encoder output (1, N, D), got {tuple(memory.shape)}")
    device = memory.device
    hyps = torch.full((1, 1), BOS, dtype=torch.long, device=device)  # (K, 1 + t)
    scores = torch.zeros(1, device=device)  # (K,)
    finished: list[tuple[float, list[int]]] = []
    cache = model.decoder.make_cache(max_len + 1) if use_cache else None
    cross = model.decoder.make_cache() if use_cache else None
    for _ in range(max_len):
        if use_cache:
            logits = model.decode(hyps[:, -1:], memory.expand(len(hyps), -1, -1), None, cache=cache, cross_cache=cross)
        else:
            logits = model.decode(hyps, memory.expand(len(hyps), -1, -1), None)
        logp = logits[:, -1].float().log_softmax(-1)  # (K, V)
        V = logp.shape[-1]
        candidates = (scores[:, None] + logp).view(-1)  # (K * V,)
        top_scores, top_index = candidates.topk(min(2 * beam, candidates.numel()))
        keep_rows, keep_tokens, keep_scores = [], [], []
        for score, index in zip(top_scores.tolist(), top_index.tolist()):
            row, token = divmod(index, V)
            if token == EOS:
                finished.append((score, hyps[row, 1:].tolist()))
            else:
                keep_rows.append(row), keep_tokens.append(token), keep_scores.append(score)
                if len(keep_rows) == beam:
                    break
        if not keep_rows:
            break
        rows = torch.tensor(keep_rows, device=device)
        hyps = torch.cat([hyps.index_select(0, rows), torch.tensor(keep_tokens, device=device)[:, None]], dim=1)
        scores = torch.tensor(keep_scores, device=device)
        if cache is not None and cross is not None:
            if keep_rows != list(range(len(keep_rows))) or cache[0].k is None or cache[0].k.shape[0] != len(rows):
                _reorder(cache, rows)
            if cross[0].k is not None and cross[0].k.shape[0] != len(rows):  # the first step: 1 row -> K rows
                _reorder(cross, torch.zeros(len(rows), dtype=torch.long, device=device))
        if len(finished) >= beam and max(f[0] for f in finished) >= float(scores.max()):
            break
    if not finished:  # nothing ended within max_len: the best live hypothesis
        finished = [(float(s), h[1:]) for s, h in zip(scores.tolist(), hyps.tolist())]
    if ctc_logits is not None and ctc_weight > 0:
        ctc = ctc_log_likelihood(ctc_logits, [f[1] for f in finished]).tolist()
        finished = [((1 - ctc_weight) * score + ctc_weight * c, ids) for (score, ids), c in zip(finished, ctc)]
    return max(finished, key=lambda f: f[0])[1]
