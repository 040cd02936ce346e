"""The attention zoo: one task trained with each attention type at an equal budget (the same
steps, data, sizes and seed), one table per task.

Each variant is ``tzoo fit`` on the task's config plus one overlay from ``configs/<task>/attention/``
(or none, the baseline), run as a user runs it (a subprocess), so the only difference between two
rows is that overlay. Per row: the validation metric at the end, the median training step time,
nodes (tokens, patch nodes) per second from the run card, and the activation memory of one
training step: the bytes of the tensors autograd saves for backward (storages counted once), the
memory that grows with the number of nodes and that attention variants change. The baseline runs
first and last; the table shows both, so drift of the machine during the run is visible.

    python benchmarks/attention_zoo.py [--tasks lm vision] [--lm_steps 300] [--vision_epochs 15]

Prints Markdown tables and writes benchmarks/results/attention_zoo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "attention_zoo.json"
PROBE_FILE = "zoo_probe.json"

# task -> (base config, metric shown, extra arguments), and its variants: name -> overlay (None: baseline)
TASKS: dict[str, dict[str, Any]] = {
    "lm": {
        "config": "configs/lm/shakespeare_char.yaml",
        "metric": "val/loss",
        "args": ["--model.init_args.sample_tokens=0", "--data.init_args.train_batches=100"],
        "variants": {
            "full (RoPE)": None,
            "window 64": "window.yaml",
            "window 16": ["window.yaml", "--model.init_args.net.transformer.window=16"],
            "top-k 16": "top_k.yaml",
            "memory nodes 8": "memory.yaml",
            "ALiBi": "alibi.yaml",
            "learned positions": "learned.yaml",
            "GQA (1 kv head)": "gqa.yaml",
        },
    },
    "vision": {
        "config": "configs/vision/digits.yaml",
        "metric": "val/acc",
        "args": ["--model.init_args.attention_images=0"],
        "variants": {
            "full (2-D sin-cos)": None,
            "2-D local, radius 1": "local.yaml",
            "window 8 (1-D, flattened grid)": "window.yaml",
            "top-k 8": "top_k.yaml",
            "memory nodes 4": "memory.yaml",
            "+ ALiBi (1-D)": "alibi.yaml",
            "+ RoPE (1-D)": "rope.yaml",
            "learned positions": "learned.yaml",
            "GQA (1 kv head)": "gqa.yaml",
        },
    },
}


class ZooProbe(Callback):
    """Times every training step (median reported) and, on step ``memory_step``, adds up the
    bytes autograd saves for backward (each storage once). Writes ``zoo_probe.json`` into the
    run folder at the end of fit."""

    def __init__(self, memory_step: int = 5) -> None:
        self.memory_step = memory_step
        self.times: list[float] = []
        self.saved_bytes = 0
        self._start = 0.0
        self._hooks: Any = None
        self._storages: set[int] = set()

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._storages:
            self._storages.add(storage.data_ptr())
            self.saved_bytes += storage.nbytes()
        return tensor

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.memory_step:
            self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
            self._hooks.__enter__()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.times.append(time.perf_counter() - self._start)
        if self._hooks is not None:
            self._hooks.__exit__(None, None, None)
            self._hooks = None

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.log_dir:
            steady = self.times[3:] or self.times  # the first steps warm up allocators and caches
            probe = {"median_step_s": statistics.median(steady), "saved_for_backward_bytes": self.saved_bytes}
            (Path(trainer.log_dir) / PROBE_FILE).write_text(json.dumps(probe))


def run_variant(task: str, overlay: Any, root: Path, extra: list[str]) -> dict[str, Any]:
    spec = TASKS[task]
    args = ["--config", str(REPO / spec["config"])]
    overlays = [overlay] if isinstance(overlay, str) else list(overlay or [])
    for item in overlays:
        args += ["--config", str(REPO / "configs" / task / "attention" / item)] if item.endswith(".yaml") else [item]
    env = {**os.environ, "PYTHONPATH": str(REPO / "benchmarks") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [
        sys.executable, "-m", "tzoo.tasks.cli", "fit", *args, *spec["args"], *extra,
        f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
        "--trainer.callbacks+=attention_zoo.ZooProbe", "--trainer.enable_checkpointing=false",
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    (run,) = sorted((root / task).glob("version_*"), key=lambda p: p.stat().st_mtime)[-1:]
    card = json.loads((run / "run_card.json").read_text())
    probe = json.loads((run / PROBE_FILE).read_text())
    return {
        "metric": card["metrics"].get(spec["metric"]),
        "steps": card["steps"],
        "ms_per_step": probe["median_step_s"] * 1e3,
        "nodes_per_s": card.get("nodes_per_s"),
        "saved_mib": probe["saved_for_backward_bytes"] / 2**20,
        "params": card["params"],
        "wall_s": wall,
    }


def zoo(task: str, extra: list[str], root: Path) -> list[dict[str, Any]]:
    variants = list(TASKS[task]["variants"].items())
    order = [*variants, variants[0]]  # the baseline first and last
    rows = []
    for i, (name, overlay) in enumerate(order):
        label = f"{name} (again, last)" if i == len(order) - 1 else name
        print(f"[{task}] {label} ...", flush=True)
        rows.append({"variant": label, **run_variant(task, overlay, root, extra)})
    return rows


def table(task: str, rows: list[dict[str, Any]]) -> str:
    metric = TASKS[task]["metric"]
    lines = [
        f"| {task}: variant | {metric} | ms/step (median) | nodes/s | saved for backward (MiB, one step) | params |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        value = "–" if r["metric"] is None else f"{r['metric']:.4f}"
        nodes = "–" if r["nodes_per_s"] is None else f"{r['nodes_per_s']:,.0f}"
        lines.append(f"| {r['variant']} | {value} | {r['ms_per_step']:.1f} | {nodes} | {r['saved_mib']:.1f} | {r['params']:,} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--lm_steps", type=int, default=300)
    parser.add_argument("--vision_epochs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    extra = {
        "lm": [f"--trainer.max_steps={args.lm_steps}", f"--trainer.val_check_interval={min(100, args.lm_steps)}"],
        "vision": [f"--trainer.max_epochs={args.vision_epochs}", f"--trainer.check_val_every_n_epoch={args.vision_epochs}"],
    }
    results: dict[str, Any] = {"machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()}}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            results[task] = zoo(task, extra[task], Path(tmp) / task)
            print("\n" + table(task, results[task]) + "\n", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
