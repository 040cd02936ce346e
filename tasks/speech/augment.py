"""Acoustic realism for the speech task's training waveforms: speed, room reverberation, noise,
babble, a telephone channel and gain. Every one is off by default (probability ``p = 0``).

Configured by ``SpeechDataModule(augment=WaveAugment(...))``, from YAML as::

    data:
      init_args:
        augment:
          speed: {p: 0.5, factors: [0.9, 1.1]}
          reverb: {p: 0.3, rt60: [0.2, 0.8]}
          noise: {p: 0.3, snr_db: [5, 20]}
          babble: {p: 0.2, talkers: [3, 6], snr_db: [5, 20]}
          telephone: {p: 0.1}
          gain: {p: 0.5, db: [-12, 6]}

Applied in that order to a training utterance, each with its own probability:

* ``speed``: resampled by a factor from ``factors`` (``torchaudio.functional.speed``: faster and
  higher, as Kaldi's 3-way speed perturbation; 1.1 makes it 1/1.1 as long). The factor is drawn per
  *batch*, so the utterances of a length bucket keep similar lengths.
* ``reverb``: convolved (``fftconvolve``) with a room impulse response, simulated (``rir.py``: a
  shoebox room of ``room`` x ``room`` x 2.4-4 m, RT60 uniform in ``rt60``) or one of ``ir_files``
  when given. The response starts at its direct sound (its peak, for a file) scaled to 1, and the
  reverberant utterance keeps the original length (the tail past its end is cut).
* ``noise``: coloured noise (white noise through a one-pole low-pass of random pole, as the
  generated corpus mixes in) or a random stretch of one of ``files``, at an SNR uniform in ``snr_db``.
* ``babble``: 3-6 (``talkers``) other training utterances, each at the same level, summed and mixed
  at an SNR uniform in ``snr_db``.
* ``telephone``: an 8 kHz, 8-bit mu-law (G.711) path with a 300-3400 Hz band-pass (edges uniform in
  ``low_hz`` / ``high_hz``), back to the model's rate: nothing above 4 kHz is left.
* ``gain``: scaled by a gain uniform in ``db`` (not clipped: the front end takes any level).

Files (``reverb.ir_files``, ``noise.files``) must exist when configured and are read once, when the
training loader is built: an unreadable or silent one is an error naming it, one of another sample rate is resampled to the
model's with a warning that says so (as ``audio.load_audio`` does for any audio).

Randomness: what happens to utterance ``i`` in epoch ``e`` comes from a NumPy generator keyed by
``(data seed, seed_everything, e, augmentation, i)`` (the batch for ``speed``), never from a global
or per-worker state: the same with any number of loader workers, the same in a run resumed at an
epoch boundary (with loader workers, not in its first epoch: docs/speech.md), and switching one
augmentation on or off leaves what the others do unchanged. The epoch is the one
``LengthBucketSampler`` shuffles with; ``EpochTagged`` hands it to the dataset with each index.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from tzoo.tasks.speech.rir import simulate_rir

__all__ = [
    "Augmenter",
    "AugmentedSpeech",
    "Babble",
    "EpochTagged",
    "Gain",
    "Noise",
    "Reverb",
    "Speed",
    "Telephone",
    "WaveAugment",
    "augmented",
    "change_speed",
    "coloured_noise",
    "gain",
    "mix_at_snr",
    "reverberate",
    "telephone",
]

TELEPHONE_RATE = 8000


# --- configuration --------------------------------------------------------------------------------


def _check_p(where: str, p: float) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{where}.p must be a probability in [0, 1], got {p!r}")


def _check_range(where: str, value: Sequence[float], valid: tuple[float, float]) -> tuple[float, float]:
    if len(value) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
        raise ValueError(f"{where} must be two numbers [low, high] within {list(valid)}, got {list(value)!r}")
    low, high = float(value[0]), float(value[1])
    if not valid[0] <= low <= high <= valid[1]:
        raise ValueError(f"{where}=[{low:g}, {high:g}] must be a range (low <= high) within {list(valid)}")
    return low, high


def _check_files(where: str, files: Sequence[str]) -> list[str]:
    missing = [f for f in files if not Path(f).expanduser().is_file()]
    if missing:
        raise FileNotFoundError(f"{where}: file(s) {missing} do not exist (give audio files: WAV, FLAC, ...)")
    return [str(Path(f).expanduser()) for f in files]


@dataclass
class Speed:
    """Speed perturbation: with probability ``p`` per batch, one of ``factors`` (> 1: faster)."""

    p: float = 0.0
    factors: list[float] = field(default_factory=lambda: [0.9, 1.1])

    def __post_init__(self) -> None:
        _check_p("augment.speed", self.p)
        bad = [f for f in self.factors if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.5 <= f <= 2.0]
        if not self.factors or bad:
            raise ValueError(f"augment.speed.factors must be one or more numbers in [0.5, 2.0], got {list(self.factors)!r}")
        self.factors = [float(f) for f in self.factors]


@dataclass
class Reverb:
    """Room reverberation: RT60 in seconds, floor sides in metres, or impulse-response files."""

    p: float = 0.0
    rt60: tuple[float, float] = (0.2, 0.8)
    room: tuple[float, float] = (3.0, 10.0)
    ir_files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_p("augment.reverb", self.p)
        self.rt60 = _check_range("augment.reverb.rt60", self.rt60, (0.05, 3.0))
        self.room = _check_range("augment.reverb.room", self.room, (1.5, 50.0))
        self.ir_files = _check_files("augment.reverb.ir_files", self.ir_files)


@dataclass
class Noise:
    """Additive noise at an SNR (dB): coloured noise, or stretches of ``files`` when given."""

    p: float = 0.0
    snr_db: tuple[float, float] = (5.0, 20.0)
    files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_p("augment.noise", self.p)
        self.snr_db = _check_range("augment.noise.snr_db", self.snr_db, (-30.0, 100.0))
        self.files = _check_files("augment.noise.files", self.files)


@dataclass
class Babble:
    """Other training utterances (``talkers``: how many, a range) mixed in at an SNR (dB)."""

    p: float = 0.0
    talkers: tuple[int, int] = (3, 6)
    snr_db: tuple[float, float] = (5.0, 20.0)

    def __post_init__(self) -> None:
        _check_p("augment.babble", self.p)
        low, high = _check_range("augment.babble.talkers", self.talkers, (1, 32))
        if low != int(low) or high != int(high):
            raise ValueError(f"augment.babble.talkers must be whole numbers, got {list(self.talkers)!r}")
        self.talkers = (int(low), int(high))
        self.snr_db = _check_range("augment.babble.snr_db", self.snr_db, (-30.0, 100.0))


@dataclass
class Telephone:
    """The 8 kHz mu-law telephone channel; its band-pass edges (Hz) are drawn from these ranges."""

    p: float = 0.0
    low_hz: tuple[float, float] = (200.0, 400.0)
    high_hz: tuple[float, float] = (3000.0, 3600.0)

    def __post_init__(self) -> None:
        _check_p("augment.telephone", self.p)
        self.low_hz = _check_range("augment.telephone.low_hz", self.low_hz, (20.0, 1000.0))
        self.high_hz = _check_range("augment.telephone.high_hz", self.high_hz, (1000.0, 3900.0))


@dataclass
class Gain:
    """A level change in dB."""

    p: float = 0.0
    db: tuple[float, float] = (-12.0, 6.0)

    def __post_init__(self) -> None:
        _check_p("augment.gain", self.p)
        self.db = _check_range("augment.gain.db", self.db, (-60.0, 40.0))


@dataclass
class WaveAugment:
    """The training-time waveform augmentations, in the order they are applied (module docstring)."""

    speed: Speed = field(default_factory=Speed)
    reverb: Reverb = field(default_factory=Reverb)
    noise: Noise = field(default_factory=Noise)
    babble: Babble = field(default_factory=Babble)
    telephone: Telephone = field(default_factory=Telephone)
    gain: Gain = field(default_factory=Gain)

    @property
    def enabled(self) -> bool:
        """Whether any augmentation may fire (all off: the training data are left untouched)."""
        return any(getattr(self, f.name).p > 0 for f in fields(self))


# --- what each augmentation computes (S samples in, (S',) out) ------------------------------------


def change_speed(wave: Tensor, sample_rate: int, factor: float) -> Tensor:
    """(S,) -> (ceil(S / factor),): played ``factor`` times faster (and higher)."""
    return wave if factor == 1.0 else AF.speed(wave, sample_rate, factor)[0]


def reverberate(wave: Tensor, rir: Tensor) -> Tensor:
    """(S,) convolved with an impulse response (K,) -> (S,) (its tail past the end cut). The
    response is padded with zeros to make the FFT's length a power of two: S + K - 1 can be a
    large prime, whose FFT took 26 ms against 3.4 ms for 3 s of audio and a 0.8 s response."""
    size = 1 << (wave.shape[-1] + rir.shape[-1] - 2).bit_length()  # >= S + K - 1
    rir = torch.nn.functional.pad(rir.to(wave.dtype), (0, size - wave.shape[-1] + 1 - rir.shape[-1]))
    return AF.fftconvolve(wave, rir)[: wave.shape[-1]]


def coloured_noise(rng: np.random.Generator, n: int) -> Tensor:
    """(n,) white noise through a one-pole low-pass of random pole (white to brown-ish), as the
    generated corpus mixes in."""
    from tzoo.tasks.speech.corpus import _one_pole_lowpass

    white = rng.standard_normal(n).astype(np.float32)
    return torch.from_numpy(_one_pole_lowpass(white, float(rng.uniform(0.0, 0.95))))


def mix_at_snr(wave: Tensor, noise: Tensor, snr_db: float) -> Tensor:
    """(S,) + (S,) noise scaled so that the power ratio wave : noise is ``snr_db``; silence in
    either leaves ``wave`` as it is."""
    if not (wave.square().sum() > 0 and noise.square().sum() > 0):
        return wave
    return AF.add_noise(wave[None], noise[None].to(wave.dtype), torch.tensor([snr_db], dtype=wave.dtype))[0]


def telephone(wave: Tensor, sample_rate: int, *, low_hz: float = 300.0, high_hz: float = 3400.0) -> Tensor:
    """(S,) -> (S,) through a telephone channel: down to 8 kHz, band-pass ``low_hz``-``high_hz``
    (two biquads at each edge: 24 dB per octave), 8-bit mu-law (G.711) and back up."""
    narrow = AF.resample(wave, sample_rate, TELEPHONE_RATE)
    for _ in range(2):
        narrow = AF.highpass_biquad(narrow, TELEPHONE_RATE, low_hz)
        narrow = AF.lowpass_biquad(narrow, TELEPHONE_RATE, high_hz)
    narrow = AF.mu_law_decoding(AF.mu_law_encoding(narrow.clamp(-1.0, 1.0), 256), 256)
    back = AF.resample(narrow, TELEPHONE_RATE, sample_rate)
    if back.shape[-1] < wave.shape[-1]:
        back = torch.nn.functional.pad(back, (0, wave.shape[-1] - back.shape[-1]))
    return back[: wave.shape[-1]]


def gain(wave: Tensor, db: float) -> Tensor:
    """(S,) scaled by ``db`` decibels (amplitude x 10^(db / 20))."""
    return wave * (10.0 ** (db / 20.0))


def _stretch(rng: np.random.Generator, source: Tensor, n: int) -> Tensor:
    """(n,) from a random place in ``source``, repeated as often as needed."""
    reps = -(-n // source.shape[-1]) + 1
    start = int(rng.integers(source.shape[-1]))
    return source.repeat(reps)[start : start + n]


# --- applying a configuration to training utterances ---------------------------------------------

# which stream of random numbers each augmentation draws from (part of the key)
_STREAMS = {"speed": 0, "reverb": 1, "noise": 2, "babble": 3, "telephone": 4, "gain": 5}


def _read_files(where: str, files: Sequence[str], sample_rate: int, kind: str) -> list[Tensor]:
    from tzoo.tasks.speech.audio import load_audio

    out = []
    for name in files:
        try:
            wave = load_audio(name, sample_rate)
        except (OSError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
        if not wave.abs().max() > 0:
            raise ValueError(f"{where}: {kind} file {name!r} is silent (all samples 0); it would add nothing")
        out.append(wave)
    return out


def _impulse_response(wave: Tensor) -> Tensor:
    """A recorded impulse response from its peak (the direct sound) on, scaled so that the peak is 1."""
    peak = int(wave.abs().argmax())
    return wave[peak:] / wave[peak]


class Augmenter:
    """Applies a ``WaveAugment`` to training utterances of ``sample_rate`` Hz. ``key``: (data seed,
    run seed); ``talkers``: the training set (index -> (wave (S,), ...)) babble draws voices from."""

    def __init__(
        self,
        config: WaveAugment,
        sample_rate: int,
        *,
        key: Sequence[int] = (0, 0),
        talkers: Any = None,
    ) -> None:
        self.config, self.sample_rate = config, sample_rate
        self.key = [int(k) % 2**32 for k in key]
        self.talkers = talkers
        irs = _read_files("augment.reverb.ir_files", config.reverb.ir_files, sample_rate, "impulse-response")
        self.impulse_responses = [_impulse_response(w) for w in irs]
        self.noises = _read_files("augment.noise.files", config.noise.files, sample_rate, "noise")

    def _rng(self, name: str, epoch: int, item: int) -> np.random.Generator:
        return np.random.default_rng([*self.key, epoch, _STREAMS[name], item])

    def __call__(self, wave: Tensor, *, epoch: int, index: int, batch: int | None = None) -> Tensor:
        """(S,) utterance ``index`` of ``epoch`` (in the batch whose smallest index is ``batch``) ->
        (S',) augmented; S' = S unless the speed changes. Computed on one thread: FFTs and resampling
        then give the same bits in the main process as in a loader worker (which runs one thread)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._augment(wave, epoch=epoch, index=index, batch=batch)
        finally:
            torch.set_num_threads(threads)

    def _augment(self, wave: Tensor, *, epoch: int, index: int, batch: int | None) -> Tensor:
        c = self.config
        out = wave
        if c.speed.p > 0:
            rng = self._rng("speed", epoch, index if batch is None else batch)
            if rng.random() < c.speed.p:
                out = change_speed(out, self.sample_rate, float(rng.choice(c.speed.factors)))
        if c.reverb.p > 0 and (rng := self._rng("reverb", epoch, index)).random() < c.reverb.p:
            if self.impulse_responses:
                rir = self.impulse_responses[int(rng.integers(len(self.impulse_responses)))]
            else:
                rt60 = float(rng.uniform(*c.reverb.rt60))
                rir = torch.from_numpy(simulate_rir(rng, self.sample_rate, rt60=rt60, room=c.reverb.room))
            out = reverberate(out, rir)
        if c.noise.p > 0 and (rng := self._rng("noise", epoch, index)).random() < c.noise.p:
            snr = float(rng.uniform(*c.noise.snr_db))
            if self.noises:
                noise = _stretch(rng, self.noises[int(rng.integers(len(self.noises)))], out.shape[-1])
            else:
                noise = coloured_noise(rng, out.shape[-1])
            out = mix_at_snr(out, noise, snr)
        if c.babble.p > 0 and (rng := self._rng("babble", epoch, index)).random() < c.babble.p:
            out = self._babble(rng, out, index)
        if c.telephone.p > 0 and (rng := self._rng("telephone", epoch, index)).random() < c.telephone.p:
            low, high = float(rng.uniform(*c.telephone.low_hz)), float(rng.uniform(*c.telephone.high_hz))
            out = telephone(out, self.sample_rate, low_hz=low, high_hz=high)
        if c.gain.p > 0 and (rng := self._rng("gain", epoch, index)).random() < c.gain.p:
            out = gain(out, float(rng.uniform(*c.gain.db)))
        return out

    def _babble(self, rng: np.random.Generator, wave: Tensor, index: int) -> Tensor:
        """``wave`` + other training utterances (each at unit power, summed) at a random SNR."""
        others = 0 if self.talkers is None else len(self.talkers) - 1
        if others < 1:
            return wave
        snr = float(rng.uniform(*self.config.babble.snr_db))
        count = min(others, int(rng.integers(self.config.babble.talkers[0], self.config.babble.talkers[1] + 1)))
        picks = rng.choice(others, size=count, replace=False)
        crowd = torch.zeros_like(wave)
        for j in picks:
            voice = self.talkers[int(j) + int(j >= index)][0]  # any utterance but this one
            voice = _stretch(rng, voice, wave.shape[-1])
            power = voice.square().mean()
            if power > 0:
                crowd += voice / power.sqrt()
        return mix_at_snr(wave, crowd, snr)


class AugmentedSpeech(Dataset):
    """A speech dataset (index -> (wave (S,), tokens, ...)) whose waves are augmented; indexed by the
    ``(epoch, index, batch)`` tags ``EpochTagged`` samples."""

    def __init__(self, data: Any, augmenter: Augmenter) -> None:
        self.data, self.augmenter = data, augmenter

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, tag: tuple[int, int, int]) -> tuple[Any, ...]:
        epoch, index, batch = tag
        wave, *rest = self.data[index]
        return self.augmenter(wave, epoch=epoch, index=index, batch=batch), *rest


class EpochTagged(Sampler[list[tuple[int, int, int]]]):
    """Wraps a batch sampler with ``epoch_batches()`` (``LengthBucketSampler``): each index goes
    out as ``(epoch, index, smallest index of its batch)``, so that the dataset, in whichever worker
    process, knows which epoch and batch an item belongs to."""

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        epoch, batches = self.sampler.epoch_batches()  # the epoch this pass shuffles with
        for batch in batches:
            first = min(batch)
            yield [(epoch, i, first) for i in batch]


def augmented(data: Any, sampler: Any, config: WaveAugment, *, sample_rate: int, key: Sequence[int]) -> tuple[AugmentedSpeech, EpochTagged]:
    """The training dataset and batch sampler with ``config``'s augmentations (files read now)."""
    augmenter = Augmenter(config, sample_rate, key=key, talkers=data)
    return AugmentedSpeech(data, augmenter), EpochTagged(sampler)
