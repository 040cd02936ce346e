"""Registration of the decision-transformer task (imported by the registry, not by the package)."""

from pathlib import Path

from tzoo.tasks.decision.data import TrajectoryDataModule
from tzoo.tasks.decision.module import DecisionTransformer
from tzoo.tasks.registry import Task

# configs/ sits beside tasks/ in the repository and is installed as tzoo/configs beside tzoo/tasks
TASK = Task(
    name="decision",
    module=DecisionTransformer,
    datamodule=TrajectoryDataModule,
    config=Path(__file__).resolve().parents[2] / "configs" / "decision" / "cartpole.yaml",
    description="decision transformer over (return-to-go, state, action) nodes of Minari episodes, played in gymnasium",
)
