"""Where the speech config's training step spends its time, and whether bf16 autocast or
``torch.compile`` makes it cheaper on this CPU: the model, optimizer and loss of
``configs/speech/espeak.yaml`` (built by the tzoo CLI, as ``tzoo fit`` builds them) on real training
batches of its corpus (random order, as after the first epoch).

    flock /tmp/tzoo_cpu.lock python benchmarks/speech_step.py                 # fp32 vs bf16 autocast
    python benchmarks/speech_step.py --compile                                # and torch.compile (minutes to compile)
    python benchmarks/speech_step.py --smoke                                  # a tiny corpus and model, 2 batches
    python benchmarks/speech_step.py --variant "conformer=--model.init_args.net.encoder.block=conformer"   # another model, fp32

Each precision gets its own copy of the same initial weights; the rounds interleave them (fp32
first and last), every round the same batches, and the table gives the median seconds per step and
the ratio to fp32. bf16 runs as ``--trainer.precision bf16-mixed`` does on CPU: autocast to bfloat16,
fp32 weights, the optimizer unfused (Lightning clips no fused optimizer's gradients under mixed
precision). ``--variant NAME=OPTIONS`` (repeatable) adds the model the config builds with those
``tzoo fit`` options (``--model.*`` only: every row trains on the same batches), timed in fp32 in the
same rounds, its ratio to the config's fp32 step. ``--compile`` compiles a third copy (``model.compile()``, as ``compile: true`` does) and
reports the time of its first pass over the batches (compilation, recompiles at new lengths) apart
from its steady state (the eager copies' first pass is the warm-up batches alone). ``--profile`` prints the fp32 and bf16 steps' most expensive operators. Writes
``benchmarks/results/speech_step.json`` (``--smoke``: ``speech_step_smoke.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "speech" / "espeak.yaml"
RESULTS = REPO / "benchmarks" / "results"


def config_cli(smoke: bool, root: Path, options: Sequence[str] = ()) -> Any:
    """The tzoo CLI of the config (with ``options``, tzoo fit's), its module and data module built, nothing run."""
    from tzoo.tasks.cli import TzooCLI, nested_nulls

    args = ["--config", str(CONFIG), "--data.init_args.shortest_first=false", f"--trainer.default_root_dir={root}"]
    if smoke:  # speech_augment.py's tiny corpus and model; batches of 2, so that its 6 utterances give 3
        from speech_augment import SMOKE

        args += [*SMOKE, "--data.init_args.batch_size=2", f"--data.init_args.data_dir={root / 'corpus'}"]
    return TzooCLI(args=nested_nulls([*args, *options]), run=False)


def build(smoke: bool, root: Path) -> tuple[Any, Any, float | None]:
    """(the config's module, its data module set up for fitting (training batches in random order),
    the trainer's gradient clipping norm)."""
    cli = config_cli(smoke, root)
    data = cli.datamodule
    data.prepare_data()
    data.setup("fit")
    return cli.model, data, cli.trainer.gradient_clip_val


class Stepper:
    """One copy of the module with its optimizer: ``step(batch)`` is a training step's forward,
    backward and update (the module's own training loss)."""

    def __init__(self, module: Any, precision: str, clip: float | None) -> None:  # precision: fp32, bf16, compiled
        from tzoo.tasks.optim import build_optimizer

        self.module, self.precision, self.clip = copy.deepcopy(module).train(), precision, clip
        if precision == "compiled":
            self.module.model.compile()
        self.optimizer = build_optimizer(self.module, self.module.optim, fused=precision != "bf16")

    def step(self, batch: Any) -> None:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "bf16" else contextlib.nullcontext()
        with autocast:
            loss, _, _ = self.module._losses(batch)  # the loss training_step logs and returns
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip)
        self.optimizer.step()

    def time(self, batches: list[Any]) -> float:
        """Seconds per step over ``batches``."""
        start = time.perf_counter()
        for batch in batches:
            self.step(batch)
        return (time.perf_counter() - start) / len(batches)


def profile(stepper: Stepper, batches: list[Any], rows: int = 12) -> list[dict[str, Any]]:
    """A copy's training-step operators by their own CPU time: name, share, milliseconds per step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches:
            stepper.step(batch)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [
        {"op": e.key, "share": e.self_cpu_time_total / total, "ms_per_step": e.self_cpu_time_total / 1000 / len(batches)}
        for e in events[:rows]
    ]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME=--opt=value --opt2=value`` -> (NAME, [options]); refuses a data option (the batches are
    shared) and a name already taken."""
    name, sep, options = text.partition("=")
    name, split = name.strip(), options.split()
    if not sep or not name or not split:
        raise SystemExit(f"--variant needs NAME=OPTIONS (e.g. 'conformer=--model.init_args.net.encoder.block=conformer'), got {text!r}")
    if name in ("fp32", "bf16", "compiled"):
        raise SystemExit(f"--variant name {name!r} is a precision's row: pick another name")
    not_model = [o for o in split if not o.startswith("--model.")]
    if not_model:
        raise SystemExit(f"--variant {name}: only --model.* options (every row trains on the config's batches), got {not_model}")
    return name, split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20, help="training batches per round (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every precision (default 3; fp32 also closes them)")
    parser.add_argument("--warmup", type=int, default=3, help="steps per copy before timing (default 3)")
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd copy")
    parser.add_argument("--profile", action="store_true", help="print the fp32 and bf16 steps' most expensive operators")
    parser.add_argument("--smoke", action="store_true", help="a tiny corpus and model, 2 batches, 1 round")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OPTIONS",
                        help="also time the model built with these tzoo fit options (space-separated, --model.* only), in fp32")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file (default benchmarks/results/speech_step[_smoke].json)")
    args = parser.parse_args()
    if args.smoke:
        args.batches, args.rounds, args.warmup = 2, 1, 1
    out = args.out or RESULTS / ("speech_step_smoke.json" if args.smoke else "speech_step.json")
    variants = dict(parse_variant(v) for v in args.variant)

    with tempfile.TemporaryDirectory() as root:
        module, data, clip = build(args.smoke, Path(root))
        loader = iter(data.train_dataloader())
        batches = [next(loader) for _ in range(args.warmup + args.batches)]
        warm, timed = batches[: args.warmup], batches[args.warmup :]
        precisions = ["fp32", "bf16", *(["compiled"] if args.compile else [])]
        torch.manual_seed(0)
        steppers = {p: Stepper(module, p, clip) for p in precisions}
        for name, options in variants.items():  # the same batches: the options change the model only
            torch.manual_seed(0)
            steppers[name] = Stepper(config_cli(args.smoke, Path(root), options).model, "fp32", clip)
        precisions += list(variants)
        first_pass: dict[str, float] = {}
        for name, stepper in steppers.items():  # compiled: compilation, and a recompile per new shape
            start = time.perf_counter()
            for batch in [*warm, *(timed if name == "compiled" else [])]:
                stepper.step(batch)
            first_pass[name] = time.perf_counter() - start
        times: dict[str, list[float]] = {p: [] for p in precisions}
        for _ in range(args.rounds):
            for name in precisions:
                times[name].append(steppers[name].time(timed))
        times["fp32"].append(steppers["fp32"].time(timed))  # fp32 closes the run as it opened it
        operators = {p: profile(steppers[p], timed) for p in ("fp32", "bf16")} if args.profile else {"fp32": [], "bf16": []}

    base = statistics.median(times["fp32"])
    longest_s = [int(b[1].max()) / data.sample_rate for b in timed]
    rows = [
        {"precision": p, "s_per_step": statistics.median(times[p]), "vs_fp32": statistics.median(times[p]) / base,
         "rounds": times[p], "first_pass_s": first_pass[p], "options": variants.get(p, []),
         "parameters": sum(t.numel() for t in steppers[p].module.parameters())}
        for p in precisions
    ]  # fmt: skip
    print(f"\n{len(timed)} training batches of {data.batch_size} (longest utterance {min(longest_s):.1f}-{max(longest_s):.1f} s), "
          f"{args.rounds} rounds, {torch.get_num_threads()} threads\n")  # fmt: skip
    print("| precision (or variant, fp32) | parameters | s per step (median) | vs fp32 | first pass (s) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['precision']} | {r['parameters'] / 1e6:.2f} M | {r['s_per_step']:.3f} | {r['vs_fp32']:.2f}x | {r['first_pass_s']:.1f} |")
    for name, options in variants.items():
        print(f"\n{name}: {' '.join(options)}")
    for precision, ops in operators.items():
        if not ops:  # without --profile
            continue
        print(f"\n| operator ({precision}) | share of the step | ms per step |\n|---|---|---|")
        for o in ops:
            print(f"| {o['op']} | {o['share']:.1%} | {o['ms_per_step']:.1f} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    result = {"machine": machine, "config": str(CONFIG.relative_to(REPO)), "smoke": args.smoke, "batches": len(timed),
              "rounds": args.rounds, "rows": rows, "operators": operators["fp32"], "operators_bf16": operators["bf16"]}  # fmt: skip
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
