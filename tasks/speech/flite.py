"""Flite (CMU's small Festival sibling) as a corpus engine, from Debian's ``flite`` package.

A Flite process starts in milliseconds, so each utterance is its own ``flite`` command. Its voices
are compiled in (``flite -lv``); the corpus trains on ``rms`` (US male) and tests on ``awb`` (Scottish
English male), both CLUSTERGEN statistical parametric voices (vocoded, like Festival's unseen HTS
voice; ``cmu_us_rms_cg`` in the library). Flite's ``kal`` and ``slt`` are
the same speakers as Festival's ``kal_diphone`` and ``cmu_us_slt_arctic_hts``. ``speed`` divides
Flite's ``duration_stretch``; ``pitch`` is Flite's ``f0_shift`` (a factor of the voice's F0), which
``awb``, ``kal``, ``kal16`` and ``slt`` take (``awb``'s median F0 137 -> 198 Hz at 1.5) but ``rms`` does not: its F0 comes from
a statistical phrase-and-accent model (``spamf0``) that ignores it, so ``rms`` keeps its own pitch
(``pitch`` must be 1.0). Which voices take it is found by synthesizing a word both ways, once per voice.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from functools import cached_property
from pathlib import Path

import numpy as np

from tzoo.tasks.speech.engines import CommandEngine

__all__ = ["FliteEngine"]

_TIMEOUT_S = 120


class FliteEngine(CommandEngine):
    """Flite through its command line, one process per utterance."""

    name = "flite"
    install_hint = "apt-get install flite"

    def __init__(self, command: str | None = None) -> None:
        super().__init__(command)
        self._pitched: dict[str, bool] = {}  # voice -> whether f0_shift moves its pitch

    @cached_property
    def _voices(self) -> tuple[str, ...]:
        if shutil.which(self.command) is None:
            return ()
        done = subprocess.run([self.command, "-lv"], capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
        listed = done.stdout.partition(":")[2].split()  # "Voices available: kal awb_time kal16 awb rms slt"
        return tuple(sorted(listed))

    def voices(self) -> tuple[str, ...]:
        return self._voices

    def varies_pitch(self, voice: str) -> bool:
        """Whether ``f0_shift`` changes this voice's audio (two short syntheses, once per voice)."""
        if voice not in self._pitched:
            self.check_voice(voice)
            (plain, _), (shifted, _) = (self._run("a test", voice, 1.0, f0) for f0 in (1.0, 1.5))
            self._pitched[voice] = not np.array_equal(plain, shifted)  # also unequal when the lengths differ
        return self._pitched[voice]

    def synthesize(self, text: str, voice: str, *, speed: float = 1.0, pitch: float = 1.0) -> tuple[np.ndarray, int]:
        self.check_voice(voice)
        self.check_prosody(voice, speed, pitch)
        return self._run(text, voice, speed, pitch)

    def _run(self, text: str, voice: str, speed: float, pitch: float) -> tuple[np.ndarray, int]:
        import soundfile

        with tempfile.TemporaryDirectory(prefix="tzoo_flite_") as tmp:
            wav = Path(tmp) / "out.wav"
            command = [self.command, "-voice", voice, "--setf", f"duration_stretch={1 / speed:.4f}",
                       "--setf", f"f0_shift={pitch:.4f}", "-t", text, "-o", str(wav)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
            if done.returncode != 0 or not wav.is_file():
                raise RuntimeError(f"flite wrote no audio for {text!r} in voice {voice!r} (exit {done.returncode}): {done.stderr.strip()[-800:]}")
            samples, rate = soundfile.read(str(wav), dtype="float32")
        return (samples if samples.ndim == 1 else samples.mean(axis=1)), int(rate)
