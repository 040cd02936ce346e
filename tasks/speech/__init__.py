"""Speech-to-text: waveforms chopped into audio-frame nodes, a bidirectional encoder, a character
decoder cross-attending to it (Whisper-style) and a CTC head on the encoder.

espeak.py (the eSpeak NG synthesizer), corpus.py (the generated corpus, manifests, LibriSpeech),
audio.py (reading audio files), tokenizer.py (log-mel -> SpecAugment -> subsampled frame nodes;
characters), model.py (the encoder-decoder and its config), decoding.py (CTC greedy, greedy, beam
search with the KV cache), data.py (the data module), module.py (the LightningModule),
alignment.py (the cross-attention picture), task.py (the registry entry).
"""

from tzoo.tasks.speech.model import SpeechConfig, SpeechTransformer
from tzoo.tasks.speech.tokenizer import AudioTokenizer, LogMel, text_tokenizer

__all__ = ["AudioTokenizer", "LogMel", "SpeechConfig", "SpeechTransformer", "text_tokenizer"]
