"""Registration of the speech task (imported by the registry, not by the package)."""

from pathlib import Path

from tzoo.tasks.registry import Task
from tzoo.tasks.speech.data import SpeechDataModule
from tzoo.tasks.speech.module import SpeechRecognizer

TASK = Task(
    name="speech",
    module=SpeechRecognizer,
    datamodule=SpeechDataModule,
    config=Path(__file__).resolve().parents[2] / "configs" / "speech" / "espeak_tiny.yaml",
    description="speech-to-text: audio-frame encoder, character decoder with cross-attention, CTC head",
)
