"""Registration of the vision task (imported by the registry, not by the package).

The classes are named by dotted path: listing the tasks (``tzoo tasks``) imports none of their code.
"""

from pathlib import Path

from tzoo.tasks.registry import Task

# configs/ sits beside tasks/ in the repository and is installed as tzoo/configs beside tzoo/tasks
TASK = Task(
    name="vision",
    module="tzoo.tasks.vision.module.VisionClassifier",
    datamodule="tzoo.tasks.vision.data.ImageDataModule",
    config=Path(__file__).resolve().parents[2] / "configs" / "vision" / "digits.yaml",
    description="ViT classifier over image-patch nodes, with attention pictures",
)
