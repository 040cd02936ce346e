"""Speech corpora as JSONL manifests: the generated multi-engine corpus, user manifests, LibriSpeech.

A manifest has one JSON object per line: ``{"audio": path, "text": str, "duration": seconds,
"voice": str, "engine": str}`` (``audio`` relative to the manifest's folder, or absolute; ``voice``
and ``engine`` optional).

The generated corpus (``generate_corpus``) writes, for each split, 16 kHz mono 16-bit WAV files
under ``<root>/<split>/`` and ``<root>/<split>.jsonl``. Its speech comes from every synthesizer
found here (``engines.py``): eSpeak NG always, Festival, Flite, Piper and Pico when installed. Texts are digit
strings ("4 0 7") and sentences drawn from ``WORDS``, 1 to ``max_words`` words (and, with
``sentence_fraction``, lines of the plays). Each utterance has its own engine, voice (and accent),
speed, pitch, leading silence and additive noise at a random SNR, all drawn from the seed and its
index, so the corpus is the same whatever the number of worker processes (up to eSpeak NG's own
random voicing noise, which its API does not seed: samples differ slightly between runs).

Splits and their voices (``DEFAULT_VOICES``; ``CorpusSpec.voices`` changes them):
- ``train``: eSpeak NG's voice variants but the held-out ones, Festival's two diphone voices
  (``kal_diphone``, ``ked_diphone``), Flite's ``rms`` and Pico's ``en-GB`` and ``en-US`` (statistical
  parametric voices), mixed by ``engine_weights``;
- ``val``: the held-out eSpeak NG variants ``VAL_VARIANTS`` and the other engines' training voices
  (with other texts: they have no voice to spare);
- ``test``: the held-out eSpeak NG variants ``TEST_VARIANTS``, Festival's ``cmu_us_slt_arctic_hts``
  (an HTS voice of a woman: a voice and an engine never heard in training) and Flite's ``awb`` (a
  Scottish voice never heard in training), mixed by ``test_weights``;
- ``test_sentences``: the same voices speaking lines of plays that training never reads
  (``sentences.py``).
Every entry records its ``engine`` and ``voice``: the test reports error rates per engine and voice.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tzoo.tasks.speech import espeak_voices

__all__ = [
    "ALPHABET",
    "DEFAULT_VOICES",
    "SPLITS",
    "TEST_VARIANTS",
    "TEST_WEIGHTS",
    "TRAIN_WEIGHTS",
    "VAL_VARIANTS",
    "WORDS",
    "CorpusSpec",
    "check_text",
    "generate_corpus",
    "read_librispeech",
    "read_manifest",
    "report_groups",
    "speaker_of",
    "write_manifest",
]

ALPHABET = " '0123456789abcdefghijklmnopqrstuvwxyz"  # what a transcript may hold (after lower-casing)

# About 350 common English words (function words, numbers, everyday nouns, verbs and adjectives).
# No two of them sound alike in any of the accents: the texts are random word sequences, so nothing
# but the sound could tell "there" from "their", and a homophone makes a transcript the audio cannot
# determine. The first list had ten such sets in every accent (to/too/two, no/know, see/sea,
# right/write, there/their, ...), which cost a trained model 0.74 points of its 6.11% test CER; each
# kept its commoner word (`Synthesizer.phonemes` checks the list in the corpus tests).
WORDS = tuple(
    """
    the of and to a in is it you that he was for on are with as i his they be at one have this from
    or had by word but what some we can out other were all there when up use your how said an each she
    which do time if will way about many then them would like so these her long make thing
    see him has look more day could go come did number sound no most people my over water than
    call first who may down side been now find any new work part take get place made live where after
    back little only round man year came show every good me give our under name very through just form
    sentence great think say help low line differ turn cause much mean before move right boy old same
    tell does set three want air well also play small end put home read hand port large spell add even
    land here must big such follow act why ask men change went light kind off need house picture try
    us again animal point mother world near build self earth father head stand own page should country
    found answer school grow study still learn plant cover food sun between state keep never last
    let thought city tree cross farm hard start might story saw far draw left late run while press
    close night real life few north open seem together next white children begin got walk example ease
    paper group always music those both mark often letter until mile river car feet care second book carry
    took science eat room friend began idea fish mountain stop once base horse cut sure watch color
    face main enough plain girl usual young ready above ever red list though feel talk bird soon body
    dog family direct pose leave song measure door product black short numeral class wind question happen
    complete ship area half rock order fire south problem piece told pass since top whole king space
    window money table green summer winter garden happy simple market street yellow
    """.split()
)

# Voice variants held out of training: the val split speaks with VAL_VARIANTS, the test split with
# TEST_VARIANTS, training with every other variant of espeak.VARIANTS.
VAL_VARIANTS = ("m5", "f4", "paul", "Annie")
TEST_VARIANTS = ("m3", "f2", "david", "steph")

SPLITS = ("train", "val", "test", "test_sentences")

# engine -> role -> voices; the test_sentences split speaks with the "test" voices. eSpeak NG's
# training voices are every variant of espeak.VARIANTS but the held-out ones (filled in by
# _default_voices). Flite's kal and slt are the same speakers as Festival's kal_diphone and
# cmu_us_slt_arctic_hts: only awb and rms are other speakers; rms is trained on, awb held out.
DEFAULT_VOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "espeak": {"train": (), "val": VAL_VARIANTS, "test": TEST_VARIANTS},
    "festival": {"train": ("kal_diphone", "ked_diphone"), "val": ("kal_diphone", "ked_diphone"), "test": ("cmu_us_slt_arctic_hts",)},
    "flite": {"train": ("rms",), "val": ("rms",), "test": ("awb",)},
    "piper": {"train": ("en_US-joe-medium",), "val": ("en_US-joe-medium",), "test": ()},
    "pico": {"train": ("en-GB", "en-US"), "val": ("en-GB", "en-US"), "test": ()},
}
_ROLES = ("train", "val", "test")

# Shares of the training (and val) utterances per engine, among the engines found. eSpeak NG brings
# the speakers (8 accents x 32 training variants) but one kind of synthesis (formants); Festival's
# diphone voices bring speech made of human recordings but only two (male) speakers; Flite's rms
# brings vocoded statistical parametric speech, the kind the unseen HTS test voice is. Adding rms
# (a quarter, from Festival's half) took that voice from 43.5% to 34.8% CER and the held-out eSpeak
# NG voices from 15.2% to 10.9% (benchmarks/speech.py, docs/speech.md). Pico's two women's voices
# (statistical parametric too) took the HTS voice from 35.4% to 25.7% with a sixth (Festival and
# Flite a sixth each) and to 25.2% with a quarter (Festival and Flite an eighth each), the held-out
# eSpeak NG voices from 7.8% to 7.2 / 7.0% (runs U, V, W). Where Pico is not installed the others
# share its part (eSpeak NG 2/3, Festival and Flite 1/6 each: not measured; the mix measured before
# Pico is engine_weights={espeak: 0.5, festival: 0.25, flite: 0.25}). eSpeak NG keeps half of the
# corpus, 10,000 utterances in the full config: a third each (before Pico) left the HTS voice where
# it was (35.1%) and took the held-out eSpeak NG voices to 19.3%. Piper's neural voice gets no share:
# an eighth of training (from Festival's quarter) took the HTS voice from 33.9% to 36.9% (runs P and
# Q, docs/speech.md).
TRAIN_WEIGHTS = {"espeak": 0.5, "festival": 0.125, "flite": 0.125, "pico": 0.25}  # an engine not named: no share
# Shares of the test splits: half the held-out eSpeak NG variants (comparable with earlier runs), a
# quarter each the unseen Festival voice and the unseen Flite voice.
TEST_WEIGHTS = {"espeak": 0.5, "festival": 0.25, "flite": 0.25}

_DIGITS = "0123456789"


def _pair(value: Sequence[float], name: str, valid: tuple[float, float]) -> None:
    lo, hi = value
    if not valid[0] <= lo <= hi <= valid[1]:
        raise ValueError(f"{name}=({lo}, {hi}) must be a range (low <= high) within {valid}")


@dataclass
class CorpusSpec:
    """Everything the generated corpus depends on (its hash, with the engines and voices found
    here, names the cache folder).

    ``engines``: ``"auto"`` (every engine installed) or a list of names (each must be installed);
    ``engine_weights`` / ``test_weights``: each engine's share of the train and val / the test
    splits (engines without voices in a split, or not found, drop out and the rest share it);
    ``voices``: ``{engine: {"train" | "val" | "test": [voices]}}`` replaces ``DEFAULT_VOICES``'
    lists (a voice heard in training cannot be a test voice too); ``test_sentences``: utterances of
    play lines in the ``test_sentences`` split (0: no such split; default half of ``test``);
    ``sentence_fraction``: the share of
    train and val texts that are lines of the other plays instead of word sequences. eSpeak NG's
    rate and pitch are drawn from ``speed`` (words/minute) and ``pitch`` (its 0-99 scale), the other
    engines' from ``speed_factor`` and ``pitch_factor`` (factors of each voice's own).
    ``made_up_speakers``: that many eSpeak NG variants drawn at random (``espeak_voices.py``,
    ``tzoo-000`` ...) join eSpeak NG's training voices (0 ... 256; val and test keep theirs)."""

    train: int = 20000
    val: int = 300
    test: int = 600
    test_sentences: int | None = None  # None: half of test
    seed: int = 0
    max_words: int = 12
    digit_fraction: float = 0.25
    sentence_fraction: float = 0.0
    engines: str | list[str] = "auto"
    engine_weights: dict[str, float] = field(default_factory=lambda: dict(TRAIN_WEIGHTS))
    test_weights: dict[str, float] = field(default_factory=lambda: dict(TEST_WEIGHTS))
    voices: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    speed: tuple[int, int] = (130, 220)
    pitch: tuple[int, int] = (30, 70)
    speed_factor: tuple[float, float] = (0.85, 1.2)
    pitch_factor: tuple[float, float] = (0.85, 1.2)
    snr_db: tuple[float, float] = (10.0, 30.0)
    sample_rate: int = 16000
    noise_files: list[str] = field(default_factory=list)
    made_up_speakers: int = 0

    def __post_init__(self) -> None:
        from tzoo.tasks.speech.engines import ENGINE_NAMES

        for name in ("train", "val", "test"):
            if getattr(self, name) < 1:
                raise ValueError(f"corpus split {name!r} needs >= 1 utterance, got {getattr(self, name)}")
        if self.test_sentences is None:
            self.test_sentences = self.test // 2
        if self.test_sentences < 0:
            raise ValueError(f"test_sentences must be >= 0 (0: no test_sentences split), got {self.test_sentences}")
        if not 1 <= self.max_words <= 50:
            raise ValueError(f"max_words must be in [1, 50], got {self.max_words}")
        for name in ("digit_fraction", "sentence_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        _pair(self.speed, "speed", (80, 450))
        _pair(self.pitch, "pitch", (0, 99))
        _pair(self.speed_factor, "speed_factor", (0.5, 2.0))
        _pair(self.pitch_factor, "pitch_factor", (0.5, 2.0))
        if self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"snr_db=({self.snr_db[0]}, {self.snr_db[1]}) must be a range (low <= high)")
        for what, table in (("engine_weights", self.engine_weights), ("test_weights", self.test_weights), ("voices", self.voices)):
            unknown = sorted(set(table) - set(ENGINE_NAMES))
            if unknown:
                raise ValueError(f"{what} names unknown engine(s) {unknown}; valid: {', '.join(ENGINE_NAMES)}")
        for what, table in (("engine_weights", self.engine_weights), ("test_weights", self.test_weights)):
            negative = {k: w for k, w in table.items() if not w >= 0}
            if negative:
                raise ValueError(f"{what} {negative}: a share must be >= 0")
        for engine, roles in self.voices.items():
            bad = sorted(set(roles) - set(_ROLES))
            if bad:
                raise ValueError(f"voices[{engine!r}] has role(s) {bad}; valid: {', '.join(_ROLES)}")
            both = sorted(set(roles.get("train", ())) & set(roles.get("test", ())))
            if both:
                raise ValueError(f"voices[{engine!r}]: {both} cannot be both training and test voices (the test must hear voices training did not)")
        espeak_voices.made_up_names(self.made_up_speakers)  # checks the number
        missing = [f for f in self.noise_files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"noise file(s) {missing} do not exist (noise_files: audio files to mix in as noise)")

    def resolved(self) -> dict[str, dict[str, tuple[str, ...]]]:
        """engine -> role -> voices, for the engines this spec uses here (``engines`` resolved);
        an engine without voices in any role drops out. A voice the spec names that its engine does
        not have is a ValueError listing the engine's voices; a default voice that is not
        installed is left out."""
        from tzoo.tasks.speech.engines import get_engine, resolve_engines

        out = {}
        for name in resolve_engines(self.engines):
            engine = get_engine(name)
            roles = {}
            for role in _ROLES:
                given = self.voices.get(name, {}).get(role)
                if given is not None:
                    for voice in given:
                        engine.check_voice(voice)
                    roles[role] = tuple(given)
                else:
                    default = _default_voices(name, role)
                    roles[role] = default if name == "espeak" else tuple(v for v in default if v in engine.voices())
                if name == "espeak" and role == "train":
                    roles[role] += espeak_voices.made_up_names(self.made_up_speakers)
            if any(roles.values()):
                out[name] = roles
        return out

    def key(self) -> str:
        """Names the cache folder: the spec, the engines and voices it resolves to here, which of
        those voices the engine can move in pitch, the word list and the test plays the texts are drawn from."""
        from tzoo.tasks.speech.engines import get_engine
        from tzoo.tasks.speech.sentences import TEST_PLAYS

        engines = self.engines if isinstance(self.engines, str) else sorted(self.engines)
        resolved = self.resolved()
        pitched = {}  # engine -> its voices here whose pitch it can move (their audio depends on it)
        for name, roles in resolved.items():
            pitched[name] = sorted({v for voices in roles.values() for v in voices if get_engine(name).varies_pitch(v)})
        described = {**asdict(self), "engines": engines, "resolved": resolved, "pitched": pitched, "words": WORDS, "test_plays": TEST_PLAYS}
        if self.made_up_speakers:  # and what they speak like
            described["made_up_version"] = espeak_voices.VERSION
        else:  # the field came later: corpora without made-up speakers keep their folders
            del described["made_up_speakers"]
        return hashlib.sha1(json.dumps(described, sort_keys=True).encode()).hexdigest()[:10]


def check_text(text: str, alphabet: str, where: str) -> str:
    """Lower-case ``text`` and check that every character is in ``alphabet``; ``where`` names its line."""
    text = " ".join(text.lower().split())
    bad = sorted({c for c in text if c not in alphabet})
    if bad:
        raise ValueError(
            f"{where}: text {text!r} has character(s) {', '.join(map(repr, bad))} outside the vocabulary "
            f"{alphabet!r} (remove them, or add them to the data's alphabet)"
        )
    if not text:
        raise ValueError(f"{where}: the transcript is empty")
    return text


# --- manifests ------------------------------------------------------------------------------------


def read_manifest(path: str | os.PathLike[str], alphabet: str = ALPHABET) -> list[dict[str, Any]]:
    """JSONL manifest -> entries with absolute ``audio`` paths (of existing files) and checked, lower-cased ``text``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {str(path)!r} does not exist")
    entries = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg}); each line must be one object like "
                                 '{"audio": "a.wav", "text": "...", "duration": 1.2}') from None
            if not isinstance(entry, dict) or not isinstance(entry.get("audio"), str) or not isinstance(entry.get("text"), str):
                raise ValueError(f"{where}: needs string fields 'audio' and 'text', got {line.strip()[:120]!r}")
            entry["text"] = check_text(entry["text"], alphabet, where)
            audio = Path(entry["audio"])
            entry["audio"] = str(audio if audio.is_absolute() else path.parent / audio)
            if not Path(entry["audio"]).is_file():  # found now, not when a batch first reaches it
                raise FileNotFoundError(f"{where}: audio file {entry['audio']!r} does not exist")
            entry.setdefault("duration", None)
            entries.append(entry)
    if not entries:
        raise ValueError(f"manifest {str(path)!r} has no entries")
    return entries


def write_manifest(path: str | os.PathLike[str], entries: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for entry in entries:
            f.write(json.dumps(entry) + "\n")


def read_librispeech(root: str | os.PathLike[str], alphabet: str = ALPHABET) -> list[dict[str, Any]]:
    """A LibriSpeech-style folder (``<speaker>/<chapter>/<id>.flac`` + ``*.trans.txt`` lines
    ``<id> <TEXT>``) -> manifest entries."""
    import soundfile

    root = Path(root)
    transcripts = sorted(root.rglob("*.trans.txt"))
    if not transcripts:
        raise FileNotFoundError(f"no *.trans.txt transcripts under {str(root)!r} (expected a LibriSpeech-style folder)")
    entries = []
    for trans in transcripts:
        for number, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            utt, _, text = line.partition(" ")
            audio = trans.parent / f"{utt}.flac"
            if not audio.is_file():
                raise FileNotFoundError(f"{trans}:{number}: audio file {str(audio)!r} does not exist")
            text = check_text(text, alphabet, f"{trans}:{number}")
            duration = soundfile.info(str(audio)).duration
            entries.append({"audio": str(audio), "text": text, "duration": duration, "voice": utt.split("-")[0]})
    return entries


# --- the generated corpus -------------------------------------------------------------------------


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), index])


def random_text(rng: np.random.Generator, *, max_words: int, digit_fraction: float) -> str:
    n = int(rng.integers(1, max_words + 1))
    if rng.random() < digit_fraction:
        return " ".join(_DIGITS[i] for i in rng.integers(0, 10, size=n))
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=n))


def split_variants(split: str) -> tuple[str, ...]:
    """eSpeak NG's default voice variants of a split (test_sentences: the test split's)."""
    from tzoo.tasks.speech.espeak import VARIANTS

    if split == "val":
        return VAL_VARIANTS
    if split in ("test", "test_sentences"):
        return TEST_VARIANTS
    held_out = set(VAL_VARIANTS) | set(TEST_VARIANTS)
    return tuple(v for v in VARIANTS if v not in held_out)


def _default_voices(engine: str, role: str) -> tuple[str, ...]:
    return split_variants(role) if engine == "espeak" else DEFAULT_VOICES[engine][role]


def _role(split: str) -> str:
    return "test" if split == "test_sentences" else split


def engine_schedule(weights: dict[str, float], n: int) -> list[str]:
    """The engine of each of ``n`` utterances: every engine's count within one of its share, spread
    evenly through the split (smooth weighted round robin), the same for any number of workers."""
    total = sum(weights.values())
    credit = dict.fromkeys(weights, 0.0)
    out = []
    for _ in range(n):
        for name, w in weights.items():
            credit[name] += w
        pick = max(credit, key=lambda name: credit[name])  # ties: the registry's order
        credit[pick] -= total
        out.append(pick)
    return out


def split_weights(spec: CorpusSpec, resolved: dict[str, dict[str, tuple[str, ...]]], split: str) -> dict[str, float]:
    """engine -> share of ``split``: the spec's weights of the engines that have voices for it."""
    table = spec.test_weights if _role(split) == "test" else spec.engine_weights
    weights = {name: float(table.get(name, 0.0)) for name, roles in resolved.items() if roles[_role(split)]}
    weights = {name: w for name, w in weights.items() if w > 0}
    if not weights:
        which = "test_weights" if _role(split) == "test" else "engine_weights"
        raise ValueError(
            f"no engine speaks the {split} split: {which}={table} and the voices per engine here are "
            f"{ {name: roles[_role(split)] for name, roles in resolved.items()} } (give a share to an engine with voices)"
        )
    return weights


@dataclass(frozen=True)
class _Job:
    """One utterance, everything drawn: what to synthesize and how to degrade it."""

    split: str
    index: int
    engine: str
    voice: str
    text: str
    speed: float
    pitch: float
    lead_s: float
    snr_db: float
    level: float
    noise_seed: int


def _text(rng: np.random.Generator, spec: CorpusSpec, split: str) -> str:
    from tzoo.tasks.speech.sentences import play_sentences

    min_words = min(4, spec.max_words)
    if split == "test_sentences":
        pool = play_sentences("test", min_words, spec.max_words)
        return pool[int(rng.integers(len(pool)))]
    if split in ("train", "val") and spec.sentence_fraction > 0 and rng.random() < spec.sentence_fraction:
        pool = play_sentences("train", min_words, spec.max_words)
        return pool[int(rng.integers(len(pool)))]
    return random_text(rng, max_words=spec.max_words, digit_fraction=spec.digit_fraction)


def _plan(spec: CorpusSpec, split: str, index: int, engine: str, voices: tuple[str, ...]) -> _Job:
    from tzoo.tasks.speech.engines import get_engine

    rng = _rng(spec.seed, split, index)
    text = _text(rng, spec, split)
    accents = get_engine(engine).accents
    accent = f"{accents[int(rng.integers(len(accents)))]}+" if accents else ""
    voice = accent + voices[int(rng.integers(len(voices)))]
    if engine == "espeak":  # its own units, as the corpus always drew them: words/minute, 0-99
        speed = int(rng.integers(spec.speed[0], spec.speed[1] + 1)) / 175
        pitch = int(rng.integers(spec.pitch[0], spec.pitch[1] + 1)) / 50
    else:
        speed = float(rng.uniform(*spec.speed_factor))
        pitch = float(rng.uniform(*spec.pitch_factor)) if get_engine(engine).varies_pitch(voice) else 1.0
    return _Job(split, index, engine, voice, text, speed, pitch, lead_s=float(rng.uniform(0.0, 0.25)),
                snr_db=float(rng.uniform(*spec.snr_db)), level=float(rng.uniform(0.3, 0.95)),
                noise_seed=int(rng.integers(2**63)))  # fmt: skip


_noise_cache: dict[str, np.ndarray] = {}


def _noise(rng: np.random.Generator, n: int, spec: CorpusSpec) -> np.ndarray:
    """n samples of noise: a segment of a noise file, or generated coloured noise (white noise
    through a random one-pole low-pass: from white to brown-ish)."""
    if spec.noise_files:
        from tzoo.tasks.speech.audio import load_audio

        name = spec.noise_files[int(rng.integers(len(spec.noise_files)))]
        if name not in _noise_cache:
            _noise_cache[name] = load_audio(name, spec.sample_rate).numpy()
        source = _noise_cache[name]
        reps = -(-n // len(source)) + 1
        start = int(rng.integers(len(source)))
        return np.tile(source, reps)[start : start + n].astype(np.float32)
    white = rng.standard_normal(n).astype(np.float32)
    pole = float(rng.uniform(0.0, 0.95))
    return _one_pole_lowpass(white, pole)


def _one_pole_lowpass(x: np.ndarray, pole: float) -> np.ndarray:
    """y[t] = (1 - pole) x[t] + pole y[t-1], from y[-1] = 0, computed in float64 (as scipy's
    ``lfilter([1 - pole], [1, -pole], x)`` is) and returned as float32."""
    import torch
    import torchaudio.functional as AF

    signal = torch.from_numpy(np.asarray(x, dtype=np.float64))
    a = torch.tensor([1.0, -pole], dtype=torch.float64)
    b = torch.tensor([1.0 - pole, 0.0], dtype=torch.float64)
    return AF.lfilter(signal, a, b, clamp=False).numpy().astype(np.float32)  # clamp: not to [-1, 1]


def _render(job: _Job, samples: np.ndarray, rate: int, spec: CorpusSpec, root: str) -> dict[str, Any]:
    """Synthesized samples -> the corpus's WAV (resampled, leading silence, noise at the job's SNR,
    the job's level) and its manifest entry."""
    import soundfile
    import torch
    import torchaudio.functional as AF

    wave = np.asarray(samples, dtype=np.float32)
    if rate != spec.sample_rate:
        wave = AF.resample(torch.from_numpy(wave), rate, spec.sample_rate).numpy()
    wave = np.concatenate([np.zeros(int(job.lead_s * spec.sample_rate), dtype=np.float32), wave])
    noise = _noise(np.random.default_rng(job.noise_seed), len(wave), spec)
    signal_power = float(np.mean(wave**2)) + 1e-12
    noise *= np.sqrt(signal_power / (10 ** (job.snr_db / 10)) / (float(np.mean(noise**2)) + 1e-12))
    wave = wave + noise
    wave *= job.level / (float(np.abs(wave).max()) + 1e-9)  # a random level
    name = f"{job.split}/{job.index:06d}.wav"
    soundfile.write(os.path.join(root, name), wave, spec.sample_rate, subtype="PCM_16")
    return {"audio": name, "text": job.text, "duration": round(len(wave) / spec.sample_rate, 4), "engine": job.engine,
            "voice": job.voice, "speed": round(job.speed, 4), "pitch": round(job.pitch, 4), "snr_db": round(job.snr_db, 2)}  # fmt: skip


def _make_chunk(task: tuple[CorpusSpec, str, list[_Job]]) -> list[dict[str, Any]]:
    """A chunk of one engine's jobs -> their entries (the engine synthesizes them as one batch)."""
    from tzoo.tasks.speech.engines import Request, get_engine

    spec, root, jobs = task
    engine = get_engine(jobs[0].engine)
    raw = engine.synthesize_many([Request(j.text, j.voice, j.speed, j.pitch) for j in jobs])
    return [_render(job, samples, rate, spec, root) for job, (samples, rate) in zip(jobs, raw)]


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # the workers are the parallelism


_CHUNK = 32  # utterances per task: one Festival process each (it costs ~0.25 s to start)


def report_groups(entry: dict[str, Any]) -> tuple[str, ...]:
    """The groups a test entry's error rates are reported in: ``(engine, engine/voice)``, the
    voice of eSpeak NG being its variant (the speaker; ``en-US+m3`` -> ``espeak/m3``); ``()`` for
    entries that do not say their engine (user manifests, LibriSpeech)."""
    engine = entry.get("engine")
    if not engine:
        return ()
    voice = str(entry.get("voice") or "?")
    return (engine, f"{engine}/{voice.split('+')[-1] if engine == 'espeak' else voice}")


def speaker_of(entry: dict[str, Any]) -> str | None:
    """Who speaks a manifest entry, for decoders that adapt per speaker (``warp_search_by``): its
    ``speaker`` field, else its engine and voice (``report_groups``: ``espeak/m3``), else its
    ``voice`` (LibriSpeech's speaker number); None when the entry does not say."""
    if entry.get("speaker") is not None:
        return str(entry["speaker"])
    groups = report_groups(entry)
    if groups:
        return groups[-1]
    return None if entry.get("voice") is None else str(entry["voice"])


def generate_corpus(root: str | os.PathLike[str], spec: CorpusSpec, *, workers: int = 1, verbose: bool = False) -> Path:
    """Write the corpus into ``root`` (unless a complete one with the same spec is there) -> root.

    It prints which engines it found and speaks with every one of them (``spec.engines="auto"``).
    Raises ``EspeakUnavailableError`` (saying how to install it) when eSpeak NG is missing, and
    ``EngineUnavailableError`` (with its install command) for a named engine that is missing."""
    from tzoo.tasks.speech.engines import ENGINE_NAMES, get_engine

    root = Path(root)
    done = root / "corpus.json"
    key = spec.key()
    if done.is_file() and json.loads(done.read_text()).get("key") == key:
        return root
    resolved = spec.resolved()
    sizes = {"train": spec.train, "val": spec.val, "test": spec.test, "test_sentences": spec.test_sentences}
    splits = [s for s in SPLITS if sizes[s] > 0]
    schedules = {s: engine_schedule(split_weights(spec, resolved, s), sizes[s]) for s in splits}
    if verbose:
        found = ", ".join(n if n == "espeak" else f"{n} ({', '.join(dict.fromkeys(v for r in _ROLES for v in resolved[n][r]))})"
                          for n in resolved)  # fmt: skip
        missing = [n for n in ENGINE_NAMES if n not in resolved]
        print(f"corpus: speech engines found: {found}" + (f"; not installed: {', '.join(missing)} "
              f"({'; '.join(f'`{get_engine(n).install_hint}`' for n in missing)})" if missing else ""))  # fmt: skip
        print(f"corpus: synthesizing {' + '.join(str(sizes[s]) for s in splits)} utterances ({', '.join(splits)}) into {root} (once; later runs reuse it)")
    start = time.perf_counter()
    counts: dict[str, dict[str, int]] = {}
    for split in splits:
        (root / split).mkdir(parents=True, exist_ok=True)
        role = _role(split)
        jobs = [_plan(spec, split, i, name, resolved[name][role]) for i, name in enumerate(schedules[split])]
        tasks = []
        for name in resolved:
            mine = [j for j in jobs if j.engine == name]
            tasks += [(spec, str(root), mine[i : i + _CHUNK]) for i in range(0, len(mine), _CHUNK)]
        if workers > 1:
            with ProcessPoolExecutor(workers, initializer=_worker_init) as pool:
                made = [e for chunk in pool.map(_make_chunk, tasks) for e in chunk]
        else:
            made = [e for task in tasks for e in _make_chunk(task)]
        entries = sorted(made, key=lambda e: e["audio"])  # the index order
        write_manifest(root / f"{split}.jsonl", entries)
        counts[split] = {name: sum(e["engine"] == name for e in entries) for name in resolved}
        if verbose:
            hours = sum(e["duration"] for e in entries) / 3600
            per_engine = ", ".join(f"{n} {c}" for n, c in counts[split].items() if c)
            print(f"corpus: {split}: {len(entries)} utterances ({per_engine}), {hours:.2f} h ({time.perf_counter() - start:.0f} s so far)")
    seconds = time.perf_counter() - start
    info = {"key": key, "spec": asdict(spec), "engines": resolved, "utterances": counts, "generation_seconds": round(seconds, 1)}
    done.write_text(json.dumps(info, indent=1))
    return root
