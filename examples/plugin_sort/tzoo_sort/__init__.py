"""tzoo-sort: a third-party tzoo task that sorts a set of numbers, using tzoo's public API only.

``model.py`` is plain PyTorch on ``tzoo.core``; ``task.py`` is the tzoo side (data, the
``TaskModule``, the ``Task`` that the entry point in ``pyproject.toml`` names).
"""
