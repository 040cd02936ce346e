"""Registration of the language-modeling task (imported by the registry, not by the package).

The classes are named by dotted path: listing the tasks (``tzoo tasks``) imports none of their code.
"""

from pathlib import Path

from tzoo.tasks.registry import Task

# configs/ sits beside tasks/ in the repository and is installed as tzoo/configs beside tzoo/tasks
TASK = Task(
    name="lm",
    module="tzoo.tasks.lm.module.LanguageModel",
    datamodule="tzoo.tasks.lm.data.TextDataModule",
    config=Path(__file__).resolve().parents[2] / "configs" / "lm" / "shakespeare_char.yaml",
    description="GPT-style language model over character or BPE token nodes",
)
