"""Reading audio for the model: any file soundfile reads (WAV, FLAC, OGG, ...), downmixed to mono and
resampled to the model's rate, with errors that name the file.

torchaudio's own ``load`` needs FFmpeg (torchcodec); soundfile does not.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor

__all__ = ["AUDIO_SUFFIXES", "load_audio", "to_model_rate"]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def load_audio(path: str | os.PathLike[str], sample_rate: int = 16000) -> Tensor:
    """-> (S,) float32 samples in [-1, 1] at ``sample_rate``. Stereo is averaged to mono and other
    rates are resampled, each with a warning that says so; a missing, unreadable or empty file is
    an error naming it."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {str(path)!r} does not exist")
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (S, C)
    except Exception as exc:  # soundfile raises its own LibsndfileError / RuntimeError / TypeError
        raise ValueError(
            f"cannot read audio file {str(path)!r}: {exc} (readable: WAV, FLAC, OGG and the other formats libsndfile knows)"
        ) from None
    if samples.shape[0] == 0:
        raise ValueError(f"audio file {str(path)!r} is empty (0 samples); a recording needs at least one frame of sound")
    finite = np.isfinite(samples).all(axis=1)
    if not finite.all():  # a float file can hold NaN / Inf, which would silently transcribe as nothing
        first, count = int(np.argmin(finite)), int((~finite).sum())
        raise ValueError(
            f"audio file {str(path)!r} has {count} sample{'s' if count > 1 else ''} that {'are' if count > 1 else 'is'} "
            f"NaN or infinite (the first at sample {first}, {first / rate:.3f} s): a recording must hold finite values"
        )
    if samples.shape[1] > 1:
        warnings.warn(f"{path.name}: {samples.shape[1]} channels downmixed to mono (their mean)", UserWarning, stacklevel=2)
    wave = torch.from_numpy(np.ascontiguousarray(samples.mean(axis=1)))  # (S,)
    return to_model_rate(wave, rate, sample_rate, name=path.name)


def to_model_rate(wave: Tensor, rate: int, sample_rate: int, *, name: str = "audio") -> Tensor:
    """Resample (S,) samples from ``rate`` to ``sample_rate`` (with a warning when they differ)."""
    if rate == sample_rate:
        return wave
    warnings.warn(f"{name}: sample rate {rate} Hz resampled to the model's {sample_rate} Hz", UserWarning, stacklevel=3)
    return AF.resample(wave, rate, sample_rate)
