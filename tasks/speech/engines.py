"""Speech synthesizers behind one small interface, and the registry the generated corpus picks from.

An engine turns a text into samples with one of its voices, at a speaking rate and a pitch given as
factors of the voice's own (1.0 = as the voice speaks by default); each engine maps them onto its
controls. Built in: eSpeak NG (``espeak``, formant synthesis, always there through the
``espeakng-loader`` wheel), Festival (``festival``, recorded diphones and an HTS voice) and Flite
(``flite``, Festival's small sibling), both from Debian's packages when installed, Piper
(``piper``, neural voices: the ``piper-tts`` wheel and a voice) and SVOX Pico (``pico``, two women's
statistical parametric voices: the ``ttspico`` package) when installed.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import ClassVar

import numpy as np

__all__ = [
    "ENGINE_NAMES",
    "CommandEngine",
    "Engine",
    "EngineUnavailableError",
    "Request",
    "available_engines",
    "get_engine",
    "resolve_engines",
]

ENGINE_NAMES = ("espeak", "festival", "flite", "piper", "pico")  # the registry's order: the corpus's order


class EngineUnavailableError(RuntimeError):
    """An engine that was asked for by name is not installed (the message says how to install it)."""


@dataclass(frozen=True)
class Request:
    """One utterance to synthesize: ``speed`` and ``pitch`` are factors of the voice's own."""

    text: str
    voice: str
    speed: float = 1.0
    pitch: float = 1.0


class Engine(ABC):
    """A speech synthesizer: ``voices()`` it can speak with, ``synthesize`` one text or
    ``synthesize_many`` (engines with a costly start override it to start once per batch)."""

    name: ClassVar[str]
    install_hint: ClassVar[str]  # the command that installs it
    accents: ClassVar[tuple[str, ...]] = ()  # eSpeak NG: a voice is <accent>+<voice>
    pitch_range: ClassVar[tuple[float, float]] = (0.25, 4.0)  # the pitch factors it takes

    @abstractmethod
    def is_available(self) -> bool:
        """Whether the engine (and at least one voice) is installed here."""

    @abstractmethod
    def voices(self) -> tuple[str, ...]:
        """The voices installed (eSpeak NG: its voice variants, spoken in any of ``accents``)."""

    @abstractmethod
    def synthesize(self, text: str, voice: str, *, speed: float = 1.0, pitch: float = 1.0) -> tuple[np.ndarray, int]:
        """-> (samples (S,) float32 in [-1, 1], sample rate)."""

    def synthesize_many(self, requests: Sequence[Request]) -> list[tuple[np.ndarray, int]]:
        return [self.synthesize(r.text, r.voice, speed=r.speed, pitch=r.pitch) for r in requests]

    def check_voice(self, voice: str) -> None:
        """A ValueError naming ``voice`` and the valid ones, unless this engine has it."""
        if voice not in self.voices():
            raise ValueError(f"{self.name} has no voice {voice!r}; its voices here: {', '.join(self.voices())}")

    def varies_pitch(self, voice: str) -> bool:
        """Whether ``synthesize`` can move this voice's pitch (False: ``pitch`` must be 1.0)."""
        return True

    def check_prosody(self, voice: str, speed: float, pitch: float) -> None:
        if not 0.25 <= speed <= 4.0:
            raise ValueError(f"{self.name}: speed={speed} is outside [0.25, 4] (a factor of the voice's own speaking rate)")
        low, high = self.pitch_range
        if not low <= pitch <= high:
            raise ValueError(f"{self.name}: pitch={pitch} is outside [{low:g}, {high:g}] (a factor of the voice's own pitch)")
        if pitch != 1.0 and not self.varies_pitch(voice):
            raise ValueError(f"{self.name} cannot change the pitch of voice {voice!r}: pitch must be 1.0, got {pitch}")

    def unavailable(self) -> EngineUnavailableError:
        return EngineUnavailableError(f"the speech engine {self.name!r} is not installed here; install it with `{self.install_hint}`")


def _classes() -> dict[str, type[Engine]]:
    from tzoo.tasks.speech.espeak import EspeakEngine
    from tzoo.tasks.speech.festival import FestivalEngine
    from tzoo.tasks.speech.flite import FliteEngine
    from tzoo.tasks.speech.pico import PicoEngine
    from tzoo.tasks.speech.piper import PiperEngine

    return {"espeak": EspeakEngine, "festival": FestivalEngine, "flite": FliteEngine, "piper": PiperEngine, "pico": PicoEngine}


@cache
def get_engine(name: str) -> Engine:
    """The process's one engine called ``name`` (a ValueError for an unknown name)."""
    if name not in ENGINE_NAMES:
        raise ValueError(f"unknown speech engine {name!r}; valid: {', '.join(ENGINE_NAMES)}")
    return _classes()[name]()


def available_engines() -> tuple[str, ...]:
    """The engines installed here, in the registry's order."""
    return tuple(name for name in ENGINE_NAMES if get_engine(name).is_available())


def resolve_engines(engines: str | Sequence[str]) -> tuple[str, ...]:
    """``"auto"`` -> every engine installed here (eSpeak NG must be: its error says how to install
    it); a list of names -> those names, each checked to be installed (``EngineUnavailableError``
    with its install command otherwise)."""
    if isinstance(engines, str):
        if engines != "auto":
            raise ValueError(f"engines={engines!r}: give 'auto' (every engine installed) or a list of names from {ENGINE_NAMES}")
        found = available_engines()
        if "espeak" not in found:
            raise get_engine("espeak").unavailable()
        return found
    names = list(engines)
    if not names:
        raise ValueError(f"engines=[] names no engine; give 'auto' or a list of names from {ENGINE_NAMES}")
    for name in names:
        if not get_engine(name).is_available():
            raise get_engine(name).unavailable()
    return tuple(name for name in ENGINE_NAMES if name in names)


class CommandEngine(Engine):
    """An engine run as an external program (``command``, on PATH; by default the engine's name)."""

    def __init__(self, command: str | None = None) -> None:
        self.command = command or self.name

    def is_available(self) -> bool:
        return shutil.which(self.command) is not None and bool(self.voices())
