"""Turning model outputs into token ids: CTC greedy, attention greedy and attention beam search
(alone, or joint with the CTC head's prefix scores).

The attention decoders use the core KV cache by default: the decoder's self-attention keeps the
keys/values of the tokens so far and each step feeds one new token, and cross-attention computes
the encoder output's keys/values once. ``use_cache=False`` recomputes everything every step (the
reference both must agree with).

Shape legend: B batch, N audio nodes, T tokens, V vocabulary, K beam width, D width.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tzoo.core import capture_attention
from tzoo.tasks.speech.alignment import attention_median
from tzoo.tasks.speech.fusion import LanguageModelScorer
from tzoo.tasks.speech.lexicon import Lexicon
from tzoo.tasks.speech.model import SpeechTransformer
from tzoo.tasks.speech.tokenizer import BLANK, BOS, EOS

__all__ = ["CTCPrefixScorer", "beam_search", "ctc_greedy", "ctc_log_likelihood", "greedy", "max_tokens"]


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


def _attention_position(weights: Tensor) -> Tensor:
    """Cross-attention weights (B, H, T, N) -> the node each utterance's last query attended to
    (B,): the median of its attention averaged over the heads (robust to a head that looks
    elsewhere, unlike the argmax)."""
    return attention_median(weights[:, :, -1].float().mean(1))  # (B, N) -> (B,)


def _window_mask(position: Tensor, num_nodes: int, window: tuple[int, int], mask: Tensor) -> Tensor:
    """The nodes (B, N) each utterance's next query may attend: ``window[0]`` nodes before its last
    attention ``position`` (B,) to ``window[1]`` after, within its real nodes ``mask`` (B, N)."""
    nodes = torch.arange(num_nodes, device=mask.device)[None]  # (1, N)
    start, stop = (position - window[0])[:, None], (position + window[1])[:, None]  # (B, 1)
    return mask & (nodes >= start) & (nodes <= stop)


@torch.inference_mode()
def greedy(
    model: SpeechTransformer,
    encoded: Tensor,
    mask: Tensor,
    *,
    max_len: int,
    use_cache: bool = True,
    window: tuple[int, int] | None = None,
) -> list[list[int]]:
    """The encoder's output (B, N, D) and its mask (B, N) -> per utterance the argmax tokens until </s>.

    ``window`` = (back, forward) keeps the decoder's place: from the second token on, its
    cross-attention sees only the nodes from ``back`` before to ``forward`` after the median of
    the previous token's cross-attention in the last layer (averaged over its heads), so it can neither jump
    back to audio it has already written out (a looped phrase) nor far ahead (skipped words). This
    is the windowing of Bahdanau et al. 2016 ("End-to-end attention-based large vocabulary speech
    recognition", section 2.3), applied at decoding time only. The first token attends everywhere:
    where the speech starts is the decoder's to find. None: no window.
    """
    if window is not None and (len(window) != 2 or min(window) < 0 or window[0] + window[1] < 1):
        raise ValueError(f"window must be (back, forward) nodes, both >= 0 and not both 0 (or None), got {window!r}")
    B, N = encoded.shape[:2]
    padding = None if bool(mask.all()) else mask
    tokens = torch.full((B, max_len + 1), BOS, dtype=torch.long, device=encoded.device)  # (B, 1 + T)
    cache = model.decoder.make_cache(max_len + 1) if use_cache else None
    cross = model.decoder.make_cache() if use_cache else None
    done = torch.zeros(B, dtype=torch.bool, device=encoded.device)
    # where the last layer's cross-attention looked: the aligned one (the first layers' spread over the
    # utterance; Whisper's alignment heads are in its later layers too)
    names = [f"blocks.{len(model.decoder.blocks) - 1}.cross_attn"] if window is not None else []
    allowed = padding
    end = 1
    with capture_attention(model.decoder, names) as maps:
        for _ in range(max_len):
            step = tokens[:, end - 1 : end] if use_cache else tokens[:, :end]
            nxt = model.decode(step, encoded, allowed, cache=cache, cross_cache=cross)[:, -1].argmax(-1)  # (B,)
            nxt = nxt.masked_fill(done, EOS)
            tokens[:, end] = nxt
            end += 1
            done |= nxt == EOS
            if bool(done.all()):
                break
            if window is not None:
                position = _attention_position(maps[names[0]].pop())  # (B,)
                allowed = _window_mask(position, N, window, mask)
    return [_strip(row) for row in tokens[:, 1:end].tolist()]


def _reorder(caches: list[Any], rows: Tensor) -> None:
    """Keep the cached state of the chosen beam rows (in that order): keys/values, a rolling
    window's, or linear attention's fixed-size state (each cache class reorders itself)."""
    for cache in caches:
        cache.reorder(rows)


def _held_rows(cache: Any) -> int | None:
    """How many beam rows a layer's cache holds (keys/values, or linear attention's state)."""
    held = getattr(cache, "k", None)
    held = getattr(cache, "kv", None) if held is None else held
    return None if held is None else held.shape[0]


_UNDERFLOW = 1e-280  # a sum this small may have lost terms to underflow: recomputed in log space


class CTCPrefixScorer:
    """The CTC head's probability that the transcript *begins* with a prefix, for every one-token
    extension of the beam's hypotheses at once (the prefix score of hybrid CTC/attention decoding,
    Watanabe et al. 2017, "Hybrid CTC/Attention Architecture for End-to-End Speech Recognition").

    For a prefix g the state is r (2, N): log-probabilities that the first t+1 nodes' path collapses
    to exactly g, ending in a non-blank (r[0, t]) or a blank (r[1, t]). Extending g by a token c:

        phi_t   = r_b(g)_t + (r_n(g)_t if c != last(g) else 0)
        r_n(h)_t = (r_n(h)_{t-1} + phi_{t-1}) x_t(c),   r_b(h)_t = (r_b(h)_{t-1} + r_n(h)_{t-1}) x_t(blank)
        psi(h)  = sum_t phi_{t-1} x_t(c)     (P(the transcript starts with h); phi_{-1} = 1 for the empty g)

    phi depends on c only through "is c a repeat", so the scores of every token are one matrix
    product (K, N) x (N, V) of max-shifted probabilities; the few sums small enough to have lost
    terms to underflow are recomputed in log space. Both recurrences are first-order linear, so the
    kept extensions' states are solved for every node at once with a cumulative log-add-exp instead
    of a loop over the N nodes. Computed in float64 with NumPy on the CPU: a beam step's arrays are
    small (K x N), so the time is in dispatching each operation, which costs NumPy a fraction of
    what it costs torch (a step of 8 prefixes x 12 candidates x 106 nodes: 0.23 ms, against 0.43 ms
    for the same in torch ops and 0.36 ms for this matrix product in torch). The prefix score of
    g + </s> is P_ctc(g | audio), summed over every alignment.
    """

    def __init__(self, logits: Tensor) -> None:
        if logits.dim() != 2 or logits.shape[0] < 1:
            raise ValueError(f"CTCPrefixScorer takes one utterance's CTC logits (N, V) with N >= 1, got {tuple(logits.shape)}")
        logp = logits.detach().double().log_softmax(-1).cpu().numpy().T.copy()  # (V, N)
        self.device = logits.device
        self.logp = logp
        self.cum = logp.cumsum(-1)  # (V, N): log of x_0(c) ... x_t(c)
        self.cum_before = np.concatenate([np.zeros((len(logp), 1)), self.cum[:, :-1]], axis=-1)  # (V, N): ... x_{t-1}(c)
        self.peak = np.maximum(logp.max(-1), -1e300)  # (V,); a token masked to -inf everywhere stays -inf
        self.scaled = np.exp(logp - self.peak[:, None]).T.copy()  # (N, V): x_t(c) / max_t x_t(c)
        self.num_nodes, self.vocab_size = logp.shape[1], logp.shape[0]

    def initial(self) -> Tensor:
        """The state of the empty prefix (2, N): no token yet, so only blanks."""
        return torch.from_numpy(np.stack([np.full(self.num_nodes, -np.inf), self.cum[BLANK]]))

    def _scores(self, before: np.ndarray) -> np.ndarray:
        """(K, N) log-probabilities ``before[k, t]`` -> (K, V): log sum_t exp(before[k, t]) x_t(c) for every token c."""
        top = np.maximum(before.max(-1, keepdims=True), -1e300)  # (K, 1); a row of -inf stays -inf
        sums = np.exp(before - top) @ self.scaled  # (K, V)
        with np.errstate(divide="ignore"):
            out = np.log(sums) + top + self.peak
        rows, cols = np.nonzero(sums < _UNDERFLOW)
        if len(rows):
            out[rows, cols] = np.logaddexp.reduce(before[rows] + self.logp[cols], axis=-1)
        return out

    def extend(self, state: Tensor, last: Tensor, tokens: Tensor) -> tuple[Tensor, Callable[[Tensor, Tensor], Tensor]]:
        """States (K, 2, N) of K prefixes, their last tokens (K,) (-1 for the empty prefix) and C
        candidate tokens for each (K, C) -> the candidates' prefix scores (K, C), and a function
        ``states(rows, cols)`` giving the states (k, 2, N) of the k extensions the search keeps
        (prefix ``rows[i]`` extended by candidate ``cols[i]``), computed only for the kept few.

        For ``EOS`` the score is log P_ctc(prefix); ``BLANK`` and ``BOS`` are never emitted (-inf)."""
        rn, rb = (r.numpy() for r in state.cpu().unbind(1))  # (K, N)
        last_, tokens_ = last.cpu().numpy(), tokens.cpu().numpy()
        first = np.where(last_[:, None] < 0, 0.0, -np.inf)  # (K, 1): phi_{-1}
        before = np.concatenate([first, np.logaddexp(rn, rb)[:, :-1]], axis=-1)  # (K, N): phi_{t-1}, c not a repeat
        before_repeat = np.concatenate([first, rb[:, :-1]], axis=-1)  # c a repeat: a blank must come between
        psi = self._scores(before)  # (K, V)
        rows = np.nonzero(last_ >= 0)[0]
        if len(rows):
            psi[rows, last_[rows]] = np.logaddexp.reduce(before_repeat[rows] + self.logp[last_[rows]], axis=-1)
        psi[:, EOS] = np.logaddexp(rn[:, -1], rb[:, -1])
        psi[:, [BLANK, BOS]] = -np.inf
        cum_b = self.cum[BLANK]  # (N,)

        def states(keep: Tensor, cols: Tensor) -> Tensor:
            keep_, cols_ = keep.cpu().numpy(), cols.cpu().numpy()
            c = tokens_[keep_, cols_]  # (k,)
            u = np.where((c == last_[keep_])[:, None], before_repeat[keep_], before[keep_]) - self.cum_before[c]
            new_rn = self.cum[c] + np.logaddexp.accumulate(u, axis=-1)  # (k, N)
            w = np.concatenate([np.full((len(c), 1), -np.inf), new_rn[:, :-1] - cum_b[:-1]], axis=-1)
            new_rb = cum_b + np.logaddexp.accumulate(w, axis=-1)
            return torch.from_numpy(np.stack([new_rn, new_rb], axis=1))

        return torch.from_numpy(np.take_along_axis(psi, tokens_, axis=1)).to(self.device), states


def check_length_penalty(value: float, name: str = "length_penalty") -> float:
    """``value`` as a float, or ValueError naming ``name``: a finite number >= 0, not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0 (ended hypotheses ranked by score / (length + 1) ** it; 0: none), got {value!r}")
    return float(value)


@torch.inference_mode()
def beam_search(
    model: SpeechTransformer,
    encoded: Tensor,
    *,
    beam: int = 4,
    max_len: int = 200,
    use_cache: bool = True,
    ctc_logits: Tensor | None = None,
    ctc_weight: float = 0.0,
    pre_beam: int | None = None,
    lexicon: Lexicon | None = None,
    lm: LanguageModelScorer | None = None,
    lm_weight: float = 0.0,
    length_penalty: float = 0.0,
) -> list[int]:
    """One utterance's encoder output ``encoded`` (1, N, D) -> the most probable token sequence found by a beam
    of width ``beam``.

    Each step extends every live hypothesis by every token, keeps the ``beam`` best that do not end
    and sets aside those that do. The search stops when ``beam`` hypotheses have ended and none of the
    live ones can still beat the best ended one (scores only fall as a hypothesis grows), or at ``max_len``.

    Scores are the decoder's summed log-probabilities. With ``ctc_logits`` (N, V) and ``ctc_weight``
    w > 0 the search is joint: every hypothesis h, live or ended, scores
    (1 - w) * log P_attention(h) + w * log P_ctc(h...), the CTC head's prefix score
    (:class:`CTCPrefixScorer`; for an ended one, its full CTC likelihood). The CTC head must account
    for every audio node in order, so it vetoes the decoder's typical failures (words repeated or
    skipped, an early end) while they are still in the beam. Only the decoder's ``pre_beam`` best
    tokens per hypothesis (default 1.5 x ``beam``, as in ESPnet) are scored and may extend it; with
    w = 1 the decoder has no say and every token is scored.

    ``lexicon`` (:class:`~tzoo.tasks.speech.lexicon.Lexicon`) closes the vocabulary: a hypothesis
    may only be extended by a token that continues one of its words, and may only end or write a
    space after a complete word (the others score -inf before the pre-beam picks its tokens).

    ``lm`` (:class:`~tzoo.tasks.speech.fusion.LanguageModelScorer`) with ``lm_weight`` b > 0 is shallow
    fusion: every hypothesis' score gains b * log P_lm(h) (for an ended one, with the LM's end of
    line), and the pre-beam ranks tokens by (1 - w) * log P_attention + b * log P_lm of the next token.

    ``length_penalty`` a > 0 ranks the ended hypotheses by their score over (length + 1) ** a (the end
    token counted; Hugging Face's ``length_penalty``; GNMT's is ((5 + length) / 6) ** a; a = 1: the mean per token): summed
    log-probabilities favour an early end, the more the wider the beam. The search then stops when
    ``beam`` hypotheses have ended and the best of them, normalised, beats every live one normalised
    at its current length (a heuristic, as Hugging Face's: a live one may still overtake); 0: the
    sums as they are, and the exact stop above.
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1] (the CTC share of the hypothesis score), got {ctc_weight}")
    if encoded.dim() != 3 or encoded.shape[0] != 1:
        raise ValueError(f"beam_search takes one utterance's encoder output (1, N, D), got {tuple(encoded.shape)}")
    if pre_beam is not None and pre_beam < 1:
        raise ValueError(f"pre_beam must be >= 1 (tokens CTC-scored per hypothesis, or None for 1.5 x beam), got {pre_beam}")
    if not (math.isfinite(lm_weight) and lm_weight >= 0):
        raise ValueError(f"lm_weight must be a finite number >= 0 (the language model's share; 0: none), got {lm_weight}")
    check_length_penalty(length_penalty)

    def normalised(score: float, tokens: int) -> float:  # tokens: the hypothesis' own, without BOS or EOS
        return score / (tokens + 1) ** length_penalty if length_penalty else score
    device = encoded.device
    lm = lm if lm_weight > 0 else None
    if lm is not None:
        lm_next = lm.start(device)  # (K, V) the LM's log-probabilities of each live hypothesis' next token
        lm_sum = torch.zeros(1, device=device)  # (K,) its summed log-probabilities so far
    hyps = torch.full((1, 1), BOS, dtype=torch.long, device=device)  # (K, 1 + t)
    att = torch.zeros(1, device=device)  # (K,) summed decoder log-probabilities
    scorer = CTCPrefixScorer(ctc_logits) if ctc_logits is not None and ctc_weight > 0 else None
    if scorer is not None:
        state = scorer.initial()[None]  # (K, 2, N) CTC states of the live hypotheses
        if ctc_weight == 1.0:
            pre_beam = None
        elif pre_beam is None:
            pre_beam = max(1, int(1.5 * beam))
    scores = att  # (K,) what ranks the live hypotheses
    nodes = [0]  # the live hypotheses' lexicon trie nodes (0: the root)
    finished: list[tuple[float, list[int]]] = []
    cache = model.decoder.make_cache(max_len + 1) if use_cache else None
    cross = model.decoder.make_cache() if use_cache else None
    for _ in range(max_len):
        if use_cache:
            logits = model.decode(hyps[:, -1:], encoded.expand(len(hyps), -1, -1), None, cache=cache, cross_cache=cross)
        else:
            logits = model.decode(hyps, encoded.expand(len(hyps), -1, -1), None)
        logp = logits[:, -1].float().log_softmax(-1)  # (K, V)
        allowed = None if lexicon is None else lexicon.allowed(nodes).to(device)  # (K, V)
        if allowed is not None:
            logp = logp.masked_fill(~allowed, float("-inf"))
        V = logp.shape[-1]
        extended = att[:, None] + logp  # (K, V)
        fused = lm_weight * (lm_sum[:, None] + lm_next) if lm is not None else None  # (K, V)
        candidates: list[list[int]] | None = None  # column -> token (None: column = token)
        if scorer is None:
            joint = extended if fused is None else extended + fused
        else:
            # the CTC prefix score of the decoder's best few tokens per hypothesis (ESPnet's pre-beam)
            last = hyps[:, -1] if hyps.shape[1] > 1 else torch.full((len(hyps),), -1, device=device)
            # ranked as the score weighs them (the CTC head's share comes after)
            ranked = logp if fused is None else (1 - ctc_weight) * logp + lm_weight * lm_next
            tokens_c = ranked.topk(min(V, pre_beam or V), dim=-1).indices  # (K, C)
            psi, extension_states = scorer.extend(state, last, tokens_c)  # (K, C)
            joint = (1 - ctc_weight) * extended.gather(1, tokens_c) + ctc_weight * psi.to(extended)  # (K, C)
            if fused is not None:
                joint = joint + fused.gather(1, tokens_c)
            candidates = tokens_c.tolist()
            if allowed is not None:  # with w = 1, (1 - w) x -inf is NaN
                joint = joint.masked_fill(~allowed.gather(1, tokens_c), float("-inf"))
        C = joint.shape[1]
        top_scores, top_index = joint.view(-1).topk(min(2 * beam, joint.numel()))
        keep_rows, keep_cols, keep_tokens, keep_scores = [], [], [], []
        for score, index in zip(top_scores.tolist(), top_index.tolist()):
            if score == float("-inf"):
                break
            row, col = divmod(index, C)
            token = col if candidates is None else candidates[row][col]
            if token == EOS:
                ended = hyps[row, 1:].tolist()
                finished.append((normalised(score, len(ended)), ended))
            else:
                keep_rows.append(row), keep_cols.append(col), keep_tokens.append(token), keep_scores.append(score)
                if len(keep_rows) == beam:
                    break
        if not keep_rows:
            break
        rows, tokens = torch.tensor(keep_rows, device=device), torch.tensor(keep_tokens, device=device)
        hyps = torch.cat([hyps.index_select(0, rows), tokens[:, None]], dim=1)
        att = extended[rows, tokens]
        if lm is not None:
            lm_sum = lm_sum[rows] + lm_next[rows, tokens]
            lm_next = lm.advance(rows, tokens)
        if lexicon is not None:
            nodes = [lexicon.step(nodes[r], t) for r, t in zip(keep_rows, keep_tokens)]
        scores = torch.tensor(keep_scores, device=device)
        if scorer is not None:
            state = extension_states(rows, torch.tensor(keep_cols, device=device))  # (K, 2, N)
        if cache is not None and cross is not None:
            if keep_rows != list(range(len(keep_rows))) or _held_rows(cache[0]) != len(rows):
                _reorder(cache, rows)
            if cross[0].k is not None and cross[0].k.shape[0] != len(rows):  # the first step: 1 row -> K rows
                _reorder(cross, torch.zeros(len(rows), dtype=torch.long, device=device))
        if len(finished) >= beam and max(f[0] for f in finished) >= normalised(float(scores.max()), hyps.shape[1] - 1):
            break
    if not finished:  # nothing ended within max_len: the best live hypothesis
        finished = [(normalised(float(s), len(h) - 1), h[1:]) for s, h in zip(scores.tolist(), hyps.tolist())]
        if lexicon is not None:  # ... of those at a whole word, or cut back to its last whole word
            whole = [f for f, node in zip(finished, nodes) if lexicon.complete(node)]
            finished = whole or [(s, lexicon.whole_words(h)) for s, h in finished]
    return max(finished, key=lambda f: f[0])[1]
