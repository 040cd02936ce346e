"""Vision task benchmark: digits accuracy and wall time, training throughput against timm's ViT,
and (optional) the 20-minute Fashion-MNIST run.

* digits: ``tzoo fit --config configs/vision/digits.yaml`` run as a user runs it (a subprocess,
  wall time from launch to exit, imports included), then ``tzoo test`` on its last checkpoint.
  Targets: test accuracy >= 98%, wall time <= 120 s.
* throughput: forward + backward + AdamW on batches of 128 random 32x32 RGB images, patch 4,
  width 192, 6 layers, 3 heads, 10 classes, learned positions and a class token in both, for
  tzoo's ``ViT`` and ``timm.models.vision_transformer.VisionTransformer`` built with the same
  dimensions, in the same process. Rounds interleave the runs (order alternating), each the median
  step time of a few steps; the images/s figures are medians over rounds. Target: ratio >= 1.0.
  ``ViT.forward`` computes only the class node in the last layer (the head reads nothing else;
  the logits are the same); the table also shows tzoo's ViT with every node through every layer.
* ``--fashion_mnist``: ``configs/vision/fashion_mnist.yaml`` (about 20 minutes), its validation
  accuracy after each epoch and its test accuracy. Target: >= 91% within 20 minutes.

    python benchmarks/vision.py [--seeds 0 1 2] [--rounds 9] [--skip_digits] [--fashion_mnist]

Prints Markdown tables and writes benchmarks/results/vision.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tzoo.core import TransformerConfig
from tzoo.tasks.vision.model import ViT, ViTConfig

REPO = Path(__file__).resolve().parents[1]
TZOO = str(Path(sys.executable).parent / "tzoo")
PEAK_GFLOPS = 340.0  # fp32 matmul peak of this machine through torch with 2 threads (DESIGN.md)
DIMS = dict(image_size=32, patch_size=4, dim=192, depth=6, num_heads=3, num_classes=10, batch_size=128)


# --- runs through the CLI -----------------------------------------------------------------------


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def cli_run(config: Path, root: Path, *extra: str, flip_tta: bool = False) -> dict[str, Any]:
    """``tzoo fit`` then ``tzoo test`` on its last checkpoint: wall time, curve, test accuracy (and,
    with ``flip_tta``, a second test with ``tta_hflip``: each image averaged with its mirror)."""
    common = ["--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={root}"]
    start = time.perf_counter()
    subprocess.run([TZOO, "fit", "--config", str(config), *common, *extra], check=True, capture_output=True)
    wall = time.perf_counter() - start
    (ckpt,) = root.rglob("last.ckpt")
    fit_dir = ckpt.parent.parent
    curve = [
        {"epoch": int(r["epoch"]), "step": int(r["step"]), "val_acc": float(r["val/acc"])}
        for r in _metrics(fit_dir)
        if r.get("val/acc")
    ]

    def test(*more: str) -> float:
        subprocess.run([TZOO, "test", "--config", str(config), "--ckpt_path", str(ckpt), *common, *extra, *more], check=True, capture_output=True)
        test_dir = max((d for d in fit_dir.parent.glob("version_*") if d != fit_dir), key=lambda d: int(d.name.split("_")[1]))
        return float(next(r for r in _metrics(test_dir) if r.get("test/acc"))["test/acc"])

    result = {"wall_s": wall, "test_acc": test(), "curve": curve, "args": list(extra)}
    if flip_tta:
        result["test_acc_flip_tta"] = test("--model.init_args.tta_hflip=true")
    return result


def digits(seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as root:
            result = cli_run(REPO / "configs" / "vision" / "digits.yaml", Path(root), f"--seed_everything={seed}")
        rows.append({"seed": seed, **result})
        print(f"digits seed {seed}: test acc {result['test_acc']:.4f}, {result['wall_s']:.0f} s", flush=True)
    return rows


# --- throughput ---------------------------------------------------------------------------------


def _timm_vit() -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=DIMS["image_size"],
        patch_size=DIMS["patch_size"],
        in_chans=3,
        num_classes=DIMS["num_classes"],
        embed_dim=DIMS["dim"],
        depth=DIMS["depth"],
        num_heads=DIMS["num_heads"],
    )


def _tzoo_vit() -> nn.Module:
    stack = TransformerConfig(dim=DIMS["dim"], depth=DIMS["depth"], num_heads=DIMS["num_heads"])
    return ViT(
        ViTConfig(
            DIMS["num_classes"],
            image_size=DIMS["image_size"],
            in_channels=3,
            patch_size=DIMS["patch_size"],
            position="learned",  # as timm's: a learned table, updated by the optimizer
            transformer=stack,
        )
    )


class _EveryNodeEveryLayer(nn.Module):
    """tzoo's ViT without the class-token shortcut in its last layer (``ViT.forward``): every node
    through every layer, as timm computes it."""

    def __init__(self, vit: ViT) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_head(self.vit.forward_features(images))


class _Trainer:
    """One model, its fused AdamW and a fixed batch: ``step()`` is one training step."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model.train()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, fused=True)
        generator = torch.Generator().manual_seed(0)
        size = DIMS["image_size"]
        self.x = torch.randn(DIMS["batch_size"], 3, size, size, generator=generator)
        self.y = torch.randint(0, DIMS["num_classes"], (DIMS["batch_size"],), generator=generator)

    def step(self) -> None:
        loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def images_per_s(self, steps: int) -> float:
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            self.step()
            times.append(time.perf_counter() - start)
        return DIMS["batch_size"] / statistics.median(times)


def throughput(rounds: int, steps: int) -> dict[str, Any]:
    torch.manual_seed(0)
    runs = {
        "tzoo ViT": _Trainer(_tzoo_vit()),
        "tzoo ViT, every node through every layer": _Trainer(_EveryNodeEveryLayer(_tzoo_vit())),
        "timm VisionTransformer": _Trainer(_timm_vit()),
    }
    for run in runs.values():  # warm-up: allocator, kernels' first calls
        for _ in range(3):
            run.step()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name in list(runs)[:: 1 if r % 2 == 0 else -1]:
            samples[name].append(runs[name].images_per_s(steps))
    result: dict[str, Any] = {"rounds": rounds, "steps_per_round": steps, "dims": DIMS, "models": {}}
    flops = _tzoo_vit().flops_per_image(DIMS["image_size"])
    for name, values in samples.items():
        params = sum(p.numel() for p in runs[name].model.parameters())
        median = statistics.median(values)
        result["models"][name] = {
            "images_per_s_median": median,
            "images_per_s_min": min(values),
            "images_per_s_max": max(values),
            "params": params,
            "mfu": median * flops / (PEAK_GFLOPS * 1e9),
        }
    # the ratio within each round, then the median over rounds: both saw the same machine state
    timm = samples["timm VisionTransformer"]
    result["ratios"] = {}
    for name in list(runs)[:2]:
        ratios = [a / b for a, b in zip(samples[name], timm)]
        result["ratios"][name] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    result["flops_per_image"] = flops
    return result


# --- report -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=5, help="training steps per model per round")
    parser.add_argument("--skip_digits", action="store_true")
    parser.add_argument("--fashion_mnist", action="store_true", help="also the ~20-minute Fashion-MNIST run")
    parser.add_argument("--fashion_args", default="", help="extra tzoo fit arguments for the Fashion-MNIST run, one string (probes): --fashion_args='--trainer.max_epochs=3'")
    parser.add_argument("--flip_tta", action="store_true", help="also test the Fashion-MNIST model with flip test-time augmentation")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "vision.json")
    args = parser.parse_args()

    digit_rows = [] if args.skip_digits else digits(args.seeds)
    speed = throughput(args.rounds, args.steps)
    fashion = None
    if args.fashion_mnist:
        root = REPO / "runs" / "benchmark_vision" / time.strftime("%Y%m%d-%H%M%S")  # kept: its checkpoint can be tested again
        fashion = cli_run(REPO / "configs" / "vision" / "fashion_mnist.yaml", root, *shlex.split(args.fashion_args), flip_tta=args.flip_tta)

    checks: dict[str, bool] = {}
    if digit_rows:
        print("\ndigits (configs/vision/digits.yaml through `tzoo fit`, then `tzoo test`)")
        print("| seed | test accuracy | wall time (fit, s) |\n|---|---|---|")
        for r in digit_rows:
            print(f"| {r['seed']} | {100 * r['test_acc']:.2f}% | {r['wall_s']:.0f} |")
            checks[f"digits seed {r['seed']}: test accuracy {100 * r['test_acc']:.2f}% >= 98%"] = r["test_acc"] >= 0.98
            checks[f"digits seed {r['seed']}: {r['wall_s']:.0f} s <= 120 s"] = r["wall_s"] <= 120
    d = DIMS
    print(
        f"\ntraining throughput: batch {d['batch_size']}, {d['image_size']}x{d['image_size']}x3, patch {d['patch_size']}, "
        f"width {d['dim']}, depth {d['depth']}, {d['num_heads']} heads, {d['num_classes']} classes, fwd+bwd+AdamW, "
        f"{torch.get_num_threads()} threads, {speed['rounds']} interleaved rounds"
    )
    print("| model | params | images/s median (min-max) | vs timm (median of rounds, min-max) | model FLOP/s, % of peak |")
    print("|---|---|---|---|---|")
    for name, m in speed["models"].items():
        spread = f"{m['images_per_s_median']:.0f} ({m['images_per_s_min']:.0f}-{m['images_per_s_max']:.0f})"
        r = speed["ratios"].get(name)
        ratio = f"{r['median']:.3f} ({r['min']:.3f}-{r['max']:.3f})" if r else "1"
        print(f"| {name} | {m['params'] / 1e6:.2f} M | {spread} | {ratio} | {100 * m['mfu']:.0f}% |")
    print("(model FLOP/s counts the full model's matmul FLOPs for every run, work skipped or not)")
    ratio = speed["ratios"]["tzoo ViT"]["median"]
    checks[f"throughput ratio tzoo ViT / timm {ratio:.3f} >= 1.0"] = ratio >= 1.0
    if fashion is not None:
        print("\nFashion-MNIST (configs/vision/fashion_mnist.yaml)")
        print("| epoch | val accuracy |\n|---|---|")
        for point in fashion["curve"]:
            print(f"| {point['epoch'] + 1} | {100 * point['val_acc']:.2f}% |")
        print(f"test accuracy {100 * fashion['test_acc']:.2f}%, fit wall time {fashion['wall_s'] / 60:.1f} min"
              + (f" (arguments: {' '.join(fashion['args'])})" if fashion.get("args") else ""))
        if "test_acc_flip_tta" in fashion:
            print(f"with flip test-time augmentation (tta_hflip): {100 * fashion['test_acc_flip_tta']:.2f}%")
        checks[f"fashion_mnist: test accuracy {100 * fashion['test_acc']:.2f}% >= 91%"] = fashion["test_acc"] >= 0.91
        checks[f"fashion_mnist: {fashion['wall_s'] / 60:.1f} min <= 20 min"] = fashion["wall_s"] <= 20 * 60
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    meta = {"torch": torch.__version__, "machine": platform.machine(), "threads": torch.get_num_threads()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "digits": digit_rows, "throughput": speed, "fashion_mnist": fashion, "checks": checks}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
