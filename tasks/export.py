"""``tzoo export``: a checkpoint's weights in a reference library's layout, or as plain safetensors.

    tzoo export CKPT --to hf DIR            lm: a GPT-2 folder (transformers.GPT2LMHeadModel);
                                            decision: a DecisionTransformerModel folder;
                                            speech: a Whisper folder (Whisper-shaped models)
    tzoo export CKPT --to timm FILE         vision: a timm VisionTransformer state dict
                                            (.safetensors, else torch.save's .pth)
    tzoo export CKPT --to safetensors FILE  any task: the module's own state dict (tzoo's names),
                                            with the task and its hyperparameters in the metadata

The format must be one the checkpoint's task has (a one-line error names those it has). An
existing non-empty DIR or an existing FILE is refused unless ``--overwrite``. The checkpoint is
read with ``torch.load(weights_only=True)``: loading never runs code from the file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["FORMATS", "export_main", "export_module"]

# task -> the formats it exports to (safetensors: every task)
FORMATS: dict[str, tuple[str, ...]] = {"lm": ("hf",), "decision": ("hf",), "vision": ("timm",), "speech": ("hf",)}
_ALL = ("hf", "timm", "safetensors")


def formats_of(task: str) -> tuple[str, ...]:
    return (*FORMATS.get(task, ()), "safetensors")


def export_main(argv: list[str]) -> None:
    from tzoo.tasks.cli import UsageError

    parser = argparse.ArgumentParser(
        prog="tzoo export",
        description="Write a checkpoint's weights in a reference layout (hf: GPT-2 / Decision Transformer folder; "
        "timm: a ViT state dict) or as plain safetensors.",
    )
    parser.add_argument("ckpt", help="a tzoo checkpoint (e.g. runs/lm/version_0/checkpoints/last.ckpt)")
    parser.add_argument("--to", required=True, metavar="FORMAT", help=f"one of {', '.join(_ALL)} (which a task has: {_table()})")
    parser.add_argument("out", help="the folder (hf) or file (timm, safetensors) to write")
    parser.add_argument("--overwrite", action="store_true", help="write into an existing non-empty folder / over an existing file")
    args = parser.parse_intermixed_args(argv)
    if args.to not in _ALL:
        raise UsageError(f"--to {args.to!r} is not a format tzoo exports to; valid: {', '.join(_ALL)} ({_table()})")
    out = Path(args.out)
    if not args.overwrite and (out.is_file() or (out.is_dir() and any(out.iterdir()))):
        raise UsageError(f"{str(out)!r} exists{' and is not empty' if out.is_dir() else ''}: give a new path, or --overwrite")
    if args.to == "hf" and out.is_file():
        raise UsageError(f"--to hf writes a folder but {str(out)!r} is a file")
    if args.to != "hf" and out.is_dir():
        raise UsageError(f"--to {args.to} writes a file but {str(out)!r} is a folder")

    from tzoo.tasks.loading import load_module  # torch and Lightning: after --help and the argument checks

    try:
        module = load_module(args.ckpt)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"{exc} (tzoo export takes a checkpoint written by tzoo fit)") from None
    task = module.task_name
    if args.to not in formats_of(task):
        raise UsageError(f"the {task!r} task's checkpoints do not export --to {args.to}; its formats: {', '.join(formats_of(task))}")
    try:
        written = export_module(module, args.to, out)
    except (ValueError, ImportError) as exc:  # a model the layout cannot hold (discrete actions, RoPE, ...), a missing extra
        raise UsageError(str(exc)) from None
    print(f"wrote {written} ({task} checkpoint {args.ckpt} as {args.to})")


def _table() -> str:
    return "; ".join(f"{task}: {', '.join(formats_of(task))}" for task in FORMATS) + "; any task: safetensors"


def export_module(module: Any, to: str, out: Path) -> Path:
    """Write ``module`` (a task's LightningModule) in format ``to`` at ``out``; returns ``out``."""
    if to == "safetensors":
        return _safetensors(module, out)
    task = module.task_name
    if (task, to) == ("lm", "hf"):
        from tzoo.tasks.lm.gpt2 import save_gpt2

        save_gpt2(module.model, out)
        _lm_tokenizer(module.tokenizer, out)
        return out
    if (task, to) == ("decision", "hf"):
        from tzoo.tasks.decision.hf_dt import save_hf_dt

        return save_hf_dt(module.model, out, env_id=module.env_id)
    if (task, to) == ("speech", "hf"):  # a Whisper-shaped model only (a ValueError names what is not)
        from tzoo.tasks.speech.whisper import save_whisper

        return save_whisper(module.model, out, text=module.whisper)
    if (task, to) == ("vision", "timm"):
        from tzoo.tasks.vision.timm_vit import to_timm_state

        return _tensors(to_timm_state(module.model), out, metadata={"format": "pt"}, safetensors=out.suffix == ".safetensors")
    raise ValueError(f"the {task!r} task's checkpoints do not export --to {to}; its formats: {', '.join(formats_of(task))}")


def _lm_tokenizer(tokenizer: Any, folder: Path) -> None:
    """The LM's tokenizer next to the weights: tzoo's own file, and for a byte-level BPE also HF's
    ``tokenizer.json`` (``transformers.PreTrainedTokenizerFast(tokenizer_file=...)`` reads it)."""
    if tokenizer is None:
        return
    tokenizer.save(folder / "tzoo_tokenizer.json")
    if getattr(tokenizer, "kind", None) == "bpe":
        document = json.loads((folder / "tzoo_tokenizer.json").read_text(encoding="utf-8"))
        (folder / "tokenizer.json").write_text(json.dumps(document["tokenizer"]), encoding="utf-8")


def _safetensors(module: Any, out: Path) -> Path:
    hparams = {k: v for k, v in dict(module.hparams).items() if not k.startswith("_")}
    metadata = {"format": "pt", "tzoo_task": module.task_name, "tzoo_hparams": json.dumps(hparams, default=_plain)}
    return _tensors(module.state_dict(), out, metadata=metadata, safetensors=True)


def _plain(value: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def _tensors(state: dict[str, Any], out: Path, *, metadata: dict[str, str], safetensors: bool) -> Path:
    import torch

    # copies: safetensors refuses tensors that share storage (tied weights), and views
    state = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    if safetensors:
        from tzoo.tasks.lm.gpt2 import safetensors_torch

        safetensors_torch().save_file(state, str(out), metadata=metadata)
    else:
        torch.save(state, out)
    return out
