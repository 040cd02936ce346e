"""``tzoo generate``: sample from a checkpoint of a task whose module can ``sample`` (the LM).

Checkpoints are read with ``torch.load(weights_only=True)`` (``reliability.read_checkpoint``): loading
never runs code from the file.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from tzoo.tasks.registry import get_task
from tzoo.tasks.reliability import read_checkpoint

__all__ = ["generate_main", "load_checkpoint", "load_module"]


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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number >= 0 (0 = always the most likely token)")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:  # False for NaN too
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability in (0, 1]")
    return value


def generate_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="tzoo generate", description="Sample text from a checkpoint.")
    parser.add_argument("--ckpt", required=True, help="checkpoint file (e.g. runs/lm/version_0/checkpoints/last.ckpt)")
    parser.add_argument("--prompt", default="\n")
    parser.add_argument("--max_new_tokens", type=_positive_int, default=500)
    parser.add_argument("--temperature", type=_temperature, default=0.8)
    parser.add_argument("--top_k", type=_positive_int, default=None)
    parser.add_argument("--top_p", type=_probability, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no_cache", action="store_true", help="recompute the whole window every step")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first (tens of seconds, once; faster long samples)")
    args = parser.parse_args(argv)
    try:
        module = load_module(args.ckpt)
        if not hasattr(module, "sample"):
            raise ValueError(f"the {module.task_name!r} task does not generate text; `tzoo generate` needs an lm checkpoint")
        text = module.sample(
            args.prompt,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            use_cache=not args.no_cache,
            seed=args.seed,
            compile=args.compile,
        )
    except (ValueError, FileNotFoundError) as exc:
        from tzoo.tasks.cli import UsageError

        raise UsageError(str(exc)) from None
    print(text)
