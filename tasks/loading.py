"""Rebuilding a task's module from a checkpoint, for any task: the registry says which class wrote
it (the checkpoint's stamp), ``TaskModule.hparams_from_checkpoint`` migrates or refuses an older
layout of its arguments, and the file is read with ``torch.load(weights_only=True)``
(``reliability.read_checkpoint``): loading never runs code from the file. The module goes to the
``device`` asked for (``auto``: CUDA, else Apple's MPS, else the CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tzoo.tasks.registry import get_task

__all__ = ["DEVICES", "load_checkpoint", "load_module", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``mps`` on Apple silicon, else ``cpu``; a named
    device (``cpu``, ``cuda``, ``cuda:1``, ``mps``) is checked to exist here (ValueError if not)."""
    if isinstance(device, torch.device):
        device = str(device)
    kind, _, index = device.partition(":") if isinstance(device, str) else ("", "", "")
    if kind not in DEVICES:
        raise ValueError(f"device {device!r} is not one of {', '.join(DEVICES)} (or cuda:N)")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    if kind in ("auto", "cpu", "mps") and index:
        raise ValueError(f"device {device!r}: only cuda takes an index (cuda:N); give {kind!r}")
    if index and not index.isdigit():
        raise ValueError(f"device {device!r}: the index after 'cuda:' must be a whole number, e.g. cuda:0")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r} is not available: no CUDA GPU is visible here; use cpu or auto")
        if index and int(index) >= count:
            raise ValueError(f"device {device!r} is not available: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    if kind == "mps" and not _mps_available():
        raise ValueError(f"device {device!r} is not available: Apple's MPS backend is not available here; use cpu or auto")
    return torch.device(device)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint as a dict, refusing anything that would execute code to load."""
    from tzoo.tasks.reliability import read_checkpoint

    checkpoint = read_checkpoint(path)  # FileNotFoundError / ValueError naming the file and the fault
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{str(path)!r} is not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


def load_module(path: str | Path, *, task: str | None = None, device: str | torch.device = "cpu", **overrides: Any) -> Any:
    """Rebuild the task's LightningModule from a checkpoint, in eval mode on ``device`` (see
    ``resolve_device``); ``task`` checks which task wrote it. ``overrides``: constructor arguments
    that replace the checkpoint's (decoding settings chosen after training, e.g. the speech model's
    ``beam_size``), checked by the constructor as the checkpoint's are; as ``tzoo test``'s
    command-line model arguments win over the checkpoint's."""
    target = resolve_device(device)  # before the file is read: a bad device is the cheaper error
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
    module = module_class(**{**hparams, **overrides})
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    return module.to(target).eval()
