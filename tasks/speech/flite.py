"""Flite (CMU's small Festival sibling) as a corpus engine, from Debian's ``flite`` package.

A Flite process starts in milliseconds, so each utterance is its own ``flite`` command. Its voices
are compiled in (``flite -lv``); the corpus trains on ``rms`` (US male) and tests on ``awb`` (Scottish
English male), both CLUSTERGEN statistical parametric voices (vocoded, like Festival's unseen HTS
voice; ``cmu_us_rms_cg`` in the library). Flite's ``kal`` and ``slt`` are
the same speakers as Festival's ``kal_diphone`` and ``cmu_us_slt_arctic_hts``. ``speed`` divides
Flite's ``duration_stretch``; its pitch is left as the voice's own (its intonation targets are set
per voice inside the voice and the command line has no relative control; ``pitch`` must be 1.0).
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
        return False

    def synthesize(self, text: str, voice: str, *, speed: float = 1.0, pitch: float = 1.0) -> tuple[np.ndarray, int]:
        import soundfile

        self.check_voice(voice)
        self.check_prosody(voice, speed, pitch)
        with tempfile.TemporaryDirectory(prefix="tzoo_flite_") as tmp:
            wav = Path(tmp) / "out.wav"
            command = [self.command, "-voice", voice, "--setf", f"duration_stretch={1 / speed:.4f}", "-t", text, "-o", str(wav)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
            if done.returncode != 0 or not wav.is_file():
                raise RuntimeError(f"flite wrote no audio for {text!r} in voice {voice!r} (exit {done.returncode}): {done.stderr.strip()[-800:]}")
            samples, rate = soundfile.read(str(wav), dtype="float32")
        return (samples if samples.ndim == 1 else samples.mean(axis=1)), int(rate)
