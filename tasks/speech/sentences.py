"""Real sentences for the generated corpus: lines of the plays shipped in tzoo (``tasks/plays.py``),
normalised to the corpus alphabet.

The random word sequences of ``corpus.WORDS`` teach a decoder only that any word may follow any
word; lines of verse have grammar and a larger vocabulary. The plays are split by play, so no line
of a test play is ever spoken in training: ``TEST_PLAYS`` (one of each genre folder) give the
``test_sentences`` split, every other play the sentences training may hold.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

__all__ = ["TEST_PLAYS", "normalise_line", "play_sentences"]

# one play of each genre folder (comedies, histories, problems, roman, romances, tragedies)
TEST_PLAYS = ("twelfth-night", "richard-ii", "measure-for-measure", "julius-caesar", "the-tempest", "macbeth")

_NOT_SPOKEN = re.compile(r"[^a-z0-9' ]")


def normalise_line(line: str) -> str:
    """A line of a play -> lower-case words of the corpus alphabet: accents dropped (``é`` -> ``e``),
    hyphens and dashes split words, other punctuation removed, apostrophes kept inside words
    (``what's``) and dropped at their edges (``'tis`` -> ``tis``: the text is what is spoken)."""
    text = unicodedata.normalize("NFKD", line).encode("ascii", "ignore").decode().lower()
    text = _NOT_SPOKEN.sub(" ", text.replace("-", " "))
    words = (w.strip("'") for w in text.split())
    return " ".join(w for w in words if w)


def _lines(plays: list, min_words: int, max_words: int) -> dict[str, None]:
    seen: dict[str, None] = {}  # an ordered set
    for play in plays:
        for line in play.speech_lines():
            text = normalise_line(line)
            if min_words <= len(text.split()) <= max_words:
                seen.setdefault(text)
    return seen


@cache
def play_sentences(part: str, min_words: int, max_words: int) -> tuple[str, ...]:
    """The distinct normalised lines of ``min_words`` to ``max_words`` words of the test plays
    (``part="test"``) or of every other play (``part="train"``; without the lines a test play has
    too, word for word), in the plays' order."""
    from tzoo.tasks.plays import load_plays

    if part not in ("train", "test"):
        raise ValueError(f"part={part!r} is not one of ('train', 'test')")
    plays = load_plays()
    missing = [t for t in TEST_PLAYS if t not in plays]
    assert not missing, f"test plays {missing} are not among the shipped plays"
    test = _lines([p for title, p in plays.items() if title in TEST_PLAYS], min_words, max_words)
    if part == "test":
        return tuple(test)
    train = _lines([p for title, p in plays.items() if title not in TEST_PLAYS], min_words, max_words)
    return tuple(line for line in train if line not in test)
