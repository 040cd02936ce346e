"""``tzoo check``: check a model configuration before a long run.

    tzoo check --config FILE [--section.key value ...]

1. **config**: builds the data and the model exactly as ``tzoo fit`` would. An invalid value, or a
   pair of options that cannot go together, is rejected here with the error that names them.
2. **train step**: one forward + backward + optimizer step on a tiny batch (2 examples where the
   data has a ``batch_size``) through a Lightning ``fast_dev_run``; the logged losses and every
   gradient must be finite. Parameters that got no gradient are listed (unused weights).
3. **kv cache**: for every causal ``tzoo.core.Decoder`` in the model, incremental decoding with the
   KV cache (one node at a time, and a prefill followed by single steps) must equal the full
   forward — for this exact combination of attention (window, top-k, GQA, linear), positional scheme
   (RoPE, ALiBi), memory nodes and cross-attention. A windowed or linear decoder is checked on
   enough nodes that the full forward takes the banded (or multi-chunk) path and the rolling
   cache drops keys.
4. **causality**: changing the later nodes of a decoder's input must not change its earlier outputs
   (on the same length as the cache check).
5. **memory**: parameter count and an estimate of training memory at the configured batch size:
   weights + gradients + AdamW's two moments, plus the activations saved for backward in the tiny
   step scaled to the configured batch.

Exit status 0 when every check passes, 1 when one fails (a config that does not build is a
``SystemExit`` naming the problem).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from tzoo.tasks.cli import check_config_files, expand_task, nested_nulls

__all__ = ["Check", "check_decoder_cache", "check_decoder_causality", "check_length", "check_main", "run_checks"]

# The checks themselves live in tzoo.tasks.check_steps (Lightning, torch, the core), imported on
# first use so that `tzoo check --help` answers at once; their names are reachable from here.
_STEP_NAMES = (
    "TINY_BATCH", "Check", "CheckConfigError", "build", "check_decoder_cache", "check_decoder_causality", "check_length",
    "run_checks",
)  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _STEP_NAMES:
        return getattr(importlib.import_module("tzoo.tasks.check_steps"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_main(args: list[str]) -> None:
    """``tzoo check --config FILE [overrides]``: prints a line per check; exit 1 if one fails."""
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[1] if __doc__ else "usage: tzoo check --config FILE")
        if not args:
            raise SystemExit(2)
        return
    try:
        args = nested_nulls(expand_task(args))
    except ValueError as exc:
        raise SystemExit(f"tzoo check: {exc}") from None
    check_config_files(args)
    from tzoo.tasks.check_steps import CheckConfigError, run_checks

    try:
        _, checks = run_checks(args)
    except CheckConfigError as exc:
        raise SystemExit(f"tzoo check: the configuration is invalid: {exc}") from None
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'}  {check.name:<11} {check.detail}")
    failed = [c.name for c in checks if not c.ok]
    if failed:
        print(f"tzoo check: {len(failed)} check(s) failed: {', '.join(failed)}", file=sys.stderr)
        raise SystemExit(1)
    print("tzoo check: all checks passed")
