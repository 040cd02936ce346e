"""Shallow fusion with a character language model in the speech beam (``tasks/speech/fusion.py``).

Stages: ``text`` writes the LM's training text (every line of the training plays and random word
sequences, ``fusion.training_text``); ``lm`` trains the ``lm`` task's character GPT on it
(``configs/lm/speech_fusion.yaml``); ``eval`` takes a speech checkpoint (by default the run in
``--results``, a ``benchmarks/speech.py`` result file), picks the LM weight with the lowest CER on
the validation split (the test splits never seen by the choice), and reports the test and
real-sentence splits per engine with and without the LM, with the LM within the lexicon
``benchmarks/speech.py`` closes each split's beam with (``words``, ``training``; its rows give the
lexicon without the LM), and the beam's time per utterance.

    flock /tmp/tzoo_cpu.lock python benchmarks/speech_lm.py --results benchmarks/results/speech.json

Prints Markdown tables and writes benchmarks/results/speech_lm.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TZOO = str(Path(sys.executable).parent / "tzoo")
LM_RUNS = REPO / "runs" / "speech_lm"


def stage_text(out: dict[str, Any], random_lines: int) -> None:
    from tzoo.tasks.speech.fusion import training_text

    path = training_text(LM_RUNS / "text.txt", random_lines=random_lines)
    text = path.read_text()
    out["text"] = {"path": str(path), "lines": text.count("\n"), "chars": len(text), "random_lines": random_lines}
    print(f"text: {out['text']}")


def stage_lm(out: dict[str, Any]) -> None:
    before = set(LM_RUNS.rglob("version_*"))
    start = time.perf_counter()
    done = subprocess.run([TZOO, "fit", "--config", str(REPO / "configs" / "lm" / "speech_fusion.yaml"), "--trainer.enable_progress_bar=false",
                           f"--trainer.default_root_dir={LM_RUNS}", f"--data.init_args.corpus={out['text']['path']}"],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-5000:])
        raise SystemExit("tzoo fit (the language model) failed")
    (run,) = set(LM_RUNS.rglob("version_*")) - before
    card = json.loads((run / "run_card.json").read_text())
    out["lm"] = {"checkpoint": str(run / "checkpoints" / "last.ckpt"), "wall_s": round(time.perf_counter() - start, 1),
                 "steps": card["steps"], "params": card["params"], "val": card["metrics"]}  # fmt: skip
    print(f"lm: {out['lm']}")


@torch.inference_mode()
def _decode(module: Any, encodings: list[torch.Tensor], weight: float) -> tuple[list[str], list[float]]:
    """The module's joint beam (``SpeechRecognizer._beam``) with LM weight ``weight``: texts and seconds each."""
    module.lm_weight = weight
    texts, seconds = [], []
    for encoded in encodings:
        start = time.perf_counter()
        texts.append(module.text(module._beam(encoded)))
        seconds.append(time.perf_counter() - start)
    return texts, seconds


def stage_eval(out: dict[str, Any], speech: dict[str, Any], weights: list[float], val_limit: int, overrides: dict[str, Any]) -> None:
    from speech import _by_group, _error_rates  # benchmarks/speech.py
    from speech_decode import encode, load_run

    from tzoo.tasks.speech.lexicon import Lexicon

    # the LM in the beam (its weight set per decoding below); overrides: constructor arguments that win
    # over the checkpoint's (warp_search_by, beam_size: decoding settings the run trained without)
    module, data, _ = load_run(speech["train"], **{"lm": out["lm"]["checkpoint"], **overrides})
    val = data.split_entries("val")[:val_limit]
    val_enc, val_refs = encode(module, val), [e["text"] for e in val]
    sweep = {}
    for w in [0.0, *weights]:
        hyps, _ = _decode(module, val_enc, w)
        sweep[w] = _error_rates(hyps, val_refs)
        print(f"val, lm_weight {w}: {sweep[w]}")
    best = min(weights, key=lambda w: sweep[w]["cer"])
    out["eval"] = {"speech_run": speech["train"]["run_dir"], "val_utterances": len(val), "val_sweep": {str(w): q for w, q in sweep.items()},
                   "lm_weight": best, "warp_search": module.warp_search, "warp_search_by": module.warp_search_by,
                   "beam_size": module.beam_size, "beam_length_penalty": module.beam_length_penalty}  # fmt: skip
    # the lexicons benchmarks/speech.py closes each split's beam with (its rows without the LM)
    lexicons = {"test": "words", "test_sentences": "training"}
    for split in ("test", "test_sentences"):
        entries = data.split_entries(split)
        encodings, refs = encode(module, entries), [e["text"] for e in entries]
        row: dict[str, Any] = {}
        for name, w, lexicon in (("no_lm", 0.0, None), ("lm", best, None), ("lexicon_lm", best, lexicons[split])):
            module.lexicon = None if lexicon is None else Lexicon.load(lexicon, module.tokenizer)
            hyps, seconds = _decode(module, encodings, w)
            by_engine, _ = _by_group(entries, hyps, refs)
            row[name] = {"all": _error_rates(hyps, refs), "by_engine": by_engine, "median_s": statistics.median(seconds), "lexicon": lexicon}
        module.lexicon = None
        out["eval"][split] = row
        print(f"{split}: {row}")


def print_tables(out: dict[str, Any]) -> None:
    e = out["eval"]
    print(f"\nLM: {out['lm']['steps']} steps, val loss {out['lm']['val'].get('val/loss')}; lm_weight chosen on val: {e['lm_weight']}")
    print("\n| val CER (WER) by lm_weight | " + " | ".join(e["val_sweep"]) + " |\n|---|" + "---|" * len(e["val_sweep"]))
    print("| | " + " | ".join(f"{q['cer']:.2%} ({q['wer']:.2%})" for q in e["val_sweep"].values()) + " |")
    for split in ("test", "test_sentences"):
        row = e[split]
        groups = ["all", *row["no_lm"]["by_engine"]]
        print(f"\n| {split}: CER (WER) | " + " | ".join(groups) + " | median s / utterance |\n|---|" + "---|" * (len(groups) + 1))
        for name, q in row.items():
            cells = [q["all"], *(q["by_engine"][g] for g in groups[1:])]
            print(f"| {name} | " + " | ".join(f"{c['cer']:.2%} ({c['wer']:.2%})" for c in cells) + f" | {q['median_s']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=["text", "lm", "eval", "all"], default="all")
    parser.add_argument("--results", type=Path, default=RESULTS / "speech.json", help="the benchmarks/speech.py run to decode")
    parser.add_argument("--out", type=Path, default=RESULTS / "speech_lm.json")
    parser.add_argument("--random-lines", type=int, default=100_000)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--val-limit", type=int, default=300)
    parser.add_argument("--warp_search_by", choices=("utterance", "speaker"), default=None,
                        help="one frequency warp per utterance or per speaker (vtln.py; default: the checkpoint's)")
    parser.add_argument("--beam_size", type=int, default=None, help="beam width (default: the checkpoint's)")
    parser.add_argument("--beam_length_penalty", type=float, default=None, help="the beam's length normalisation (default: the checkpoint's)")
    args = parser.parse_args()
    given = (("warp_search_by", args.warp_search_by), ("beam_size", args.beam_size), ("beam_length_penalty", args.beam_length_penalty))
    overrides = {k: v for k, v in given if v is not None}
    out = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.stage in ("text", "all"):
        stage_text(out, args.random_lines)
    if args.stage in ("lm", "all"):
        stage_lm(out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    if args.stage in ("eval", "all"):
        stage_eval(out, json.loads(args.results.read_text()), args.weights, args.val_limit, overrides)
        args.out.write_text(json.dumps(out, indent=1) + "\n")
        print_tables(out)


if __name__ == "__main__":
    main()
