"""Made-up eSpeak NG speakers (tasks/speech/espeak_voices.py): drawn variants that speak as themselves."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tzoo.tasks.speech import espeak, espeak_voices
from tzoo.tasks.speech.corpus import CorpusSpec, generate_corpus, read_manifest
from tzoo.tasks.speech.data import SpeechDataModule
from tzoo.tasks.speech.engines import get_engine
from tzoo.tasks.speech.espeak_voices import MAX_MADE_UP, data_path, library_name, made_up_names, made_up_variant

from test_engines import TINY_SPEC, espeak_alone, median_f0  # noqa: F401 (espeak_alone: a fixture)

TEXT = "the old man went home to read a book"


def fields(index: int) -> dict[str, list[int]]:
    """A made-up variant's numeric lines: keyword (``formant 2`` as ``formant2``) -> numbers."""
    out = {}
    for line in made_up_variant(index).splitlines()[3:]:
        words = line.split()
        if words and words[0] == "formant":
            out[f"formant{words[1]}"] = [int(w) for w in words[2:]]
        elif words and words[0] != "gender":
            out[words[0]] = [int(w) for w in words[1:]]
    return out


def gender(index: int) -> str:
    return made_up_variant(index).splitlines()[2].split()[1]


def test_made_up_variants_are_the_same_everywhere_and_differ_from_each_other():
    assert made_up_variant(17) == made_up_variant(17)
    assert made_up_variant(17).startswith("language variant\nname tzoo-017\ngender ")
    drawn = [fields(i) for i in range(MAX_MADE_UP)]
    assert len({str(d) for d in drawn}) == MAX_MADE_UP
    women = [i for i in range(MAX_MADE_UP) if gender(i) == "female"]
    assert 0.35 < len(women) / MAX_MADE_UP < 0.65
    for i, d in enumerate(drawn):
        low, high = d["pitch"]
        assert (130 <= low <= 220) if i in women else (55 <= low <= 130), (i, low)
        assert low + 20 <= high <= low + 80
        assert all(70 <= d[f"formant{n}"][0] <= 150 for n in range(1, 6)), (i, d)
    # a woman's vocal tract is shorter: her formants lie higher on the whole
    f1 = {g: np.mean([drawn[i]["formant1"][0] for i in range(MAX_MADE_UP) if gender(i) == g]) for g in ("female", "male")}
    assert f1["female"] > 1.1 * f1["male"]
    assert {"klatt", "tone", "breath", "echo"} <= {k for d in drawn for k in d}  # each option drawn somewhere
    with pytest.raises(ValueError, match=r"made-up variant index must be in \[0, 256\), got 256"):
        made_up_variant(256)


def test_a_made_up_voice_speaks_as_its_file_says_not_as_the_default_voice():
    engine = get_engine("espeak")
    woman = next(i for i in range(MAX_MADE_UP) if gender(i) == "female" and fields(i)["pitch"][0] >= 180)
    man = next(i for i in range(MAX_MADE_UP) if gender(i) == "male" and fields(i)["pitch"][0] <= 90)
    her, rate = engine.synthesize(TEXT, f"en-US+tzoo-{woman:03d}")
    him, _ = engine.synthesize(TEXT, f"en-US+tzoo-{man:03d}")
    default, _ = engine.synthesize(TEXT, "en-US")  # what eSpeak NG speaks for a variant it cannot find
    assert len(her) > rate and not np.array_equal(her, default) and not np.array_equal(him, default)
    assert median_f0(her, rate) > 1.6 * median_f0(him, rate)
    assert median_f0(her, rate) > 0.8 * fields(woman)["pitch"][0]


def test_the_shipped_voices_speak_exactly_as_from_the_wheels_own_data():
    """The library reads the linked data folder: every shipped variant's samples are the same bits."""
    script = (
        "import hashlib, sys\nimport tzoo.tasks.speech.espeak as E\n"
        "if sys.argv[1] == 'wheel':\n    E.data_path = lambda path: (_ for _ in ()).throw(OSError('off'))\n"
        "s = E.Synthesizer()\n"
        f"print(E._MADE_UP_ERROR is None, hashlib.md5(b''.join(s.synthesize({TEXT!r}, v).tobytes() for v in ('en-US+m3', 'en+steph', 'en-GB-x-rp+david'))).hexdigest())"
    )
    runs = {how: subprocess.run([sys.executable, "-c", script, how], capture_output=True, text=True, check=True).stdout.split() for how in ("linked", "wheel")}
    assert runs["linked"][0] == "True" and runs["wheel"][0] == "False"
    assert runs["linked"][1] == runs["wheel"][1]


def test_the_linked_data_folder_is_built_once_with_every_variant(tmp_path):
    import espeakng_loader

    source = espeakng_loader.get_data_path()
    first = data_path(source, cache=tmp_path)
    assert data_path(source, cache=tmp_path) == first and [p.name for p in tmp_path.iterdir()] == [first.name]
    assert (first / "phontab").is_symlink() and (first / "phontab").resolve() == (Path(source) / "phontab").resolve()
    assert (first / "voices" / "!v" / "m3").is_file() and not list((first / "voices" / "!v").glob("tzoo*"))
    assert (first / "tzoo" / "255").read_text() == made_up_variant(255)
    assert library_name("en-US+tzoo-017") == "en-US+../../tzoo/017" and library_name("tzoo-003") == "en+../../tzoo/003"
    assert library_name("en-US+m3") == "en-US+m3"
    with pytest.raises(FileNotFoundError, match="is not an eSpeak NG data folder"):
        data_path(tmp_path, cache=tmp_path)


@pytest.mark.parametrize("bad", [-1, 257, True, 2.5, "8"])
def test_a_bad_number_of_made_up_speakers_is_refused_by_name(bad):
    with pytest.raises(ValueError, match=rf"must be an integer in \[0, 256\], got {bad!r}"):
        CorpusSpec(**TINY_SPEC, made_up_speakers=bad)


def test_an_unknown_or_unspeakable_made_up_voice_is_an_error(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match=r"espeak has no voice 'tzoo-256'; .*and the made-up tzoo-000 \.\.\. tzoo-255"):
        get_engine("espeak").check_voice("tzoo-256")
    # where the linked folder could not be built, eSpeak NG would speak its default voice: refused instead
    monkeypatch.setattr(espeak, "_MADE_UP_ERROR", "the data folder with them could not be built (read-only)")
    with pytest.raises(ValueError, match=r"cannot speak the made-up variant 'en\+tzoo-003': .*read-only"):
        espeak.Synthesizer().synthesize("hello", "en+tzoo-003")
    # a data folder without the variant's file (eSpeak NG would not say so): refused, naming the file
    monkeypatch.setattr(espeak, "_MADE_UP_ERROR", None)
    monkeypatch.setattr(espeak, "_DATA", str(tmp_path))
    with pytest.raises(ValueError, match=r"cannot speak the made-up variant 'en\+tzoo-003': its file .*tzoo/003' is missing"):
        espeak.Synthesizer().synthesize("hello", "en+tzoo-003")
    command = espeak.Synthesizer.__new__(espeak.Synthesizer)
    command._lib, command._command = None, "espeak-ng"
    with pytest.raises(ValueError, match=r"made-up variant 'en\+tzoo-003' needs eSpeak NG's library from the wheel"):
        command.synthesize("hello", "en+tzoo-003")


def test_made_up_speakers_join_espeaks_training_voices_only(espeak_alone, tmp_path):  # noqa: F811
    spec = CorpusSpec(**TINY_SPEC, made_up_speakers=3)
    roles = spec.resolved()["espeak"]
    assert roles["train"][-3:] == made_up_names(3) and roles["val"] == CorpusSpec(**TINY_SPEC).resolved()["espeak"]["val"]
    assert not any(v.startswith("tzoo-") for v in roles["val"] + roles["test"])
    assert spec.key() != CorpusSpec(**TINY_SPEC).key()
    assert SpeechDataModule(corpus_size=[6, 3, 3], made_up_speakers=3).spec.made_up_speakers == 3
    # only made-up speakers in training: every training utterance speaks one of them
    root = generate_corpus(tmp_path / "c", CorpusSpec(**TINY_SPEC, voices={"espeak": {"train": []}}, made_up_speakers=2))
    voices = {e["voice"].split("+")[1] for e in read_manifest(root / "train.jsonl")}
    assert voices and voices <= {"tzoo-000", "tzoo-001"}
