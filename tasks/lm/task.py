"""Registration of the language-modeling task (imported by the registry, not by the package)."""

from pathlib import Path

from tzoo.tasks.lm.data import TextDataModule
from tzoo.tasks.lm.module import LanguageModel
from tzoo.tasks.registry import Task


# configs/ sits beside tasks/ in the repository and is installed as tzoo/configs beside tzoo/tasks
TASK = Task(
    name="lm",
    module=LanguageModel,
    datamodule=TextDataModule,
    config=Path(__file__).resolve().parents[2] / "configs" / "lm" / "shakespeare_char.yaml",
    description="GPT-style language model over character or BPE token nodes",
)
