"""``tzoo compare DIR...``: run cards (``run_card.json``, written by every ``tzoo fit``; see
``tzoo.tasks.run_card``) side by side, one column per run. Reading cards needs neither Lightning nor
torch, so this command (and its ``--help``) answers at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["CARD_JSON", "CARD_MD", "compare", "compare_main", "find_cards", "load_card", "to_markdown"]

CARD_JSON = "run_card.json"
CARD_MD = "run_card.md"

# --- reading and comparing ----------------------------------------------------------------------

# (label, how to show it from a card)
_ROWS: list[tuple[str, Any]] = [
    ("task", lambda c: c.get("task")),
    ("status", lambda c: c.get("status")),
    ("metric", lambda c: _metric(c)),
    ("params", lambda c: _si(c.get("params"))),
    ("nodes/s", lambda c: _si(c.get("nodes_per_s"))),
    ("MFU", lambda c: f"{100 * c['mfu']:.1f}%" if c.get("mfu") is not None else None),
    ("peak memory", lambda c: _bytes(c.get("peak_memory_bytes"))),
    ("wall time", lambda c: f"{c['wall_time_s']:.1f} s" if c.get("wall_time_s") is not None else None),
    ("steps", lambda c: c.get("steps")),
    ("device", lambda c: c.get("device")),
    ("precision", lambda c: c.get("precision")),
]


def _metric(card: dict[str, Any]) -> str | None:
    metric = card.get("metric") or {}
    if metric.get("value") is None:
        return f"{metric.get('name')} = ?" if metric.get("name") else None
    return f"{metric['name']} = {metric['value']:.4g}"


def _si(x: float | None) -> str | None:
    if x is None:
        return None
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _bytes(n: int | None) -> str | None:
    if n is None:
        return None
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def to_markdown(card: dict[str, Any]) -> str:
    """The Markdown twin of a card: a title and a two-column table."""
    lines = [f"# Run card: {card.get('task')}", "", f"`{card.get('run_dir')}`", "", "| | |", "|---|---|"]
    for label, show in _ROWS:
        value = show(card)
        lines.append(f"| {label} | {'-' if value is None else value} |")
    for name, value in (card.get("metrics") or {}).items():
        lines.append(f"| {name} | {value:.4g} |")
    return "\n".join(lines) + "\n"


def find_cards(paths: list[str | Path]) -> list[Path]:
    """The run cards to compare: each path is a card file, a run directory holding one, or a
    directory searched for cards below it (``runs/`` or ``runs/<task>/``)."""
    if not paths:
        raise ValueError("tzoo compare needs at least one run directory, e.g. `tzoo compare runs/lm/version_0 runs/sort/version_0`")
    cards: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{str(raw)!r} does not exist; give a run's log directory (runs/<task>/version_N)")
        if path.is_file():
            found = [path]
        elif (path / CARD_JSON).is_file():
            found = [path / CARD_JSON]
        else:
            found = sorted(path.rglob(CARD_JSON))
        if not found:
            raise FileNotFoundError(
                f"no run card ({CARD_JSON}) in {str(raw)!r} or below it; give a directory a `tzoo fit` "
                f"wrote (runs/<task>/version_N, with a logger on)"
            )
        cards += found
    return cards


def load_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(path)!r} is not a run card (not valid JSON: {exc})") from None
    if not isinstance(card, dict) or "task" not in card:
        raise ValueError(f"{str(path)!r} is not a run card (a JSON object with a 'task' field, as `tzoo fit` writes)")
    return card


def compare(paths: list[str | Path]) -> str:
    """The cards under ``paths`` side by side, one column per run, as a text table."""
    files = find_cards(paths)
    cards = [load_card(f) for f in files]
    header = ["", *(_short(f) for f in files)]
    rows = [header] + [[label, *("-" if (v := show(c)) is None else str(v) for c in cards)] for label, show in _ROWS]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _short(card_file: Path) -> str:
    run = card_file.parent
    return f"{run.parent.name}/{run.name}" if run.parent.name else run.name


def compare_main(args: list[str]) -> None:
    """``tzoo compare DIR...``"""
    if not args or args[0] in ("-h", "--help"):
        print("usage: tzoo compare DIR [DIR ...]   (run directories, or folders holding them, e.g. runs/)")
        if not args:
            raise SystemExit(2)
        return
    try:
        print(compare(args))
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"tzoo compare: {exc}") from None
