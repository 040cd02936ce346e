"""Choose the speech model's beam settings on the validation split, then report the test split.

For a trained checkpoint (by default the last run of ``benchmarks/speech.py``), decodes the
validation split (held-out voices of their own, never the test's) with every beam width x CTC weight
x length penalty of the grid (``beam_length_penalty``; by default only the checkpoint's), picks the
settings with the lowest validation CER, and decodes the test split with it: the
choice never sees the test split. The test numbers of the checkpoint's own pair are printed beside it (when they differ).

    flock /tmp/tzoo_cpu.lock python benchmarks/speech_decode.py
    flock /tmp/tzoo_cpu.lock python benchmarks/speech_decode.py --ckpt runs/speech/version_0/checkpoints/last.ckpt

Prints Markdown tables and writes benchmarks/results/speech_decode.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


@torch.inference_mode()
def decode(module: Any, encodings: list[torch.Tensor], beam: int, weight: float, length_penalty: float) -> list[str]:
    """The module's own joint beam search (``SpeechRecognizer._beam``) with these settings."""
    module.beam_size, module.beam_ctc_weight, module.beam_length_penalty = beam, weight, length_penalty
    return [module.text(module._beam(encoded)) for encoded in encodings]


def load_run(trained: dict[str, Any], ckpt: Path | None = None, **overrides: Any) -> tuple[Any, Any, Path]:
    """A ``benchmarks/speech.py`` run (its result file's ``train`` entry) -> its module (from ``ckpt``,
    by default the run's last checkpoint; ``overrides``: constructor arguments that win over the
    checkpoint's, ``load_module``), the data module of the corpus it trained on, and the checkpoint's
    path. Sets torch to one thread: one short utterance at a time decodes fastest so (benchmarks/speech.py)."""
    from speech import _datamodule

    from tzoo.tasks.loading import load_module

    ckpt = ckpt or Path(trained["run_dir"]) / "checkpoints" / "last.ckpt"
    module = load_module(ckpt, task="speech", **overrides)
    torch.set_num_threads(1)
    return module, _datamodule(trained.get("fit_options", [])), ckpt


@torch.inference_mode()
def encode(module: Any, entries: list[dict[str, Any]]) -> list[torch.Tensor]:
    """Each utterance's encoder output (1, N, D), as the module's test and predict encode it (at its
    surest frequency warp where the checkpoint's ``warp_search`` is set, or its speaker's with
    ``warp_search_by="speaker"``, ``vtln.py``; ``benchmarks/speech.py``'s ``_encode``)."""
    from speech import _encode

    from tzoo.tasks.speech.audio import load_audio
    from tzoo.tasks.speech.corpus import speaker_of

    waves = [load_audio(e["audio"], module.model.sample_rate) for e in entries]
    return [encoded for encoded, _ in _encode(module, waves, [speaker_of(e) for e in entries])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, default=None, help="default: the last checkpoint of the run in --results")
    parser.add_argument("--results", type=Path, default=RESULTS / "speech.json", help="a benchmarks/speech.py result file")
    parser.add_argument("--beams", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--length_penalties", type=float, nargs="+", default=None, help="default: the checkpoint's")
    parser.add_argument("--out", type=Path, default=RESULTS / "speech_decode.json")
    args = parser.parse_args()

    from torchmetrics.functional.text import char_error_rate, word_error_rate

    from speech import _by_group  # benchmarks/speech.py: error rates per engine

    trained = json.loads(args.results.read_text())["train"] if args.results.is_file() else {}
    if args.ckpt is None and not trained:
        parser.error(f"no --ckpt and no benchmarks/speech.py results at {args.results} to take the run's checkpoint from")
    module, data, ckpt = load_run(trained, args.ckpt)
    splits = {s: data.split_entries(s) for s in ("val", "test")}
    encodings = {s: encode(module, e) for s, e in splits.items()}
    refs = {s: [e["text"] for e in es] for s, es in splits.items()}

    def score(split: str, beam: int, weight: float, penalty: float) -> dict[str, Any]:
        start = time.perf_counter()
        hyps = decode(module, encodings[split], beam, weight, penalty)
        by_engine, _ = _by_group(splits[split], hyps, refs[split])
        return {"beam": beam, "ctc_weight": weight, "length_penalty": penalty, "cer": float(char_error_rate(hyps, refs[split])),
                "wer": float(word_error_rate(hyps, refs[split])), "cer_by_engine": {g: q["cer"] for g, q in by_engine.items()},
                "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip

    def engines(r: dict[str, Any]) -> str:
        return " · ".join(f"{name} {100 * cer:.2f}%" for name, cer in r["cer_by_engine"].items())

    own = (module.hparams.beam_size, module.hparams.beam_ctc_weight, module.hparams.get("beam_length_penalty", 0.0))  # the checkpoint's
    grid = [score("val", b, w, a) for a in (args.length_penalties or [own[2]]) for b in args.beams for w in args.weights]
    best = min(grid, key=lambda r: (r["cer"], r["wer"]))
    chosen = (best["beam"], best["ctc_weight"], best["length_penalty"])
    test = {"chosen": score("test", *chosen)}
    if own != chosen:
        test["config"] = score("test", *own)

    print(f"checkpoint {ckpt}\n\nvalidation split ({len(refs['val'])} utterances): joint CTC/attention beam search")
    print("| beam | CTC weight | length penalty | CER | WER | CER per engine | seconds |\n|---|---|---|---|---|---|---|")
    for r in grid:
        mark = " (chosen)" if r is best else ""
        print(f"| {r['beam']} | {r['ctc_weight']} | {r['length_penalty']} | {100 * r['cer']:.2f}%{mark} | {100 * r['wer']:.2f}% | {engines(r)} | {r['seconds']} |")
    print(f"\ntest split ({len(refs['test'])} utterances, voices unseen in training and validation)")
    print("| settings | beam | CTC weight | length penalty | CER | WER | CER per engine |\n|---|---|---|---|---|---|---|")
    for name, r in test.items():
        label = "chosen on validation" if name == "chosen" else "the checkpoint's"
        print(f"| {label} | {r['beam']} | {r['ctc_weight']} | {r['length_penalty']} | {100 * r['cer']:.2f}% | {100 * r['wer']:.2f}% | {engines(r)} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"checkpoint": str(ckpt), "val": grid, "test": test}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
