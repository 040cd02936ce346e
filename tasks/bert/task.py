"""Registration of the encoder-only text task (imported by the registry, not by the package).

The classes are named by dotted path: listing the tasks (``tzoo tasks``) imports none of their code.
"""

from pathlib import Path

from tzoo.tasks.registry import Task

# configs/ sits beside tasks/ in the repository and is installed as tzoo/configs beside tzoo/tasks
TASK = Task(
    name="bert",
    module="tzoo.tasks.bert.module.TextEncoder",
    datamodule="tzoo.tasks.bert.data.LabelledTextDataModule",
    config=Path(__file__).resolve().parents[2] / "configs" / "bert" / "genre.yaml",
    description="BERT-style encoder over character or BPE token nodes: masked-LM pretraining, text classification",
)
