"""Each waveform augmentation of the speech task on its own (tasks/speech/augment.py): short training
runs of ``configs/speech/espeak.yaml``, one per recipe (none, each augmentation alone, all of them),
the same number of steps each, validated at the end on the whole validation split (eSpeak NG voice
variants never heard in training). With ``--test``, each run's last checkpoint is also tested
(``tzoo test``: every ``test/*`` metric the module logs, per engine or voice where it reports them).

    flock /tmp/tzoo_cpu.lock python benchmarks/speech_augment.py --steps 1500
    python benchmarks/speech_augment.py --recipes none,reverb,telephone --steps 800 --test
    python benchmarks/speech_augment.py --smoke      # a tiny corpus and model, 2 steps a recipe

Each run is ``tzoo fit`` as a user runs it (a subprocess; wall time from launch to exit, the corpus
generated before the first). Prints a Markdown table and writes
``benchmarks/results/speech_augment.json`` (``--smoke``: ``speech_augment_smoke.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TZOO = str(Path(sys.executable).parent / "tzoo")
CONFIG = REPO / "configs" / "speech" / "espeak.yaml"
RESULTS = REPO / "benchmarks" / "results"
RUNS = REPO / "runs" / "benchmark_speech_augment"

# what each recipe sets in the data module's ``augment``; "none" is the baseline every row compares with
RECIPES: dict[str, dict[str, Any]] = {
    "none": {},
    "speed": {"speed": {"p": 1.0, "factors": [0.9, 1.0, 1.1]}},  # Kaldi's 3-way perturbation
    "reverb": {"reverb": {"p": 0.5}},
    "noise": {"noise": {"p": 0.5}},
    "babble": {"babble": {"p": 0.5}},
    "telephone": {"telephone": {"p": 0.3}},
    "gain": {"gain": {"p": 0.5}},
}
RECIPES["all"] = {name: setting for recipe in list(RECIPES.values()) for name, setting in recipe.items()}

# --smoke: a 6-utterance corpus and a width-32 model, 2 steps, one validation batch
SMOKE = [
    "--data.init_args.corpus_size=[6, 3, 3]", "--data.init_args.max_words=3", "--data.init_args.batch_size=3",
    "--data.init_args.workers=1", "--data.init_args.engines=[espeak]", "--model.init_args.net.encoder={dim: 32, depth: 1, num_heads: 2, position: rope}",
    "--model.init_args.net.decoder={dim: 32, depth: 1, num_heads: 2, position: rope}", "--model.init_args.beam_size=1",
    "--model.init_args.examples=0", "--model.init_args.max_text_len=20", "--trainer.limit_val_batches=1",
    "--trainer.num_sanity_val_steps=0", "--trainer.callbacks=[]",
]  # fmt: skip


def parse_recipes(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; valid: {', '.join(RECIPES)}")
    return names


def _metrics_csv(path: Path) -> dict[str, float]:
    """The last value of every column of a Lightning CSV log."""
    values: dict[str, float] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            values.update({k: float(v) for k, v in row.items() if v not in ("", None) and k not in ("step", "epoch")})
    return values


def _run(args: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run([TZOO, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-5000:])
        raise SystemExit(f"tzoo {args[0]} failed")
    return time.perf_counter() - start, done


def run_recipe(name: str, *, steps: int, root: Path, extra: list[str], test: bool, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Train one recipe ``steps`` steps, validate once at the end (and test) -> its row."""
    out = root / name
    common = ["--config", str(CONFIG), *extra, f"--trainer.default_root_dir={out}", "--trainer.enable_progress_bar=false"]
    if RECIPES[name]:
        common.append(f"--data.init_args.augment={json.dumps(RECIPES[name])}")
    before = set(out.rglob("run_card.json"))
    wall, _ = _run(["fit", *common, f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={steps}",
                    "--trainer.check_val_every_n_epoch=null"], env)  # fmt: skip
    (card_path,) = set(out.rglob("run_card.json")) - before
    card = json.loads(card_path.read_text())
    row = {"recipe": name, "augment": RECIPES[name], "steps": card["steps"], "wall_s": round(wall, 1),
           "train_step_time_s": card.get("train_step_time_s"), "val": {k: v for k, v in card["metrics"].items() if k.startswith("val/")}}  # fmt: skip
    if test:
        ckpt = card_path.parent / "checkpoints" / "last.ckpt"
        logs = set(out.rglob("metrics.csv"))
        _run(["test", *common, f"--ckpt_path={ckpt}"], env)
        (log,) = set(out.rglob("metrics.csv")) - logs
        row["test"] = {k: v for k, v in _metrics_csv(log).items() if k.startswith(("test/", "test_sentences/"))}
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    base = next((r for r in rows if r["recipe"] == "none"), None)
    print("\n| augmentation | steps | val CER (attention greedy) | vs none | val CER (CTC greedy) | val WER | wall |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        v = r["val"]
        cer, ctc, wer = v.get("val/cer"), v.get("val/cer_ctc"), v.get("val/wer")
        delta = "" if base is None or cer is None or base["val"].get("val/cer") is None else f"{100 * (cer - base['val']['val/cer']):+.2f}"
        show = lambda x: "-" if x is None else f"{100 * x:.2f}%"  # noqa: E731
        print(f"| {r['recipe']} | {r['steps']} | {show(cer)} | {delta} | {show(ctc)} | {show(wer)} | {r['wall_s'] / 60:.1f} min |")
    tested = [r for r in rows if "test" in r]
    if tested:
        names = sorted({k for r in tested for k in r["test"] if "cer" in k})
        print("\n| augmentation | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
        for r in tested:
            print(f"| {r['recipe']} | " + " | ".join(f"{100 * r['test'][n]:.2f}%" if n in r["test"] else "-" for n in names) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of: {', '.join(RECIPES)}")
    parser.add_argument("--steps", type=int, default=1500, help="training steps per recipe")
    parser.add_argument("--test", action="store_true", help="also `tzoo test` each run's last checkpoint")
    parser.add_argument("--smoke", action="store_true", help="a tiny corpus and model, 2 steps a recipe (checks the script)")
    parser.add_argument("--results", type=Path, default=None, help="the JSON file to write")
    args = parser.parse_args(argv)
    try:
        recipes = parse_recipes(args.recipes)
    except ValueError as exc:
        parser.error(str(exc))
    extra: list[str] = []
    root, env = RUNS, None
    if args.smoke:  # the run card's MFU needs no measured peak FLOP/s here (a few seconds a run)
        env = {**os.environ, "TZOO_PEAK_FLOPS": "1e11"}
        root = Path(tempfile.mkdtemp(prefix="speech_augment_smoke_"))
        extra = [*SMOKE, f"--data.init_args.data_dir={root / 'corpus'}"]
        args.steps = 2
    results_path = args.results or RESULTS / ("speech_augment_smoke.json" if args.smoke else "speech_augment.json")
    import torch

    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "config": str(CONFIG.relative_to(REPO)), "steps": args.steps, "smoke": args.smoke, "rows": [],
    }  # fmt: skip
    if not args.smoke:  # the corpus first, so that no run's wall time holds its generation
        sys.path.insert(0, str(REPO / "benchmarks"))
        from speech import _datamodule

        _datamodule().prepare_data()
    for name in recipes:
        row = run_recipe(name, steps=args.steps, root=root, extra=extra, test=args.test, env=env)
        results["rows"].append(row)
        print(json.dumps(row))
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1) + "\n")
    print_table(results["rows"])


if __name__ == "__main__":
    main()
