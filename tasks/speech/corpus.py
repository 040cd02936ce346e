"""Speech corpora as JSONL manifests: the generated eSpeak NG corpus, user manifests, LibriSpeech.

A manifest has one JSON object per line: ``{"audio": path, "text": str, "duration": seconds,
"voice": str}`` (``audio`` relative to the manifest's folder, or absolute; ``voice`` optional).

The generated corpus (``generate_corpus``) writes, for each split, 16 kHz mono 16-bit WAV files
under ``<root>/<split>/`` and ``<root>/<split>.jsonl``. Texts are digit strings ("4 0 7") and
sentences drawn from ``WORDS``, 1 to ``max_words`` words. Each utterance has its own accent, voice
variant, speed, pitch, leading silence and additive noise at a random SNR, all drawn from the seed
and its index, so the corpus is the same whatever the number of worker processes (up to eSpeak NG's
own random voicing noise, which its API does not seed: samples differ slightly between runs). The voice
variants of the val and test splits are never heard in training (held-out speakers).
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

__all__ = [
    "ALPHABET",
    "TEST_VARIANTS",
    "VAL_VARIANTS",
    "WORDS",
    "CorpusSpec",
    "check_text",
    "generate_corpus",
    "read_librispeech",
    "read_manifest",
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

_DIGITS = "0123456789"


@dataclass
class CorpusSpec:
    """Everything the generated corpus depends on (its hash names the cache folder)."""

    train: int = 20000
    val: int = 300
    test: int = 600
    seed: int = 0
    max_words: int = 12
    digit_fraction: float = 0.25
    speed: tuple[int, int] = (130, 220)
    pitch: tuple[int, int] = (30, 70)
    snr_db: tuple[float, float] = (10.0, 30.0)
    sample_rate: int = 16000
    noise_files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("train", "val", "test"):
            if getattr(self, name) < 1:
                raise ValueError(f"corpus split {name!r} needs >= 1 utterance, got {getattr(self, name)}")
        if not 1 <= self.max_words <= 50:
            raise ValueError(f"max_words must be in [1, 50], got {self.max_words}")
        if not 0.0 <= self.digit_fraction <= 1.0:
            raise ValueError(f"digit_fraction must be in [0, 1], got {self.digit_fraction}")
        for name, (lo, hi), valid in (("speed", self.speed, (80, 450)), ("pitch", self.pitch, (0, 99))):
            if not valid[0] <= lo <= hi <= valid[1]:
                raise ValueError(f"{name}=({lo}, {hi}) must be a range (low <= high) within {valid}")
        if self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"snr_db=({self.snr_db[0]}, {self.snr_db[1]}) must be a range (low <= high)")
        missing = [f for f in self.noise_files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"noise file(s) {missing} do not exist (noise_files: audio files to mix in as noise)")

    def key(self) -> str:
        """Names the cache folder: the spec and the word list the texts are drawn from."""
        return hashlib.sha1(json.dumps({**asdict(self), "words": WORDS}, sort_keys=True).encode()).hexdigest()[:10]


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
    return np.random.default_rng([seed, ("train", "val", "test").index(split), index])


def random_text(rng: np.random.Generator, *, max_words: int, digit_fraction: float) -> str:
    n = int(rng.integers(1, max_words + 1))
    if rng.random() < digit_fraction:
        return " ".join(_DIGITS[i] for i in rng.integers(0, 10, size=n))
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=n))


def split_variants(split: str) -> tuple[str, ...]:
    from tzoo.tasks.speech.espeak import VARIANTS

    if split == "val":
        return VAL_VARIANTS
    if split == "test":
        return TEST_VARIANTS
    held_out = set(VAL_VARIANTS) | set(TEST_VARIANTS)
    return tuple(v for v in VARIANTS if v not in held_out)


_synth: Any = None  # one synthesizer per worker process
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


def _make_utterance(job: tuple[CorpusSpec, str, int, str]) -> dict[str, Any]:
    global _synth
    import soundfile
    import torch
    import torchaudio.functional as AF

    from tzoo.tasks.speech.espeak import ACCENTS, Synthesizer

    spec, split, index, root = job
    if _synth is None:
        torch.set_num_threads(1)
        _synth = Synthesizer()
    rng = _rng(spec.seed, split, index)
    text = random_text(rng, max_words=spec.max_words, digit_fraction=spec.digit_fraction)
    variants = split_variants(split)
    voice = f"{ACCENTS[int(rng.integers(len(ACCENTS)))]}+{variants[int(rng.integers(len(variants)))]}"
    speed = int(rng.integers(spec.speed[0], spec.speed[1] + 1))
    pitch = int(rng.integers(spec.pitch[0], spec.pitch[1] + 1))
    samples = _synth.synthesize(text, voice, speed=speed, pitch=pitch)
    wave = torch.from_numpy(samples.astype(np.float32) / 32768.0)
    wave = AF.resample(wave, _synth.sample_rate, spec.sample_rate).numpy()
    lead = np.zeros(int(rng.uniform(0.0, 0.25) * spec.sample_rate), dtype=np.float32)
    wave = np.concatenate([lead, wave])
    snr = float(rng.uniform(*spec.snr_db))
    noise = _noise(rng, len(wave), spec)
    signal_power = float(np.mean(wave**2)) + 1e-12
    noise *= np.sqrt(signal_power / (10 ** (snr / 10)) / (float(np.mean(noise**2)) + 1e-12))
    wave = wave + noise
    wave *= float(rng.uniform(0.3, 0.95)) / (float(np.abs(wave).max()) + 1e-9)  # a random level
    name = f"{split}/{index:06d}.wav"
    soundfile.write(os.path.join(root, name), wave, spec.sample_rate, subtype="PCM_16")
    return {"audio": name, "text": text, "duration": round(len(wave) / spec.sample_rate, 4), "voice": voice,
            "speed": speed, "pitch": pitch, "snr_db": round(snr, 2)}


def generate_corpus(root: str | os.PathLike[str], spec: CorpusSpec, *, workers: int = 1, verbose: bool = False) -> Path:
    """Write the corpus into ``root`` (unless a complete one with the same spec is there) -> root.

    Raises ``EspeakUnavailableError`` (saying how to install it) when eSpeak NG is missing."""
    from tzoo.tasks.speech.espeak import Synthesizer

    root = Path(root)
    done = root / "corpus.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == spec.key():
        return root
    Synthesizer()  # fails early, with the install hint, when eSpeak NG is missing
    if verbose:
        print(f"corpus: synthesizing {spec.train} + {spec.val} + {spec.test} utterances with eSpeak NG into {root} (once; later runs reuse it)")
    start = time.perf_counter()
    for split in ("train", "val", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
        jobs = [(spec, split, i, str(root)) for i in range(getattr(spec, split))]
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                entries = list(pool.map(_make_utterance, jobs, chunksize=64))
        else:
            entries = [_make_utterance(job) for job in jobs]
        write_manifest(root / f"{split}.jsonl", entries)
        if verbose:
            hours = sum(e["duration"] for e in entries) / 3600
            print(f"corpus: {split}: {len(entries)} utterances, {hours:.2f} h ({time.perf_counter() - start:.0f} s so far)")
    seconds = time.perf_counter() - start
    done.write_text(json.dumps({"key": spec.key(), "spec": asdict(spec), "generation_seconds": round(seconds, 1)}, indent=1))
    return root
