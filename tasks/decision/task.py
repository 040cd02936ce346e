"""Registration of the decision-transformer task (imported by the registry, not by the package).

The classes are named by dotted path: listing the tasks (``tzoo tasks``) imports none of their code.
"""

from pathlib import Path

from tzoo.tasks.registry import Task

# configs/ sits beside tasks/ in the repository and is installed as tzoo/configs beside tzoo/tasks
TASK = Task(
    name="decision",
    module="tzoo.tasks.decision.module.DecisionTransformer",
    datamodule="tzoo.tasks.decision.data.TrajectoryDataModule",
    config=Path(__file__).resolve().parents[2] / "configs" / "decision" / "cartpole.yaml",
    description="decision transformer over (return-to-go, state, action) nodes of Minari episodes, played in gymnasium",
)
