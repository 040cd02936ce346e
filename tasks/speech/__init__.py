"""Speech-to-text: waveforms chopped into audio-frame nodes, a bidirectional encoder, a character
decoder cross-attending to it (Whisper-style) and a CTC head on the encoder.

espeak.py (the eSpeak NG synthesizer), corpus.py (the generated corpus, manifests, LibriSpeech),
audio.py (reading audio files), tokenizer.py (log-mel -> SpecAugment -> subsampled frame nodes;
characters), model.py (the encoder-decoder and its config), decoding.py (CTC greedy, greedy, beam
search with the KV cache), lexicon.py (a closed vocabulary for the beam), fusion.py (a character
language model in the beam), data.py (the data module), module.py (the LightningModule),
alignment.py (the cross-attention picture), whisper.py (Hugging Face Whisper weights in and out,
its BPE), task.py (the registry entry).

The names exported here are imported on first use, so importing the package (as the registry's
``tzoo.tasks.speech.task`` does) loads none of the task's code.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tzoo.tasks.speech.model import SpeechConfig, SpeechTransformer
    from tzoo.tasks.speech.tokenizer import AudioTokenizer, LogMel, text_tokenizer

_EXPORTS = {
    "SpeechConfig": "tzoo.tasks.speech.model",
    "SpeechTransformer": "tzoo.tasks.speech.model",
    "AudioTokenizer": "tzoo.tasks.speech.tokenizer",
    "LogMel": "tzoo.tasks.speech.tokenizer",
    "text_tokenizer": "tzoo.tasks.speech.tokenizer",
}

__all__ = ["AudioTokenizer", "LogMel", "SpeechConfig", "SpeechTransformer", "text_tokenizer"]


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
