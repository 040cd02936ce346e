"""How long the speech beam's transcripts are against the references, by beam width and CTC weight.

A beam that ranks ended hypotheses by their summed log-probabilities favours short ones: the wider it
searches, the likelier it finds an early end-of-sentence that outscores every full reading. This
decodes a fixed random sample of the test split (seed 0) with each width x CTC weight and reports the
CER, the transcripts' total length over the references' and how many are shorter than half their
reference (or longer than 1.5x): an attention-only beam (CTC weight 0) that gets worse as it widens,
with the length ratio falling, is ending early. ``--length_penalties``: the beam's length normalisation
(``beam_length_penalty``: ended hypotheses ranked by score / (length + 1) ** a), each measured.

    flock /tmp/tzoo_cpu.lock python benchmarks/speech_beam_length.py --results benchmarks/results/speech_LS0.json
    flock /tmp/tzoo_cpu.lock python benchmarks/speech_beam_length.py --results benchmarks/results/speech_LS0.json --length_penalties 0 0.5 1

Prints a Markdown table and writes benchmarks/results/speech_beam_length.json.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS / "speech.json", help="a benchmarks/speech.py result file")
    parser.add_argument("--utterances", type=int, default=200, help="random test utterances decoded (seed 0)")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.3])
    parser.add_argument("--length_penalties", type=float, nargs="+", default=[0.0])
    parser.add_argument("--out", type=Path, default=RESULTS / "speech_beam_length.json")
    args = parser.parse_args()

    from speech_decode import decode, encode, load_run  # the module's own beam; its test-time encoding
    from torchmetrics.functional.text import char_error_rate

    module, data, ckpt = load_run(json.loads(args.results.read_text())["train"])
    entries = data.split_entries("test")
    random.Random(0).shuffle(entries)
    entries = entries[: args.utterances]
    encodings, refs = encode(module, entries), [e["text"] for e in entries]
    rows = []
    for penalty, beam, weight in ((a, b, w) for a in args.length_penalties for b in args.beams for w in args.weights):
        start = time.perf_counter()
        hyps = decode(module, encodings, beam, weight, penalty)
        rows.append({"beam": beam, "ctc_weight": weight, "length_penalty": penalty, "cer": float(char_error_rate(hyps, refs)),
                     "length_ratio": sum(map(len, hyps)) / sum(map(len, refs)),
                     "under_half": sum(len(h) < 0.5 * len(r) for h, r in zip(hyps, refs)),
                     "over_1_5": sum(len(h) > 1.5 * len(r) for h, r in zip(hyps, refs)), "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
    print(f"checkpoint {ckpt}, {len(refs)} random test utterances\n")
    print("| length penalty | beam | CTC weight | CER | length / reference length | shorter than half | longer than 1.5x | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['length_penalty']} | {r['beam']} | {r['ctc_weight']} | {100 * r['cer']:.2f}% | {r['length_ratio']:.3f} | {r['under_half']} | {r['over_1_5']} | {r['seconds']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"checkpoint": str(ckpt), "utterances": len(refs), "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
