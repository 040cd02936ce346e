"""Registration of the vision task (imported by the registry, not by the package)."""

from pathlib import Path

from tzoo.tasks.registry import Task
from tzoo.tasks.vision.data import ImageDataModule
from tzoo.tasks.vision.module import VisionClassifier

# configs/ sits beside tasks/ in the repository and is installed as tzoo/configs beside tzoo/tasks
TASK = Task(
    name="vision",
    module=VisionClassifier,
    datamodule=ImageDataModule,
    config=Path(__file__).resolve().parents[2] / "configs" / "vision" / "digits.yaml",
    description="ViT classifier over image-patch nodes, with attention pictures",
)
