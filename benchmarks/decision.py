"""Decision transformer against the targets of issue 6, trained through the `tzoo` CLI as users run it.

* CartPole-v1: the config's dataset (300 episodes, random-action rate swept 0 -> 1, mean return
  about 210, i.e. <= 50% of the maximum 500). Asked for 500, mean return over 20 held-out
  evaluation seeds (target >= 475). Asked for 50, 150, 300 and 500: the achieved means and
  their Spearman rank correlation with the targets (target >= 0.9); plotted as a PNG.
* Pendulum-v1: the config's dataset (random-action rate swept 0.2 -> 1, mean normalized return
  <= 60); normalized return of the trained model over 20 held-out seeds (target >= 90).
* Wall time of each training (target <= 15 min on the 2-core machine).

Evaluation seeds start at 1,000,000; the datasets' reset seeds at 0.

    python benchmarks/decision.py [--part cartpole|pendulum|all] [--threads N] [more tzoo fit flags]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tzoo.tasks.cli import main as tzoo
from tzoo.tasks.decision.rollout import normalized_return
from tzoo.tasks.loading import load_module

REPO = Path(__file__).resolve().parents[1]
TARGETS = (50, 150, 300, 500)
EVAL_SEED = 1_000_000
GOALS = {"cartpole_return_at_500": 475.0, "spearman": 0.9, "pendulum_normalized": 90.0, "train_minutes": 15.0}


def spearman(x: list[float], y: list[float]) -> float:
    """Rank correlation (average ranks for ties)."""

    def ranks(v: list[float]) -> np.ndarray:
        a = np.asarray(v, dtype=np.float64)
        order = a.argsort(kind="stable")
        r = np.empty(len(a))
        r[order] = np.arange(len(a), dtype=np.float64)
        for value in np.unique(a):  # ties share their mean rank
            r[a == value] = r[a == value].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def train(config: Path, root: Path, extra: list[str]) -> tuple[Path, float, dict[str, float]]:
    """Fit with the CLI; return the last checkpoint, the wall time and the dataset's returns."""
    runs = root / "runs"
    start = time.perf_counter()
    tzoo(["fit", "--config", str(config), f"--trainer.default_root_dir={runs}", "--trainer.enable_progress_bar=false",
          f"--data.init_args.data_dir={root / 'minari'}", *extra])
    seconds = time.perf_counter() - start
    ckpt = max(runs.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    data_returns = {}
    with open(ckpt.parent.parent / "metrics.csv") as f:
        header, *rows = [line.rstrip("\n").split(",") for line in f]
    for row in rows:
        data_returns.update({k.removeprefix("data/return_"): float(v) for k, v in zip(header, row) if k.startswith("data/") and v})
    return ckpt, seconds, data_returns


def cartpole(root: Path, episodes: int, extra: list[str], plot: Path | None) -> dict[str, Any]:
    ckpt, seconds, data = train(REPO / "configs" / "decision" / "cartpole.yaml", root / "cartpole", extra)
    module = load_module(ckpt, task="decision")
    achieved, at_one = {}, {}
    for target in TARGETS:
        # the config's temperature, and 1 (the model's own distribution) for comparison
        achieved[target] = module.evaluate(float(target), episodes=episodes, seed=EVAL_SEED)
        at_one[target] = module.evaluate(float(target), episodes=episodes, seed=EVAL_SEED, temperature=1.0)
        print(f"CartPole target {target}: return {achieved[target]['return_mean']:.1f} ± {achieved[target]['return_std']:.1f} "
              f"(temperature 1: {at_one[target]['return_mean']:.1f})", flush=True)
    means = [achieved[t]["return_mean"] for t in TARGETS]
    if plot is not None:
        series = {
            f"temperature {module.eval_temperature:g} (config)": (means, [achieved[t]["return_std"] for t in TARGETS]),
            "temperature 1": ([at_one[t]["return_mean"] for t in TARGETS], [at_one[t]["return_std"] for t in TARGETS]),
        }
        save_plot(plot, TARGETS, series, data)
    return {
        "train_seconds": seconds,
        "dataset_returns": data,
        "dataset_mean_fraction_of_max": data.get("mean", float("nan")) / 500.0,
        "return_at_500": achieved[500]["return_mean"],
        "normalized_at_500": achieved[500]["normalized_return"],
        "conditioning": {str(t): achieved[t] for t in TARGETS},
        "spearman": spearman(list(TARGETS), means),
        "temperature": module.eval_temperature,
        "conditioning_temperature_1": {str(t): at_one[t] for t in TARGETS},
        "spearman_temperature_1": spearman(list(TARGETS), [at_one[t]["return_mean"] for t in TARGETS]),
        "checkpoint": str(ckpt),
    }


def pendulum(root: Path, episodes: int, extra: list[str]) -> dict[str, Any]:
    ckpt, seconds, data = train(REPO / "configs" / "decision" / "pendulum.yaml", root / "pendulum", extra)
    module = load_module(ckpt, task="decision")
    result = module.evaluate(episodes=episodes, seed=EVAL_SEED)
    reference = tuple(module.reference_scores.tolist())
    print(f"Pendulum: return {result['return_mean']:.1f} ± {result['return_std']:.1f}, normalized {result['normalized_return']:.1f}", flush=True)
    return {
        "train_seconds": seconds,
        "dataset_returns": data,
        "dataset_normalized_mean": normalized_return(data.get("mean", float("nan")), reference),
        "reference_scores": reference,
        "target_return": module.eval_target_return,
        **result,
        "checkpoint": str(ckpt),
    }


def save_plot(path: Path, targets: tuple[int, ...], series: dict[str, tuple[list[float], list[float]]], data: dict[str, float]) -> None:
    """Achieved vs target return, one line per ``{label: (means, stds)}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([0, 500], [0, 500], "--", color="grey", label="achieved = target")
    for label, (means, stds) in series.items():
        ax.errorbar(targets, means, yerr=stds, marker="o", capsize=4, label=label)
    if "mean" in data:
        ax.axhline(data["mean"], color="tab:red", linestyle=":", label=f"dataset mean return ({data['mean']:.0f})")
    ax.set(xlabel="target return (return-to-go at the start)", ylabel="achieved return (mean ± std, 20 episodes)")
    ax.set_title("CartPole-v1: return conditioning")
    ax.set_xlim(0, 520)
    ax.set_ylim(0, 540)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(results: dict[str, Any]) -> str:
    rows = ["| measure | target | measured |", "|---|---|---|"]
    n = results["eval_episodes"]
    if "cartpole" in results:
        c = results["cartpole"]
        rows += [
            f"| CartPole dataset mean return | <= 250 (50% of 500) | {c['dataset_returns'].get('mean', float('nan')):.1f} |",
            f"| CartPole return asked for 500 ({n} held-out seeds) | >= 475 | {c['return_at_500']:.1f} |",
            f"| CartPole achieved return for targets {'/'.join(map(str, TARGETS))} (temperature {c['temperature']:g}) | increasing | "
            + " / ".join(f"{c['conditioning'][str(t)]['return_mean']:.0f}" for t in TARGETS) + " |",
            f"| CartPole Spearman(target, achieved) | >= 0.9 | {c['spearman']:.2f} |",
            f"| (same at temperature 1 instead of {c['temperature']:g}: achieved / Spearman) | - | "
            + " / ".join(f"{c['conditioning_temperature_1'][str(t)]['return_mean']:.0f}" for t in TARGETS)
            + f"; {c['spearman_temperature_1']:.2f} |",
            f"| CartPole training wall time | <= 15 min | {c['train_seconds'] / 60:.1f} min |",
        ]
    if "pendulum" in results:
        p = results["pendulum"]
        rows += [
            f"| Pendulum dataset mean normalized return | <= 60 | {p['dataset_normalized_mean']:.1f} |",
            f"| Pendulum normalized return ({n} held-out seeds) | >= 90 | {p['normalized_return']:.1f} (return {p['return_mean']:.0f}) |",
            f"| Pendulum training wall time | <= 15 min | {p['train_seconds'] / 60:.1f} min |",
        ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("cartpole", "pendulum", "all"), default="all")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes per target")
    parser.add_argument("--root", type=Path, default=REPO / "runs" / "decision-benchmark", help="runs and Minari datasets")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "decision.json")
    parser.add_argument("--plot", type=Path, default=REPO / "examples" / "decision_return_conditioning.png")
    args, extra = parser.parse_known_args()  # the rest go to both trainings, e.g. --trainer.max_steps=500
    args.extra = extra
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {
        "machine": platform.platform(), "threads": torch.get_num_threads(), "eval_episodes": args.episodes, "goals": GOALS
    }
    if args.part in ("cartpole", "all"):
        results["cartpole"] = cartpole(args.root, args.episodes, args.extra, args.plot)
    if args.part in ("pendulum", "all"):
        results["pendulum"] = pendulum(args.root, args.episodes, args.extra)
    print("\n" + table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    args.out.write_text(json.dumps({**previous, **results}, indent=1, default=float))  # one part keeps the other's numbers
    print(f"\nwrote {args.out}" + (f" and {args.plot}" if "cartpole" in results else ""))


if __name__ == "__main__":
    main()
