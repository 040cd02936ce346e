"""Soak: train the LM for a long while through the real `tzoo fit` path, validating and writing a
checkpoint every minute, and report steady throughput, peak memory and whether memory grows.

The run is the default LM job (``configs/lm/shakespeare_char.yaml``: Shakespeare's plays, a 4-layer
width-128 RoPE GPT) with Lightning's time-based validation (``val_check_interval`` in seconds),
a ``ModelCheckpoint`` every ``--interval_s`` seconds of training (``last.ckpt``, through tzoo's
atomic checkpoint I/O), and ``max_time`` = ``--minutes``. A callback samples the process's
resident memory (RSS) every few seconds. After a warm-up (the first minute, or the first quarter
of a short run) it reports

* steady throughput: tokens/s over wall time, validation and checkpoints included, and the
  median training step alone;
* peak RSS (``ru_maxrss``) and the RSS growth over the steady part: a least-squares slope in
  MiB/min, times the steady minutes. "flat" means the growth stays under max(16 MiB, 2% of RSS).

    python benchmarks/soak.py                 # 30 minutes (the scheduled run)
    python benchmarks/soak.py --minutes 2     # a quick check of the benchmark itself

Prints a table and writes ``benchmarks/results/soak.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from tzoo.tasks.cli import TzooCLI

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; elsewhere the peak, as a stand-in)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class SoakProbe(Callback):
    """Records (time, steps, RSS) every ``every_s`` seconds, each step's duration, and counts
    validations and checkpoint saves."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self.samples: list[tuple[float, int, int]] = []  # (seconds since start, steps, rss bytes)
        self.step_times: list[tuple[float, float]] = []  # (seconds since start, step seconds)
        self.validations = self.checkpoints = 0
        self.tokens_per_step = 0
        self._t0 = self._last_sample = self._step_start = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = self._last_sample = time.perf_counter()
        self.samples.append((0.0, 0, rss_bytes()))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        self.tokens_per_step = batch[0].numel()
        self.step_times.append((now - self._t0, now - self._step_start))
        if now - self._last_sample >= self.every_s:
            self._last_sample = now
            self.samples.append((now - self._t0, trainer.global_step, rss_bytes()))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validations += 1

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.checkpoints += 1

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.samples.append((time.perf_counter() - self._t0, trainer.global_step, rss_bytes()))


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def summarise(probe: SoakProbe, minutes: float, interval_s: float) -> dict[str, Any]:
    end = probe.samples[-1][0]
    warmup = min(60.0, end / 4)
    steady = [s for s in probe.samples if s[0] >= warmup]
    (t0, s0, _), (t1, s1, _) = steady[0], steady[-1]
    times, rss = [s[0] / 60 for s in steady], [s[2] / MIB for s in steady]
    growth_per_min = slope(times, rss)
    steady_minutes = (t1 - t0) / 60
    growth = growth_per_min * steady_minutes
    mean_rss = statistics.fmean(rss)
    step_s = statistics.median(d for t, d in probe.step_times if t >= warmup)
    return {
        "minutes": minutes,
        "interval_s": interval_s,
        "trained_s": round(end, 1),
        "steps": probe.samples[-1][1],
        "tokens_per_step": probe.tokens_per_step,
        "validations": probe.validations,
        "checkpoints": probe.checkpoints,
        "warmup_s": round(warmup, 1),
        "steady_tokens_per_s": round((s1 - s0) * probe.tokens_per_step / (t1 - t0), 1),
        "median_step_ms": round(step_s * 1000, 2),
        "step_tokens_per_s": round(probe.tokens_per_step / step_s, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_start_mib": round(rss[0], 1),
        "rss_end_mib": round(rss[-1], 1),
        "rss_growth_mib_per_min": round(growth_per_min, 3),
        "rss_growth_mib": round(growth, 1),
        "memory": "flat" if growth < max(16.0, 0.02 * mean_rss) else "GROWS",
        "rss_samples_mib": [[round(t, 1), round(r / MIB, 1)] for t, _, r in probe.samples],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval_s", type=float, default=60.0, help="validation and checkpoint interval")
    parser.add_argument("--config", default=str(REPO / "configs" / "lm" / "shakespeare_char.yaml"))
    parser.add_argument("--root", default=None, help="run directory (default: a temporary one)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "soak.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or tmp
        seconds = int(args.minutes * 60)

        def ddhhmmss(s: int) -> str:
            return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"

        cli = TzooCLI(
            args=[
                "--config", args.config,
                "--trainer.max_steps=-1", "--trainer.max_epochs=-1",
                f"--trainer.max_time={ddhhmmss(seconds)}",
                f"--trainer.val_check_interval={ddhhmmss(int(args.interval_s))}", "--trainer.check_val_every_n_epoch=null",
                "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={root}",
                "--data.init_args.train_batches=100000000",  # one long epoch; validation is by time
                "--model.init_args.sample_tokens=0",
            ],  # fmt: skip
            run=False,
        )
        probe = SoakProbe()
        every = ModelCheckpoint(train_time_interval=timedelta(seconds=args.interval_s), save_last=True, save_top_k=0)
        trainer = cli.trainer
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, ModelCheckpoint)] + [every, probe]
        trainer.fit(cli.model, datamodule=cli.datamodule)
        result = summarise(probe, args.minutes, args.interval_s)
    result["device"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    result["torch"] = torch.__version__
    rows = [
        ("trained", f"{result['trained_s']} s, {result['steps']} steps"),
        ("validations / checkpoints", f"{result['validations']} / {result['checkpoints']}"),
        ("steady throughput (wall)", f"{result['steady_tokens_per_s']:,.0f} tokens/s"),
        ("median training step", f"{result['median_step_ms']} ms ({result['step_tokens_per_s']:,.0f} tokens/s)"),
        ("peak RSS", f"{result['peak_rss_mib']} MiB"),
        ("RSS after warm-up -> end", f"{result['rss_start_mib']} -> {result['rss_end_mib']} MiB"),
        ("RSS growth (steady)", f"{result['rss_growth_mib_per_min']} MiB/min, {result['rss_growth_mib']} MiB in all: {result['memory']}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"\nsoak: {args.minutes:g} min of {Path(args.config).name}, validation + checkpoint every {args.interval_s:g} s")
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
