"""SVOX Pico (the text to speech of Android's early years) as a corpus engine, from PyPI's ``ttspico``.

Pico is a statistical parametric synthesizer: HMM-generated spectra and pitch through its own
vocoder, the kind Festival's unseen HTS test voice is, but another engine and other speakers. Its
English voices are two women, ``en-US`` (``lh0``) and ``en-GB`` (``kh0``); every other voice the
corpus trains on outside eSpeak NG is a man's. ``ttspico`` builds Pico's C library from source
(``pip install ttspico``: a C compiler is needed) and ships its language files; this engine also
looks in ``/usr/share/pico/lang`` (Debian's non-free ``libttspico-data``).

A voice is a language code. ``speed`` and ``pitch`` are Pico's ``rate`` and ``pitch`` properties (per
cent of the voice's own, whole numbers). Pico says digits as words, "0" as "zero" (as long as "four
zero seven" for "4 0 7", not "four oh seven": tested). Its excitation has a random part: two syntheses
of one text are equally long but not the same samples.
"""

from __future__ import annotations

import importlib.util
from functools import cached_property
from pathlib import Path

import numpy as np

from tzoo.tasks.speech.engines import Engine

__all__ = ["PicoEngine"]

RATE = 16000  # Pico speaks 16 kHz, 16-bit mono
_SYSTEM_LANG = Path("/usr/share/pico/lang")


class PicoEngine(Engine):
    """Pico's English voices through ``ttspico``, one Pico engine per voice and process."""

    name = "pico"
    install_hint = "pip install ttspico (builds Pico's C library: needs a C compiler)"
    pitch_range = (0.5, 2.0)  # Pico's pitch goes from 50 to 200%; it refuses others without saying which

    def __init__(self) -> None:
        self._loaded: dict[str, object] = {}

    @cached_property
    def _folders(self) -> dict[str, Path]:
        """voice -> the folder with its two language files (``<voice>_ta.bin`` and
        ``<voice>_<speaker>_sg.bin``); none without ttspico."""
        if importlib.util.find_spec("ttspico") is None:
            return {}
        import ttspico

        found: dict[str, Path] = {}
        for folder in (_SYSTEM_LANG, Path(ttspico._LANG_DIR)):
            for speaker in sorted(folder.glob("en-*_sg.bin")) if folder.is_dir() else ():
                voice = speaker.name.split("_")[0]
                if (folder / f"{voice}_ta.bin").is_file():
                    found.setdefault(voice, folder)
        return dict(sorted(found.items()))

    def is_available(self) -> bool:
        return bool(self._folders)

    def voices(self) -> tuple[str, ...]:
        return tuple(self._folders)

    def synthesize(self, text: str, voice: str, *, speed: float = 1.0, pitch: float = 1.0) -> tuple[np.ndarray, int]:
        self.check_voice(voice)
        self.check_prosody(voice, speed, pitch)
        engine = self._engine(voice)
        engine.rate, engine.pitch = round(100 * speed), round(100 * pitch)
        pcm = engine.speak(text)
        if not pcm:
            raise RuntimeError(f"pico voice {voice!r} made no audio for {text!r}")
        return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0, RATE

    def _engine(self, voice: str):
        """The voice's Pico engine, made once per process."""
        if voice not in self._loaded:
            from ttspico import TtsEngine

            self._loaded[voice] = TtsEngine(voice, lang_dir=f"{self._folders[voice]}/")
        return self._loaded[voice]
