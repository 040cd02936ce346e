"""Registration of the speech task (imported by the registry, not by the package).

The classes are named by dotted path: listing the tasks (``tzoo tasks``) imports none of their code.
"""

from pathlib import Path

from tzoo.tasks.registry import Task

# configs/ sits beside tasks/ in the repository and is installed as tzoo/configs beside tzoo/tasks
TASK = Task(
    name="speech",
    module="tzoo.tasks.speech.module.SpeechRecognizer",
    datamodule="tzoo.tasks.speech.data.SpeechDataModule",
    config=Path(__file__).resolve().parents[2] / "configs" / "speech" / "espeak_tiny.yaml",
    description="speech-to-text: audio-frame encoder, character decoder with cross-attention, CTC head",
)
