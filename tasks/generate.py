"""``tzoo generate``: sample from a checkpoint of a task whose module can ``sample`` (the LM), or
from a GPT-2 folder in Hugging Face's layout (weights and tokenizer, ``tzoo.tasks.lm.gpt2``).

Checkpoints are read with ``torch.load(weights_only=True)`` (``reliability.read_checkpoint``): loading
never runs code from the file.
"""

from __future__ import annotations

import argparse
import math

__all__ = ["generate_main"]


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
    parser.add_argument("--ckpt", required=True, help="checkpoint file (e.g. runs/lm/version_0/checkpoints/last.ckpt), or a GPT-2 folder")
    parser.add_argument("--prompt", default="\n")
    parser.add_argument("--max_new_tokens", type=_positive_int, default=500)
    parser.add_argument("--temperature", type=_temperature, default=0.8)
    parser.add_argument("--top_k", type=_positive_int, default=None)
    parser.add_argument("--top_p", type=_probability, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no_cache", action="store_true", help="recompute the whole window every step")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first (tens of seconds, once; faster long samples)")
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU, else Apple's MPS, else the CPU), cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    from pathlib import Path

    from tzoo.tasks.loading import load_module, resolve_device  # torch and Lightning: after --help and the argument checks

    try:
        if (Path(args.ckpt) / "config.json").is_file():  # a GPT-2 folder: config.json, weights and tokenizer
            from tzoo.tasks.lm.module import LanguageModel

            device = resolve_device(args.device)
            module = LanguageModel(pretrained=args.ckpt).to(device).eval()
        else:
            module = load_module(args.ckpt, device=args.device)
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
