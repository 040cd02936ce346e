"""How much the speech model's features change with the recording level, i.e. what the ``gain``
augmentation (tasks/speech/augment.py) can teach it. The front end (``LogMel``) takes the log of the
mel power and normalises each band per utterance: a gain g adds 2 log g to every value before the
mean is subtracted, so only values at the log's floor (mel power clamped at 1e-6) can change.

    python benchmarks/speech_level.py                 # 200 training utterances of configs/speech/espeak.yaml's corpus
    python benchmarks/speech_level.py --utterances 50 --db -20 -12 6

Reads the generated corpus (made once into the cache by ``tzoo fit`` or ``benchmarks/speech.py``;
this script generates it if it is missing). Prints a Markdown table and writes
``benchmarks/results/speech_level.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "speech_level.json"


def feature_change(waves: list[torch.Tensor], db: float) -> dict[str, float]:
    """Per utterance, the largest |change| of a normalised log-mel value under a gain of ``db``, and
    the share of values that move by more than 1e-3; summarised over ``waves``."""
    from tzoo.tasks.speech.tokenizer import LogMel

    logmel, scale = LogMel(), 10 ** (db / 20)
    largest, shares = [], []
    for wave in waves:
        n = torch.tensor([len(wave)])
        before, _ = logmel(wave[None], n)
        after, _ = logmel(wave[None] * scale, n)
        change = (after - before).abs()
        largest.append(change.max().item())
        shares.append((change > 1e-3).float().mean().item())
    return {
        "db": db, "utterances": len(waves), "median_largest_change": statistics.median(largest),
        "max_largest_change": max(largest), "utterances_changed_over_1e-3": sum(s > 0 for s in shares),
        "mean_share_changed_over_1e-3": statistics.fmean(shares),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utterances", type=int, default=200, help="training utterances to measure (the first N)")
    parser.add_argument("--db", type=float, nargs="+", default=[-12.0, -6.0, 6.0], help="gains to apply, in dB")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "benchmarks"))
    from speech import _datamodule

    from tzoo.tasks.speech.audio import load_audio

    torch.set_num_threads(1)
    data = _datamodule()
    data.prepare_data()
    entries = data.split_entries("train")[: args.utterances]
    waves = [load_audio(e["audio"], data.sample_rate) for e in entries]
    rows = [feature_change(waves, db) for db in args.db]
    print("\n| gain | utterances | largest change of a feature value: median / max over utterances | utterances with any change > 1e-3 | share of values changed > 1e-3 |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['db']:+g} dB | {r['utterances']} | {r['median_largest_change']:.1e} / {r['max_largest_change']:.2f} | "
              f"{r['utterances_changed_over_1e-3']} | {100 * r['mean_share_changed_over_1e-3']:.3f}% |")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"corpus": str(data.root), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
