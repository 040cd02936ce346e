"""eSpeak NG, the speech synthesizer that makes the offline corpus.

The ``espeakng-loader`` wheel bundles ``libespeak-ng`` and its voice data; it is driven through
ctypes (synchronous mode: the library hands back 16-bit samples through a callback). Without the
wheel, a system ``espeak-ng`` command is used instead (``--stdout`` writes a WAV). Either way the
output is mono at the synthesizer's own rate (22,050 Hz).

A voice is ``<accent>+<variant>``, e.g. ``en-US+f3``: the accent picks the pronunciation rules, the
variant the speaker (formants, pitch range, breathiness).
"""

from __future__ import annotations

import ctypes
import io
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from tzoo.tasks.speech.engines import Engine, EngineUnavailableError
from tzoo.tasks.speech.espeak_voices import MAX_MADE_UP, data_path, is_made_up, library_name

__all__ = ["ACCENTS", "VARIANTS", "EspeakEngine", "EspeakUnavailableError", "Synthesizer", "list_variants"]

# Every English accent eSpeak NG ships (en-Shaw is the Shavian alphabet, not an accent).
ACCENTS = ("en", "en-029", "en-GB-scotland", "en-GB-x-gbclan", "en-GB-x-gbcwmd", "en-GB-x-rp", "en-US", "en-US-nyc")

# Human-sounding voice variants (the robots, whispers and croaks are left out).
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "adam", "Alex", "Andy", "Annie", "aunty", "benjamin", "boris", "caleb", "david", "ed", "edward",
    "Gene", "grandma", "grandpa", "ian", "iven", "john", "linda", "max", "Michael", "norbert",
    "paul", "quincy", "rob", "robert", "steph", "travis",
)  # fmt: skip

INSTALL_HINT = "install it with `pip install espeakng-loader` (bundles the library and voices) or `apt-get install espeak-ng`"

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_RATE, _PITCH = 1, 3  # espeak_PARAMETER


class EspeakUnavailableError(EngineUnavailableError):
    """Neither the espeakng-loader wheel nor an ``espeak-ng`` command is available."""


def list_variants() -> list[str]:
    """Every voice variant the installed eSpeak NG data holds (for choosing others than ours)."""
    from pathlib import Path

    import espeakng_loader

    return sorted(p.name for p in (Path(espeakng_loader.get_data_path()) / "voices" / "!v").iterdir())


_LIBRARY: tuple[Any, int, list[np.ndarray]] | None = None
_MADE_UP_ERROR: str | None = None  # why the library's data lacks the made-up variants (None: it has them)
_DATA = ""  # the data folder the library was initialised with


def _library() -> tuple[Any, int, list[np.ndarray]]:
    """The process's one libespeak-ng: (library, sample rate, the list its callback fills).

    The library keeps a single global state (voice, parameters, callback), so it is initialised
    once per process and every Synthesizer shares it."""
    global _LIBRARY, _MADE_UP_ERROR, _DATA
    if _LIBRARY is None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        path = espeakng_loader.get_data_path()
        try:  # the wheel's data with the made-up variants (espeak_voices.py)
            path = str(data_path(path))
        except OSError as exc:  # e.g. a read-only cache: every shipped voice still speaks
            _MADE_UP_ERROR = f"the data folder with them could not be built ({exc})"
        _DATA = path
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, path.encode(), 0)
        if rate <= 0:
            raise OSError(f"espeak_Initialize failed (returned {rate})")
        chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def receive(wav: Any, n: int, events: Any) -> int:
            if wav and n > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0  # 0 = go on synthesizing

        lib._tzoo_callback = callback_type(receive)  # kept referenced: the library calls it later
        lib.espeak_SetSynthCallback(lib._tzoo_callback)
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        _LIBRARY = (lib, rate, chunks)
    return _LIBRARY


class Synthesizer:
    """Text -> int16 waveform at ``sample_rate`` with a voice, a speed (words per minute) and a pitch
    (0-99). ``backend``: ``"auto"`` (the wheel, else the command), ``"library"`` or ``"command"``."""

    def __init__(self, backend: str = "auto") -> None:
        if backend not in ("auto", "library", "command"):
            raise ValueError(f"backend={backend!r} is not one of ('auto', 'library', 'command')")
        self._lib: Any = None
        self._command: str | None = None
        self._chunks: list[np.ndarray] = []
        if backend in ("auto", "library"):
            try:
                self._open_library()
            except (ImportError, OSError) as exc:
                if backend == "library":
                    raise EspeakUnavailableError(f"cannot load libespeak-ng from espeakng-loader ({exc}); {INSTALL_HINT}") from exc
        if self._lib is None:
            self._command = shutil.which("espeak-ng")
            if self._command is None:
                raise EspeakUnavailableError(
                    f"eSpeak NG is not available: no espeakng-loader package and no espeak-ng command on PATH; {INSTALL_HINT}"
                )
            self.sample_rate = 22050

    @property
    def backend(self) -> str:
        return "library" if self._lib is not None else "command"

    def _open_library(self) -> None:
        self._lib, self.sample_rate, self._chunks = _library()

    def synthesize(self, text: str, voice: str, *, speed: int = 175, pitch: int = 50) -> np.ndarray:
        """-> (S,) int16 samples at ``self.sample_rate``."""
        if not 80 <= speed <= 450:
            raise ValueError(f"speed must be in [80, 450] words per minute, got {speed}")
        if not 0 <= pitch <= 99:
            raise ValueError(f"pitch must be in [0, 99], got {pitch}")
        if self._lib is None:
            return self._synthesize_command(text, voice, speed, pitch)
        lib = self._lib
        self._set_voice(voice)
        lib.espeak_SetParameter(_RATE, int(speed), 0)
        lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        self._chunks.clear()
        data = text.encode("utf-8")
        status = lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r} in voice {voice!r}")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)

    def phonemes(self, text: str, voice: str) -> str:
        """The phonemes eSpeak NG speaks ``text`` with in ``voice`` (its ASCII phoneme mnemonics,
        stress marks included), e.g. to find words that sound alike."""
        if self._lib is None:
            assert self._command is not None
            done = subprocess.run([self._command, "-q", "-x", "-v", voice, text], capture_output=True, check=False)
            if done.returncode != 0:
                raise ValueError(f"espeak-ng failed for voice {voice!r}: {done.stderr.decode(errors='replace').strip()}")
            return " ".join(done.stdout.decode().split())
        lib = self._lib
        self._set_voice(voice)
        pointer = ctypes.c_char_p(text.encode("utf-8"))  # the library advances it clause by clause
        clauses = []
        while pointer.value:
            clauses.append(lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, 0).decode().strip())
        return " ".join(c for c in clauses if c)

    def _set_voice(self, voice: str) -> None:
        if is_made_up(voice):  # eSpeak NG would speak its default voice without a word
            if _MADE_UP_ERROR is not None:
                raise ValueError(f"eSpeak NG cannot speak the made-up variant {voice!r}: {_MADE_UP_ERROR}")
            path = Path(_DATA, "voices", "!v", library_name(voice).split("+")[-1])  # as eSpeak NG opens it
            if not os.path.isfile(path):
                raise ValueError(f"eSpeak NG cannot speak the made-up variant {voice!r}: its file {str(path)!r} is missing")
        if self._lib.espeak_SetVoiceByName(library_name(voice).encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r} (valid: <accent>+<variant>, accents {ACCENTS}, variants e.g. {VARIANTS[:5]})")

    def _synthesize_command(self, text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
        import soundfile

        assert self._command is not None
        if is_made_up(voice):
            raise ValueError(f"the made-up variant {voice!r} needs eSpeak NG's library from the wheel ({INSTALL_HINT}), not the espeak-ng command")
        done = subprocess.run(
            [self._command, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text], capture_output=True, check=False
        )
        if done.returncode != 0 or not done.stdout:
            raise ValueError(f"espeak-ng failed for voice {voice!r}: {done.stderr.decode(errors='replace').strip()}")
        samples, rate = soundfile.read(io.BytesIO(done.stdout), dtype="int16")
        self.sample_rate = rate
        return samples


class EspeakEngine(Engine):
    """eSpeak NG as a corpus engine: a voice is one of ``VARIANTS`` (the speaker), spoken in one of
    ``ACCENTS`` (``<accent>+<variant>``; a bare variant speaks ``en``). ``speed`` x 175 words per
    minute (eSpeak NG's default rate); ``pitch`` x 50 on its 0-99 pitch scale (50 = the voice's own;
    the scale is eSpeak NG's, not Hz)."""

    name = "espeak"
    install_hint = "pip install espeakng-loader"
    accents = ACCENTS

    def __init__(self) -> None:
        self._synth: Synthesizer | None = None

    def _synthesizer(self) -> Synthesizer:
        if self._synth is None:
            self._synth = Synthesizer()
        return self._synth

    def is_available(self) -> bool:
        try:
            Synthesizer()  # not cached: a test may take the library away
        except EspeakUnavailableError:
            return False
        return True

    def voices(self) -> tuple[str, ...]:
        return VARIANTS

    def unavailable(self) -> EngineUnavailableError:
        try:
            Synthesizer()
        except EspeakUnavailableError as exc:
            return exc
        raise AssertionError("eSpeak NG is available")

    def check_voice(self, voice: str) -> None:
        if voice.split("+")[-1] not in VARIANTS and not is_made_up(voice):
            raise ValueError(f"espeak has no voice {voice!r}; its voices (variants, spoken as <accent>+<variant>, "
                             f"accents {', '.join(ACCENTS)}): {', '.join(VARIANTS)}, and the made-up "
                             f"tzoo-000 ... tzoo-{MAX_MADE_UP - 1:03d} (espeak_voices.py)")

    def synthesize(self, text: str, voice: str, *, speed: float = 1.0, pitch: float = 1.0) -> tuple[np.ndarray, int]:
        self.check_prosody(voice, speed, pitch)
        synth = self._synthesizer()
        voice = voice if "+" in voice else f"en+{voice}"
        samples = synth.synthesize(text, voice, speed=min(450, max(80, round(175 * speed))), pitch=min(99, round(50 * pitch)))
        return samples.astype(np.float32) / 32768.0, synth.sample_rate
