"""Shallow fusion: a character language model's opinion in the speech beam.

The joint CTC/attention beam knows text only through the decoder, which heard 20,000 transcripts;
a language model trained on far more text knows which spellings are words and which words follow
one another. Shallow fusion (Gulcehre et al. 2015; Kannan et al. 2018, "An analysis of incorporating
an external language model into a sequence-to-sequence model") adds its log-probability, weighted,
to every hypothesis' score: ``score(h) += lm_weight * log P_lm(h)``. The language model is a tzoo
``lm`` task checkpoint (a character GPT, ``configs/lm/speech_fusion.yaml``) trained on text the acoustic
model may read: ``training_text`` writes it (the corpus's random word sequences and every line of
the training plays, never a line of a test play).

The speech vocabulary's characters map to the LM's; ``</s>`` is the LM's end of line, and every
transcript starts after one. Each beam step feeds the kept hypotheses' new characters through the
LM's KV cache (reordered with the beam).

Shape legend: K beam rows, V speech vocabulary, W LM vocabulary.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tzoo.tasks.files import atomic_write
from tzoo.tasks.speech.tokenizer import BLANK, BOS, EOS
from tzoo.tasks.text import CharTokenizer

__all__ = ["LanguageModelScorer", "training_text"]

NEWLINE = "\n"


class LanguageModelScorer:
    """A character GPT (``tzoo.tasks.lm.model.GPT``) and its tokenizer scoring the speech beam's
    next characters: ``start()`` gives the log-probabilities (1, V) of each speech token opening a
    transcript, ``advance(rows, tokens)`` keeps the beam rows ``rows`` (K,) extended by ``tokens``
    (K,) and gives theirs (K, V). ``<blank>`` and ``<s>`` score -inf (never written); ``</s>`` scores
    the LM's end of line. Past the LM's ``block_size`` it reads the last half block afresh."""

    def __init__(self, model: Any, lm_tokenizer: CharTokenizer, speech_tokenizer: CharTokenizer) -> None:
        known = set(lm_tokenizer.chars)
        missing = [c for c in speech_tokenizer.chars if c not in known]
        if missing or NEWLINE not in known:
            lacks = missing + ([NEWLINE] if NEWLINE not in known else [])
            raise ValueError(
                f"the language model's vocabulary lacks {lacks!r}: it must hold every character of the speech "
                f"alphabet {''.join(speech_tokenizer.chars)!r} and the end of line '\\n' (train it on text "
                f"written by tzoo.tasks.speech.fusion.training_text)"
            )
        self.model = model.eval()
        self.block_size = int(model.block_size)
        index = [-1] * speech_tokenizer.vocab_size  # speech id -> LM id (-1: never written)
        for char in speech_tokenizer.chars:
            index[speech_tokenizer.encode(char)[0]] = lm_tokenizer.encode(char)[0]
        index[EOS] = lm_tokenizer.encode(NEWLINE)[0]
        self.index = torch.tensor(index)
        self.gather = self.index.clamp_min(0)  # the LM id each speech id reads (<blank>, <s>: set to -inf after)
        self.newline = index[EOS]
        self.history: Tensor | None = None  # (K, t) LM ids fed so far
        self.cache: list[Any] | None = None

    def _scores(self, logits: Tensor) -> Tensor:
        """LM logits (K, W) -> speech-vocabulary log-probabilities (K, V)."""
        out = logits.float().log_softmax(-1)[:, self.gather]
        out[:, [BLANK, BOS]] = float("-inf")
        return out

    @torch.inference_mode()
    def start(self, device: torch.device | str = "cpu") -> Tensor:
        """Forget every hypothesis; the scores (1, V) of a transcript's first token. The LM and its
        tables move to ``device`` (the encoder output's) here, once per utterance."""
        self.model.to(device)
        self.index, self.gather = self.index.to(device), self.gather.to(device)
        self.history = torch.full((1, 1), self.newline, dtype=torch.long, device=device)
        self.cache = self.model.decoder.make_cache(self.block_size)
        return self._scores(self.model(self.history, cache=self.cache)[:, -1])

    @torch.inference_mode()
    def advance(self, rows: Tensor, tokens: Tensor) -> Tensor:
        """Keep the rows ``rows`` (K,) of the last call, each extended by a speech token of
        ``tokens`` (K,) (not ``</s>``) -> the next token's scores (K, V)."""
        if self.history is None or self.cache is None:
            raise RuntimeError("LanguageModelScorer.advance before start()")
        new = self.index[tokens]  # (K,)
        if bool(((new < 0) | (tokens == EOS)).any()):
            raise ValueError(f"advance takes written characters, not <blank>, <s> or </s>: got {tokens.tolist()}")
        held = self.history.shape[0]  # rows the cache holds
        self.history = torch.cat([self.history.index_select(0, rows), new[:, None]], dim=1)
        if self.cache[0].length >= self.block_size:  # full: read the last half block into a fresh cache
            self.cache = self.model.decoder.make_cache(self.block_size)
            keep = max(1, self.block_size // 2)
            return self._scores(self.model(self.history[:, -keep:], cache=self.cache)[:, -1])
        if held != len(rows) or not torch.equal(rows, torch.arange(len(rows), device=rows.device)):
            for layer in self.cache:  # the kept rows, in their order (the first step: one row -> K)
                layer.reorder(rows)
        return self._scores(self.model(new[:, None], cache=self.cache)[:, -1])

    @classmethod
    def load(cls, path: str | os.PathLike[str], speech_tokenizer: CharTokenizer, device: str | torch.device = "cpu") -> LanguageModelScorer:
        """A tzoo ``lm`` task checkpoint (its GPT and character tokenizer) as a scorer."""
        from tzoo.tasks.loading import load_module

        module = load_module(path, task="lm", device=device)
        if not isinstance(module.tokenizer, CharTokenizer):
            raise ValueError(
                f"language model {str(path)!r} has a {type(module.tokenizer).__name__}; shallow fusion needs a "
                f"character tokenizer (data.init_args.tokenizer: char)"
            )
        return cls(module.model, module.tokenizer, speech_tokenizer)


def training_text(path: str | os.PathLike[str], *, random_lines: int = 100_000, max_words: int = 12,
                  digit_fraction: float = 0.25, seed: int = 0) -> Path:  # fmt: skip
    """Write the language model's text to ``path``: every line (of any length) of the plays training
    may read (``sentences.play_sentences("train", ...)``: no line of a test play) and ``random_lines``
    random word sequences as the corpus draws them (``corpus.random_text``), one per line, shuffled
    (the LM task validates on the file's last part, which is then a sample of both)."""
    from tzoo.tasks.speech.corpus import random_text
    from tzoo.tasks.speech.sentences import play_sentences

    if random_lines < 0:
        raise ValueError(f"random_lines must be >= 0, got {random_lines}")
    rng = np.random.default_rng(seed)
    lines = list(play_sentences("train", 1, 10_000))
    lines += [random_text(rng, max_words=max_words, digit_fraction=digit_fraction) for _ in range(random_lines)]
    order = rng.permutation(len(lines))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w", encoding="utf-8") as f:  # never a half-written file under its name
        f.write("".join(lines[i] + NEWLINE for i in order))
    return out
