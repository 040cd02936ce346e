"""Rebuilding a task's module from a checkpoint, for any task: the registry says which class wrote
it (the checkpoint's stamp), ``TaskModule.hparams_from_checkpoint`` migrates or refuses an older
layout of its arguments, and the file is read with ``torch.load(weights_only=True)``
(``reliability.read_checkpoint``): loading never runs code from the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tzoo.tasks.registry import get_task
from tzoo.tasks.reliability import read_checkpoint

__all__ = ["load_checkpoint", "load_module"]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint as a dict, refusing anything that would execute code to load."""
    checkpoint = read_checkpoint(path)  # FileNotFoundError / ValueError naming the file and the fault
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{str(path)!r} is not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


def load_module(path: str | Path, *, task: str | None = None) -> Any:
    """Rebuild the task's LightningModule from a checkpoint; ``task`` checks which task wrote it."""
    checkpoint = load_checkpoint(path)
    written_by = checkpoint.get("tzoo", {}).get("task")
    if written_by is None:
        raise ValueError(f"checkpoint {str(path)!r} was not written by a tzoo task (no 'tzoo' stamp)")
    if task is not None and written_by != task:
        raise ValueError(f"checkpoint {str(path)!r} was written by the {written_by!r} task, not by {task!r}")
    # LightningCLI adds bookkeeping entries such as `_class_path` to the saved hyperparameters
    hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if not k.startswith("_")}
    module_class = get_task(written_by).module
    upgrade = getattr(module_class, "hparams_from_checkpoint", None)
    if upgrade is not None:  # a TaskModule: older layouts migrate or are refused by name
        hparams = upgrade(hparams, path=path)
    module = module_class(**hparams)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()
