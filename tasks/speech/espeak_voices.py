"""Made-up eSpeak NG speakers: voice variants drawn at random, so that the corpus has more speakers
than the variants eSpeak NG ships.

eSpeak NG's speaker is a *variant*: a text file of a few lines (eSpeak NG's ``docs/voices.md``):
the pitch range, each of nine formants' frequency, height and width as percentages, the Klatt
synthesiser or not, a ``tone`` curve over the spectrum, flutter, roughness, breath, voicing,
consonant strength, echo. The corpus trains on 32 of the 40 human-sounding variants and tests on
four others; 32 speakers are few to learn a voice-independent reading from. ``made_up_variant(i)``
draws variant ``i`` from a fixed seed, from ranges that the 32 training variants span (the held-out
variants' files are not what the ranges come from; a few of the training variants reach further,
e.g. ``boris``' formant 0 at 47%, ``ed``'s formant 6 at 167%).

``data_path()`` is eSpeak NG's data folder with the made-up variants added: a cache folder of links
to the wheel's data (19 MB, not copied) and a folder ``tzoo`` of the 256 variant files, read as
``voices/!v/../../tzoo/017`` (``library_name``; eSpeak NG speaks its default voice, without a word,
for a variant file it cannot open: ``espeak.Synthesizer`` checks the file first). The library
is initialised with it (``espeak._library``), so a voice ``en-US+tzoo-017`` speaks like any other
(``library_name``). Written once per data version and atomically (workers of a corpus generation
may race to it).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["MAX_MADE_UP", "data_path", "is_made_up", "library_name", "made_up_names", "made_up_variant"]

MAX_MADE_UP = 256
PREFIX = "tzoo-"
LIBRARY_PATH = "../../tzoo/"  # from voices/!v, where eSpeak NG looks for a variant
_NAME = re.compile(r"tzoo-(\d{3})")
_SEED = 20261205  # the draws; changing it (or the ranges) changes every made-up speaker: bump VERSION (part of a corpus's key)
VERSION = 2


def made_up_names(n: int) -> tuple[str, ...]:
    """The first ``n`` made-up variants' names (``tzoo-000`` ...)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_MADE_UP:
        raise ValueError(f"the number of made-up eSpeak NG speakers must be an integer in [0, {MAX_MADE_UP}], got {n!r}")
    return tuple(f"{PREFIX}{i:03d}" for i in range(n))


def library_name(voice: str) -> str:
    """The name eSpeak NG's library loads ``voice`` by: a made-up variant ``<accent>+tzoo-017`` is
    the file ``tzoo/017`` of ``data_path()``, which eSpeak NG reaches from its ``voices/!v`` folder
    as ``../../tzoo/017`` (outside ``voices``: eSpeak NG lists at most 349 voices and variants, and
    the wheel ships 245); any other voice is its own name."""
    if not is_made_up(voice):
        return voice
    accent, _, variant = voice.rpartition("+")
    return f"{accent or 'en'}+{LIBRARY_PATH}{variant[len(PREFIX):]}"


def is_made_up(voice: str) -> bool:
    """Whether ``voice`` (``<accent>+<variant>`` or a bare variant) is one of the made-up variants."""
    match = _NAME.fullmatch(voice.rpartition("+")[2])
    return match is not None and int(match.group(1)) < MAX_MADE_UP


def made_up_variant(index: int) -> str:
    """The variant file of made-up speaker ``index`` (0 ... MAX_MADE_UP - 1): the same text on every machine."""
    if not 0 <= index < MAX_MADE_UP:
        raise ValueError(f"made-up variant index must be in [0, {MAX_MADE_UP}), got {index}")
    rng = np.random.default_rng([_SEED, index])
    female = bool(rng.random() < 0.5)

    def pick(lo: float, hi: float) -> int:
        return int(round(rng.uniform(lo, hi)))

    base = pick(130, 220) if female else pick(55, 130)  # Hz: the training variants' low ends, 50 ... 204
    lines = ["language variant", f"name {PREFIX}{index:03d}", f"gender {'female' if female else 'male'}", "",
             f"pitch {base} {base + pick(20, 80)}"]  # fmt: skip
    if rng.random() < 0.15:  # adam, benjamin, caleb (6) and edward (5): 4 of 32
        lines.append(f"klatt {int(rng.choice([5, 6]))}")
    scale = rng.uniform(1.0, 1.25) if female else rng.uniform(0.88, 1.06)  # vocal tract length: all formants
    for formant in range(9):
        spread = 0.1 if 1 <= formant <= 5 else 0.2  # the low formants move with the tract; the rest vary more
        freq = pick(100 * scale * (1 - spread), 100 * scale * (1 + spread))
        height = pick(*((80, 130) if formant == 0 else (60, 125) if formant <= 3 else (30, 110) if formant <= 5 else (0, 100)))
        lines.append(f"formant {formant} {freq} {height} {pick(50, 170)}")
    if rng.random() < 0.2:  # a curve over the spectrum: 8 of the 32 (m8, ed, ian, iven, john, norbert, quincy, travis)
        lines.append("tone " + " ".join(f"{f} {pick(10, 255)}" for f in (pick(500, 700), pick(1000, 1400), pick(1800, 2400), pick(2800, 3400))))
    lines.append(f"flutter {pick(0, 20)}")
    lines.append(f"roughness {pick(0, 4)}")
    if rng.random() < 0.5:
        lines.append(f"voicing {pick(50, 160)}")
    if rng.random() < 0.5:
        lines.append(f"consonants {pick(50, 150)} {pick(70, 150)}")
    if rng.random() < 0.15:  # f3, f5
        lines.append("breath " + " ".join(str(pick(0, 6)) for _ in range(8)))
    if rng.random() < 0.2:  # m2, f2, f3, f4, f5
        lines.append(f"echo {pick(100, 150)} {pick(5, 15)}")
    return "\n".join(lines) + "\n"


def data_path(source: str | os.PathLike[str], cache: str | os.PathLike[str] | None = None) -> Path:
    """eSpeak NG's data folder ``source`` with the made-up variants added, built once under
    ``cache`` (default: tzoo's cache, ``espeak-ng-data-<hash of source and version>``)."""
    from tzoo.tasks.files import cache_dir

    source = Path(source).resolve()
    variants = source / "voices" / "!v"
    if not variants.is_dir():
        raise FileNotFoundError(f"{str(source)!r} is not an eSpeak NG data folder (it has no voices/!v)")
    key = hashlib.sha1(f"{source}|{_SEED}|{VERSION}".encode()).hexdigest()[:10]
    root = Path(cache) if cache is not None else cache_dir("espeak-ng")
    target = root / f"espeak-ng-data-{key}"
    done = target / "tzoo" / f"{MAX_MADE_UP - 1:03d}"
    if done.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        # voices and voices/!v are folders of their own (of links): eSpeak NG reaches tzoo/ through
        # voices/!v/../.., which the system resolves from the real folder a link points to
        for folder in (Path(), Path("voices"), Path("voices", "!v")):
            (build / folder).mkdir(exist_ok=True)
            for entry in (source / folder).iterdir():
                if folder / entry.name not in (Path("voices"), Path("voices", "!v")):
                    (build / folder / entry.name).symlink_to(entry)
        (build / "tzoo").mkdir()
        for index in range(MAX_MADE_UP):
            (build / "tzoo" / f"{index:03d}").write_text(made_up_variant(index))
        try:
            build.rename(target)
        except OSError:  # another process built it first
            if not done.is_file():
                raise
    finally:
        if build.exists():
            shutil.rmtree(build)
    return target
    root.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        for entry in source.iterdir():
            if entry.name != "voices":
                (build / entry.name).symlink_to(entry)
        (build / "voices").mkdir()
        for entry in (source / "voices").iterdir():
            if entry.name != "!v":
                (build / "voices" / entry.name).symlink_to(entry)
        (build / "voices" / "!v").mkdir()
        for entry in variants.iterdir():
            (build / "voices" / "!v" / entry.name).symlink_to(entry)
        for index in range(MAX_MADE_UP):
            (build / "voices" / "!v" / f"{PREFIX}{index:03d}").write_text(made_up_variant(index))
        try:
            build.rename(target)
        except OSError:  # another process built it first
            if not (target / "voices" / "!v" / f"{PREFIX}{MAX_MADE_UP - 1:03d}").is_file():
                raise
    finally:
        if build.exists():
            shutil.rmtree(build)
    return target
