"""The object the ``tzoo.tasks`` entry point names: a ``Task`` with the module, the data and the
default config that ships inside this package (so ``tzoo fit --task sort`` works from a wheel)."""

from pathlib import Path

from tzoo.tasks.registry import Task
from tzoo_sort.data import SortData
from tzoo_sort.module import SortModule

TASK = Task(
    name="sort",
    module=SortModule,
    datamodule=SortData,
    config=Path(__file__).with_name("sort.yaml"),
    description="sort a set of numbers: one node per number, no positions; encoder + decoder",
)
