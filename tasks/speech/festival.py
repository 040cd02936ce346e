"""Festival, the Edinburgh speech synthesizer, as a corpus engine (Debian's ``festival`` and voice
packages; absent elsewhere, and the corpus works without it).

Its voices speak from recordings: ``kal_diphone`` and ``ked_diphone`` (US male, 16 kHz, residual-LPC
diphones) and ``cmu_us_slt_arctic_hts`` (US female, an HTS statistical voice trained on the
recordings of the CMU ARCTIC ``slt`` speaker). Starting Festival costs about a quarter of a second,
so ``synthesize_many`` runs one Festival process per batch: a Scheme script that selects each voice,
sets its rate and pitch and saves one WAV per utterance.

Rate and pitch: the diphone voices stretch their predicted durations (``Duration_Stretch``, 1.1 by
default in both, divided by ``speed``) and move the mean and spread of their intonation targets
(``int_lr_params``: 105 Hz mean, 14-15 Hz spread, times ``pitch``); the HTS voice takes the HTS
engine's own speech-rate option (``-r``) and keeps its own pitch (Festival 2.5's HTS module ignores
the half-tone shift ``-fm`` and ``hts_f0_mean``: measured, the same F0 with and without them).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tzoo.tasks.speech.engines import CommandEngine, Request

__all__ = ["VOICE_FOLDERS", "FestivalEngine"]

# where Debian's voice packages put them: <folder>/<language>/<voice>/festvox/<voice>.scm
VOICE_FOLDERS = (Path("/usr/share/festival/voices"), Path("/usr/local/share/festival/voices"))

# the diphone voices' own intonation targets (their festvox/<voice>.scm files): F0 mean, F0 spread
_DIPHONE_F0 = {"kal_diphone": (105.0, 14.0), "ked_diphone": (105.0, 15.0)}
_DIPHONE_STRETCH = 1.1  # both diphone voices' Duration_Stretch
_TIMEOUT_S = 600


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FestivalEngine(CommandEngine):
    """Festival through its command line (``festival -b script.scm``), a batch per process."""

    name = "festival"
    install_hint = "apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"

    def voices(self) -> tuple[str, ...]:
        """Every voice folder holding its ``festvox/<voice>.scm``."""
        found = {
            scm.parent.parent.name
            for folder in VOICE_FOLDERS
            if folder.is_dir()
            for scm in folder.glob("*/*/festvox/*.scm")
            if scm.stem == scm.parent.parent.name
        }
        return tuple(sorted(found))

    def varies_pitch(self, voice: str) -> bool:
        return voice in _DIPHONE_F0

    def synthesize(self, text: str, voice: str, *, speed: float = 1.0, pitch: float = 1.0) -> tuple[np.ndarray, int]:
        return self.synthesize_many([Request(text, voice, speed, pitch)])[0]

    def _settings(self, voice: str, speed: float, pitch: float) -> str:
        """Scheme that sets ``voice``'s rate and pitch (after the voice is selected, which resets them)."""
        if voice in _DIPHONE_F0:
            mean, spread = _DIPHONE_F0[voice]
            return (
                f"(Parameter.set 'Duration_Stretch {_DIPHONE_STRETCH / speed:.4f})"
                f"(set! int_lr_params '((target_f0_mean {mean * pitch:.2f}) (target_f0_std {spread * pitch:.2f})"
                f" (model_f0_mean 170) (model_f0_std 34)))"
            )
        if voice.endswith("_hts"):
            return f"(set! hts_engine_params (append {voice}::hts_engine_params (list (list \"-r\" {speed:.4f}))))"
        # another voice: the generic duration stretch; its pitch stays its own
        return f"(Parameter.set 'Duration_Stretch {1 / speed:.4f})"

    def synthesize_many(self, requests: Sequence[Request]) -> list[tuple[np.ndarray, int]]:
        """One Festival process for all of ``requests`` (grouped by voice: a voice is selected once)."""
        import soundfile

        if not requests:
            return []
        for r in requests:
            self.check_voice(r.voice)
            self.check_prosody(r.voice, r.speed, r.pitch)
        order = sorted(range(len(requests)), key=lambda i: requests[i].voice)
        with tempfile.TemporaryDirectory(prefix="tzoo_festival_") as tmp:
            lines, current = [], None
            for i in order:
                r = requests[i]
                if r.voice != current:
                    lines.append(f"(voice_{r.voice})")
                    current = r.voice
                wav = Path(tmp) / f"{i}.wav"
                lines.append(self._settings(r.voice, r.speed, r.pitch))
                lines.append(f"(set! utt (Utterance Text {_scheme_string(r.text)}))(utt.synth utt)"
                             f"(utt.save.wave utt {_scheme_string(str(wav))} 'riff)")  # fmt: skip
            script = Path(tmp) / "script.scm"
            script.write_text("\n".join(lines) + "\n", encoding="utf-8")
            done = subprocess.run([self.command, "-b", str(script)], capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
            out = []
            for i, r in enumerate(requests):
                wav = Path(tmp) / f"{i}.wav"
                if not wav.is_file():
                    raise RuntimeError(
                        f"festival wrote no audio for {r.text!r} in voice {r.voice!r} (exit {done.returncode}): "
                        f"{(done.stderr or done.stdout).strip()[-800:]}"
                    )
                samples, rate = soundfile.read(str(wav), dtype="float32")
                out.append((samples if samples.ndim == 1 else samples.mean(axis=1), int(rate)))
        return out
