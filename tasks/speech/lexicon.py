"""A closed vocabulary for beam search: hypotheses may only spell words of a lexicon.

Character models spell freely, so a near miss ("wather" for "water") costs characters even where
the words that can be spoken are known, as they are in the generated corpus's random word
sequences. Lexicon-constrained decoding is the classic remedy (the lexicon of Kaldi's decoding
graph, the word trie of flashlight's and torchaudio's CTC decoders): the beam only extends a
hypothesis by a character that continues one of the lexicon's words, and only lets it end, or
write a space, where a word is complete. The constraint holds for the joint CTC/attention beam of
``decoding.beam_search`` (``lexicon=``) and is an option of the speech module (``lexicon:``).

A word the lexicon lacks can then never be written: the real-sentence split's words of plays
training never read are out of vocabulary (``Lexicon.oov_rate`` says how many).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from tzoo.tasks.speech.tokenizer import EOS
from tzoo.tasks.text import CharTokenizer

__all__ = ["LEXICON_NAMES", "Lexicon", "lexicon_words"]

# named lexicons: the vocabularies of the generated corpus's texts (``corpus.py``)
LEXICON_NAMES = ("words", "training")


def lexicon_words(name: str) -> list[str]:
    """The words of a named lexicon: ``words``, the generated corpus's word list (``corpus.WORDS``)
    and digits (its random texts); ``training``, those and every word of every line of the plays
    training may speak lines of (every play but the test plays, ``sentences.py``)."""
    from tzoo.tasks.speech.corpus import WORDS
    from tzoo.tasks.speech.sentences import play_sentences

    if name not in LEXICON_NAMES:
        raise ValueError(f"lexicon name {name!r} is not one of {LEXICON_NAMES} (or give a word-list file)")
    words = list(WORDS) + list("0123456789")
    if name == "training":
        words += [w for line in play_sentences("train", 1, 10_000) for w in line.split()]
    return list(dict.fromkeys(words))


class Lexicon:
    """The words' characters as a trie (prefix tree), one node per distinct word prefix; node 0,
    the root, is the empty prefix (the start of a transcript, or just after a space).

    ``table[node, token]`` is the node a hypothesis moves to by writing ``token`` (-1: not
    allowed): a character that continues a word prefix; at a complete word also the space (back to
    the root) and ``</s>``. So an empty transcript, a double space, a leading or trailing space and
    any word outside the lexicon cannot be written."""

    def __init__(self, words: Iterable[str], tokenizer: CharTokenizer, *, source: str = "lexicon") -> None:
        """``source`` names where the words came from in error messages (a file, a named lexicon)."""
        words = list(dict.fromkeys(words))
        if not words:
            raise ValueError(f"{source} holds no words: a lexicon needs at least one")
        for word in words:
            _check_word(word, tokenizer, source)
        rows, complete = _trie([tokenizer.encode(word) for word in words])
        self.table = torch.full((len(rows), tokenizer.vocab_size), -1, dtype=torch.int32)
        for node, children in enumerate(rows):
            for token, child in children.items():
                self.table[node, token] = child
        ends = torch.tensor(complete)
        self.table[ends, EOS] = 0
        if " " in tokenizer.chars:
            self.table[ends, tokenizer.encode(" ")[0]] = 0
        self.words = frozenset(words)

    @classmethod
    def load(cls, source: str | os.PathLike[str], tokenizer: CharTokenizer) -> Lexicon:
        """A named lexicon (``LEXICON_NAMES``) or a text file of words (separated by white space, e.g.
        one per line) -> its ``Lexicon`` for ``tokenizer``'s characters."""
        if str(source) in LEXICON_NAMES:
            return cls(lexicon_words(str(source)), tokenizer, source=f"lexicon {str(source)!r}")
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"lexicon {str(source)!r} is neither a word-list file nor one of the names {LEXICON_NAMES}")
        return cls(path.read_text(encoding="utf-8").split(), tokenizer, source=f"lexicon file {str(path)!r}")

    def __len__(self) -> int:
        return len(self.words)

    def allowed(self, nodes: Sequence[int]) -> Tensor:
        """The trie nodes of K hypotheses -> (K, V) which tokens each may write next."""
        return self.table[list(nodes)] >= 0

    def complete(self, node: int) -> bool:
        """Whether ``node`` ends a word (a hypothesis there may end)."""
        return bool(self.table[node, EOS] >= 0)

    def step(self, node: int, token: int) -> int:
        """The node after writing ``token`` at ``node`` (an allowed token)."""
        return int(self.table[node, token])

    def whole_words(self, ids: list[int]) -> list[int]:
        """Token ids the lexicon allows, cut back to their last complete word (none: empty)."""
        node, kept = 0, 0
        for i, token in enumerate(ids):
            node = self.step(node, token)
            if self.complete(node):
                kept = i + 1
        return ids[:kept]

    def oov_rate(self, texts: Iterable[str]) -> float:
        """The share of the words of ``texts`` that the lexicon lacks (0 for no words)."""
        words = [w for text in texts for w in text.split()]
        return sum(w not in self.words for w in words) / len(words) if words else 0.0


def _check_word(word: str, tokenizer: CharTokenizer, source: str) -> None:
    if not word or any(c.isspace() for c in word):
        raise ValueError(f"{source}: word {word!r} is empty or holds white space (one word per entry)")
    bad = sorted({c for c in word if c not in tokenizer.chars})
    if bad:
        raise ValueError(f"{source}: word {word!r} has character(s) {bad} outside the model's alphabet {''.join(tokenizer.chars)!r}")


def _trie(words: list[list[int]]) -> tuple[list[dict[int, int]], list[int]]:
    """Token sequences -> the trie's nodes (each node's children: token -> node; node 0 the root)
    and the nodes where a word is complete."""
    rows: list[dict[int, int]] = [{}]
    complete = []
    for tokens in words:
        node = 0
        for token in tokens:
            if token not in rows[node]:
                rows[node][token] = len(rows)
                rows.append({})
            node = rows[node][token]
        complete.append(node)
    return rows, sorted(set(complete))
