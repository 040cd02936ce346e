"""tzoo-sort: a third-party tzoo task that sorts a set of numbers.

The input is a *set*: one node per number and no positional encoding, so the encoder cannot know
(or care) in which order the numbers arrived. A causal decoder cross-attends to the encoded set
and emits the numbers in increasing order.

Everything here uses tzoo's public API only: ``tzoo.core`` blocks, ``tzoo.tasks.base.TaskModule``
and ``tzoo.tasks.registry.Task``. The registration is one entry point in ``pyproject.toml``.
"""

from tzoo_sort.data import SortData
from tzoo_sort.model import SetSorter
from tzoo_sort.module import SortModule

__all__ = ["SetSorter", "SortData", "SortModule"]
