"""The generated corpus (deterministic, held-out speakers), manifests, LibriSpeech folders, and the
bad inputs of corpus building."""

import builtins
import json

import numpy as np
import pytest
import soundfile

from tzoo.tasks.speech import corpus, espeak
from tzoo.tasks.speech.corpus import (
    ALPHABET,
    TEST_VARIANTS,
    VAL_VARIANTS,
    WORDS,
    CorpusSpec,
    generate_corpus,
    read_librispeech,
    read_manifest,
    split_variants,
)
from tzoo.tasks.speech.espeak import ACCENTS, EspeakUnavailableError, Synthesizer

TINY_SPEC = dict(train=6, val=3, test=3, test_sentences=2, max_words=3, seed=0)  # as in conftest.py


def test_corpus_design_covers_the_requested_variety():
    assert len(WORDS) >= 200 and len(set(WORDS)) == len(WORDS)
    assert len(ACCENTS) >= 8
    train = split_variants("train")
    assert len(train) >= 10
    assert not set(train) & (set(VAL_VARIANTS) | set(TEST_VARIANTS))  # held-out speakers
    assert not set(VAL_VARIANTS) & set(TEST_VARIANTS)


def test_generator_is_deterministic_and_holds_out_test_speakers(tiny_corpus, tmp_path):
    again = generate_corpus(tmp_path / "again", CorpusSpec(**TINY_SPEC))
    for split, size in (("train", 6), ("val", 3), ("test", 3), ("test_sentences", 2)):
        first = read_manifest(tiny_corpus / f"{split}.jsonl")
        second = read_manifest(again / f"{split}.jsonl")
        assert len(first) == size
        fields = ("text", "engine", "voice", "speed", "pitch", "snr_db")
        assert [[e[f] for f in fields] for e in first] == [[e[f] for f in fields] for e in second]
        # eSpeak NG's voicing noise is random (and unseeded by its API), so the samples themselves
        # differ slightly between runs; the durations agree to a few milliseconds
        assert [e["duration"] for e in first] == pytest.approx([e["duration"] for e in second], abs=0.01)
        espeak = [e for e in first if e["engine"] == "espeak"]  # the other engines: tests/tasks/speech/test_engines.py
        assert espeak
        variants = {e["voice"].split("+")[1] for e in espeak}
        accents = {e["voice"].split("+")[0] for e in espeak}
        assert variants <= set(split_variants(split)) and accents <= set(ACCENTS)
        for e in first:
            assert 1 <= len(e["text"].split()) <= TINY_SPEC["max_words"]
            info = soundfile.info(e["audio"])
            assert info.samplerate == 16000 and info.channels == 1
            assert info.duration == pytest.approx(e["duration"], abs=1e-3)
    other = generate_corpus(tmp_path / "other", CorpusSpec(**{**TINY_SPEC, "seed": 1}))
    assert [e["text"] for e in read_manifest(other / "train.jsonl")] != [e["text"] for e in read_manifest(tiny_corpus / "train.jsonl")]


def test_generated_corpus_is_reused_from_the_cache(tiny_corpus):
    before = (tiny_corpus / "train.jsonl").stat().st_mtime_ns
    generate_corpus(tiny_corpus, CorpusSpec(**TINY_SPEC))
    assert (tiny_corpus / "train.jsonl").stat().st_mtime_ns == before


def test_manifest_line_that_is_not_json_names_its_line(tmp_path):
    path = tmp_path / "train.jsonl"
    (tmp_path / "a.wav").touch()  # the lines before the bad one name files that exist (checked as they are read)
    path.write_text('{"audio": "a.wav", "text": "one"}\n{"audio": "b.wav", "text": \n')
    with pytest.raises(ValueError, match=r"train\.jsonl:2: not valid JSON") as info:
        read_manifest(path)
    assert '"audio"' in str(info.value)  # says what a line should look like


def test_text_outside_the_vocabulary_names_the_line_and_the_alphabet(tmp_path):
    path = tmp_path / "train.jsonl"
    (tmp_path / "a.wav").touch()
    path.write_text('{"audio": "a.wav", "text": "one"}\n\n{"audio": "b.wav", "text": "caf\u00e9 #1"}\n')
    with pytest.raises(ValueError, match=r"train\.jsonl:3: text 'caf\u00e9 #1' has character\(s\) '#', '\u00e9'") as info:
        read_manifest(path)
    assert repr(ALPHABET) in str(info.value)


def test_librispeech_folder_reads_like_a_manifest(tmp_path):
    chapter = tmp_path / "dev-clean" / "84" / "121123"
    chapter.mkdir(parents=True)
    soundfile.write(chapter / "84-121123-0000.flac", np.zeros(1600, dtype=np.float32), 16000)
    (chapter / "84-121123.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n")
    (entry,) = read_librispeech(tmp_path / "dev-clean")
    assert entry["text"] == "go do you hear" and entry["duration"] == pytest.approx(0.1)
    (chapter / "84-121123.trans.txt").write_text("84-121123-0000 GO; DO YOU HEAR\n")
    with pytest.raises(ValueError, match=r"84-121123\.trans\.txt:1: .*';'"):
        read_librispeech(tmp_path / "dev-clean")


def test_espeak_unavailable_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def no_loader(name, *args, **kwargs):
        if name == "espeakng_loader":
            raise ImportError("No module named 'espeakng_loader'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_loader)
    monkeypatch.setattr(espeak, "_LIBRARY", None)  # as in a fresh process
    monkeypatch.setattr(espeak.shutil, "which", lambda name: None)
    with pytest.raises(EspeakUnavailableError, match=r"pip install espeakng-loader.*apt-get install espeak-ng"):
        Synthesizer()
    with pytest.raises(EspeakUnavailableError, match="pip install espeakng-loader"):
        generate_corpus(corpus.Path("/nonexistent-never-written"), CorpusSpec(**TINY_SPEC))


def test_unknown_voice_and_bad_corpus_settings_are_errors():
    with pytest.raises(ValueError, match=r"no voice 'en-XX\+nobody'.*accents"):
        Synthesizer().synthesize("one", "en-XX+nobody")
    with pytest.raises(ValueError, match=r"speed=\(300, 200\) must be a range"):
        CorpusSpec(speed=(300, 200))
    with pytest.raises(FileNotFoundError, match="noise file"):
        CorpusSpec(noise_files=["/no/such/noise.wav"])


def test_the_data_module_passes_the_other_engines_rate_and_pitch_factors_to_the_corpus(tmp_path):
    from tzoo.tasks.speech.data import SpeechDataModule

    default = SpeechDataModule("espeak", data_dir=str(tmp_path), engines=["espeak"])
    wide = SpeechDataModule("espeak", data_dir=str(tmp_path), engines=["espeak"], speed_factor=(0.9, 1.1), pitch_factor=(0.85, 1.8))
    assert default.spec.pitch_factor == CorpusSpec().pitch_factor and default.spec.speed_factor == CorpusSpec().speed_factor
    assert (wide.spec.speed_factor, wide.spec.pitch_factor) == ((0.9, 1.1), (0.85, 1.8))
    assert wide.root != default.root  # another corpus, in its own cache folder
    with pytest.raises(ValueError, match=r"pitch_factor=\(0.85, 2.5\) must be a range .*within \(0.5, 2.0\)"):
        SpeechDataModule("espeak", data_dir=str(tmp_path), engines=["espeak"], pitch_factor=(0.85, 2.5))


def test_noise_files_from_the_config_are_mixed_in(tmp_path):
    noise = tmp_path / "hum.wav"
    soundfile.write(noise, 0.1 * np.sin(np.arange(8000) * 0.3).astype(np.float32), 8000)
    root = generate_corpus(tmp_path / "c", CorpusSpec(train=2, val=1, test=1, max_words=2, noise_files=[str(noise)]))
    assert json.loads((root / "corpus.json").read_text())["spec"]["noise_files"] == [str(noise)]
    assert len(read_manifest(root / "train.jsonl")) == 2


def test_length_buckets_cover_every_utterance_once_and_sortagrad_orders_only_the_first_epoch():
    import random

    from tzoo.tasks.speech.data import LengthBucketSampler

    durations = [random.Random(i).uniform(0.5, 6.0) for i in range(500)]
    sampler = LengthBucketSampler(durations, 16, seed=3, pool=4, shortest_first=True)
    first, second = list(sampler), list(sampler)
    for epoch in (first, second):
        assert sorted(i for batch in epoch for i in batch) == list(range(500))
        assert all(len(batch) <= 16 for batch in epoch)
    longest = [max(durations[i] for i in batch) for batch in first]
    assert longest == sorted(longest)  # epoch 1: shortest batches first
    later = [max(durations[i] for i in batch) for batch in second]
    assert later != sorted(later)  # then shuffled
    plain = list(LengthBucketSampler(durations, 16, seed=3, pool=4))
    assert [max(durations[i] for i in b) for b in plain] != sorted(max(durations[i] for i in b) for b in plain)


def test_no_two_words_sound_alike_in_any_accent():
    """Texts are random word sequences: a homophone pair would make transcripts the audio cannot
    determine. Words compared by their phonemes in isolation, stress marks dropped (eSpeak NG leaves
    "their" unstressed and stresses "there"). Two accents merge a few pairs by their own rules, and
    only those pairs are allowed: Welsh English drops initial h, Caribbean English says "th" as "d"."""
    accent_rules = {
        "en-GB-x-gbcwmd": {("and", "hand"), ("his", "is"), ("as", "has"), ("add", "had")},
        "en-029": {("day", "they")},
    }
    synth = Synthesizer()
    for accent in ACCENTS:
        spoken: dict[str, list[str]] = {}
        for word in WORDS:
            spoken.setdefault(synth.phonemes(word, accent).replace("'", "").replace(",", ""), []).append(word)
        alike = {tuple(sorted(words)) for words in spoken.values() if len(words) > 1}
        assert alike <= accent_rules.get(accent, set()), f"{accent}: {alike} sound alike"


def test_phonemes_tell_homophones_apart_from_other_words():
    synth = Synthesizer()
    assert synth.phonemes("knew", "en-US") == synth.phonemes("new", "en-US")  # what the test above rules out
    assert synth.phonemes("read", "en-US") != synth.phonemes("red", "en-US")
    assert len(synth.phonemes("hello world. two", "en-US").split()) == 3  # every clause
    with pytest.raises(ValueError, match="no voice 'xx-nowhere'"):
        synth.phonemes("hello", "xx-nowhere")
