"""Labelled text: Shakespeare passages labelled by the play's genre (offline), labelled files
(CSV / TSV / JSON lines with a text and a label), and the texts ``tzoo predict`` classifies.

**Shakespeare's genres.** The 38 plays that the LM reads (shipped inside tzoo: ``tzoo.tasks.plays``)
come in six genre folders: comedies (8), histories (11), tragedies (6), problem plays (5), Roman
plays (4) and romances (4). ``genres="six"`` labels a passage with its play's folder;
``genres="three"`` (the default) merges them into the First Folio's three kinds: comedy (comedies,
problem plays, romances), history, tragedy (tragedies, Roman plays). A passage is ``lines``
consecutive lines of speech of one play (speaker names and stage directions dropped, as the LM's
reading drops them; the last lines of a play that do not fill a passage are left out).

**The split is by play, fixed** (``PLAY_SPLIT``): no play has passages in two splits, and each of the
six folders has a play in each split, so both labellings have every genre in every split. Plays
that share characters stay in one split: both tetralogies of histories (Richard II, Henry IV 1-2,
Henry V; Henry VI 1-3, Richard III) and Julius Caesar with Antony and Cleopatra are training plays.

=========  ====================================================================================
split      plays
=========  ====================================================================================
val (6)    twelfth-night, henry-viii, othello, titus-andronicus, measure-for-measure, cymbeline
test (7)   as-you-like-it, king-john, edward-iii, macbeth, coriolanus, all-s-well-that-ends-well,
           a-winter-s-tale
train (25) the other 25 plays
=========  ====================================================================================

**Labelled files.** ``.csv``, ``.tsv`` (tab-separated, no quoting: a quote is part of the text) or
``.jsonl`` (one JSON object per line), with a text column and a label column (``text`` and
``label`` unless named otherwise). Labels are read as strings (``1`` and ``"1"`` are one label).
An empty text, an empty label or a missing column is an error naming the file and the line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tzoo.tasks.plays import load_plays

__all__ = [
    "GENRES",
    "LABEL_SUFFIXES",
    "PLAY_SPLIT",
    "Example",
    "genre_passages",
    "genre_train_text",
    "play_genres",
    "play_lines",
    "read_labelled",
    "read_predict_texts",
]

# a play's genre folder -> label, for each labelling
GENRES: dict[str, dict[str, str]] = {
    "three": {
        "comedies": "comedy", "problems": "comedy", "romances": "comedy",
        "histories": "history",
        "tragedies": "tragedy", "roman": "tragedy",
    },
    "six": {
        "comedies": "comedy", "histories": "history", "tragedies": "tragedy",
        "problems": "problem", "roman": "roman", "romances": "romance",
    },
}  # fmt: skip

# play title -> split; every other play is a training play
PLAY_SPLIT: dict[str, str] = {
    **dict.fromkeys(
        ["twelfth-night", "henry-viii", "othello", "titus-andronicus", "measure-for-measure", "cymbeline"], "val"
    ),
    **dict.fromkeys(
        ["as-you-like-it", "king-john", "edward-iii", "macbeth", "coriolanus", "all-s-well-that-ends-well", "a-winter-s-tale"],
        "test",
    ),
}
SPLITS = ("train", "val", "test")
LABEL_SUFFIXES = (".csv", ".tsv", ".jsonl")


@dataclass(frozen=True)
class Example:
    """One labelled text; ``source`` says where it came from (a play, or ``file:line``)."""

    text: str
    label: str
    source: str


# --- Shakespeare's plays by genre ---------------------------------------------------------------


@cache
def play_genres() -> dict[str, str]:
    """play title (e.g. ``king-lear``) -> its genre folder, in the shipped order."""
    plays = {title: play.genre for title, play in load_plays().items()}
    unknown = sorted(set(plays.values()) - set(GENRES["six"]))
    missing = sorted(set(PLAY_SPLIT) - set(plays))
    if len(plays) != 38 or unknown or missing:
        raise FileNotFoundError(
            f"the shipped plays are not the 38 plays in the six genre folders this task knows "
            f"({len(plays)} plays, unknown folders {unknown}, missing plays {missing}): is tzoo's plays.json.xz complete?"
        )
    return plays


@cache
def play_lines(title: str) -> tuple[str, ...]:
    """The lines of speech of one play, in order (the LM's reading of it, without the speaker lines)."""
    plays = load_plays()
    if title not in plays:
        raise ValueError(f"no play {title!r}; plays: {', '.join(sorted(plays))}")
    return plays[title].speech_lines()


def split_plays(split: str) -> list[str]:
    """The plays of one split, sorted."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return [title for title in play_genres() if PLAY_SPLIT.get(title, "train") == split]


def genre_passages(split: str, *, lines: int = 4, genres: str = "three") -> list[Example]:
    """The passages of ``lines`` consecutive lines of every play of ``split``, labelled by genre."""
    if genres not in GENRES:
        raise ValueError(f"genres={genres!r} is not one of {tuple(GENRES)}")
    if not (isinstance(lines, int) and lines >= 1):
        raise ValueError(f"lines (per passage) must be an integer >= 1, got {lines!r}")
    out = []
    for title in split_plays(split):
        label = GENRES[genres][play_genres()[title]]
        speech = play_lines(title)
        for start in range(0, len(speech) - lines + 1, lines):
            out.append(Example("\n".join(speech[start : start + lines]), label, title))
    return out


def genre_train_text() -> str:
    """The training plays' lines of speech, a play per paragraph: the text the genre data's tokenizer
    is built from, and the ``shakespeare-train-plays`` corpus of MLM pretraining (so the two build the
    same tokenizer)."""
    return "\n\n".join("\n".join(play_lines(title)) for title in split_plays("train"))


# --- labelled files -----------------------------------------------------------------------------


def _read_text_file(path: Path, what: str) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{what} {str(path)!r} is not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start}; convert it to UTF-8"
        ) from None


def read_labelled(path: str | Path, *, text_column: str = "text", label_column: str = "label", name: str | None = None) -> list[Example]:
    """The examples of a labelled ``.csv`` / ``.tsv`` / ``.jsonl`` file, in file order. ``name``: how
    error messages call the file (default its path)."""
    path = Path(path)
    shown = name or str(path)
    suffix = path.suffix.lower()
    if suffix not in LABEL_SUFFIXES:
        raise ValueError(
            f"labelled file {shown!r} has suffix {path.suffix!r}; a labelled file is one of {', '.join(LABEL_SUFFIXES)} "
            f"(comma- or tab-separated values, or JSON lines) with columns {text_column!r} and {label_column!r}"
        )
    text = _read_text_file(path, "labelled file")
    rows = _json_rows(text, shown) if suffix == ".jsonl" else _table_rows(text, shown, delimiter="\t" if suffix == ".tsv" else ",")
    examples = []
    for line, row, columns in rows:
        for column in (text_column, label_column):
            if column not in row:
                where = f"line {line} of {shown!r} has" if suffix == ".jsonl" else f"{shown!r} has"
                raise ValueError(
                    f"{where} no {column!r} column (its columns: {', '.join(map(repr, columns)) or 'none'}); "
                    f"name the columns with data.init_args.text_column / label_column"
                )
        value, label = row[text_column], row[label_column]
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"line {line} of {shown!r} has an empty text ({text_column}={value!r}): every example needs a text")
        if label is None or (isinstance(label, (dict, list))) or not str(label).strip():
            raise ValueError(f"line {line} of {shown!r} has no label ({label_column}={label!r}): every example needs a label")
        examples.append(Example(value, str(label).strip(), f"{shown}:{line}"))
    if not examples:
        raise ValueError(f"labelled file {shown!r} holds no examples")
    return examples


def _table_rows(text: str, shown: str, *, delimiter: str) -> list[tuple[int, dict[str, str], list[str]]]:
    """(line number, row, the header's columns) per data row of a CSV / TSV text."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError(f"labelled file {shown!r} is empty: it needs a header line naming its columns") from None
    rows = []
    try:
        for values in reader:
            if not values or not any(v.strip() for v in values):
                continue  # a blank line
            if len(values) != len(header):
                raise ValueError(
                    f"line {reader.line_num} of {shown!r} has {len(values)} fields but the header has {len(header)} "
                    f"({', '.join(header)})" + (": a tab-separated file takes no quoting" if delimiter == "\t" else "")
                )
            rows.append((reader.line_num, dict(zip(header, values)), header))
    except csv.Error as err:
        raise ValueError(f"{shown!r} is not valid {'TSV' if delimiter == chr(9) else 'CSV'} at line {reader.line_num}: {err}") from None
    return rows


def _json_rows(text: str, shown: str) -> list[tuple[int, dict[str, object], list[str]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"line {number} of {shown!r} is not JSON ({err.msg}); a .jsonl file holds one JSON object per line") from None
        if not isinstance(row, dict):
            raise ValueError(f"line {number} of {shown!r} holds a {type(row).__name__}, not a JSON object with a text and a label")
        rows.append((number, row, list(row)))
    return rows


def read_predict_texts(path: str | Path, *, text_column: str = "text") -> list[tuple[int, str]]:
    """(line number, text) of what ``tzoo predict`` classifies: each non-blank line of a text file,
    or the ``text_column`` of each object of a ``.jsonl`` file (any label in it is ignored)."""
    path = Path(path)
    text = _read_text_file(path, "predict_file")
    if path.suffix.lower() != ".jsonl":
        items = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        items = []
        for number, row, columns in _json_rows(text, str(path)):
            value = row.get(text_column)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(
                    f"line {number} of {str(path)!r} has no text in {text_column!r} (its columns: {', '.join(columns)})"
                )
            items.append((number, value))
    if not items:
        raise ValueError(f"predict_file {str(path)!r} holds no text to classify")
    return items


def check_labels(examples: dict[str, Sequence[Example]], *, where: str) -> tuple[str, ...]:
    """The classes (sorted training labels). A single-class training set, or labels in the val / test
    splits that training never saw, are errors naming them."""
    classes = tuple(sorted({e.label for e in examples["train"]}))
    if len(classes) < 2:
        raise ValueError(
            f"the training set of {where} has a single class ({classes[0]!r}, {len(examples['train'])} examples): "
            f"a classifier needs at least two labels to tell apart"
        )
    for split in ("val", "test"):
        unseen = sorted({e.label for e in examples.get(split, ())} - set(classes))
        if unseen:
            first = next(e for e in examples[split] if e.label in unseen)
            raise ValueError(
                f"the {split} set of {where} has labels the training set never has: {unseen} (first at {first.source}); "
                f"training labels: {list(classes)}"
            )
    return classes
