"""Short speech-recipe probes: train the speech recognizer for a fixed wall time on the generated
corpus of ``configs/speech/espeak.yaml`` and report the CTC and attention-greedy CER on the first 96
validation utterances. This is how the full config's choices were made (4-minute probes, one at a
time on the quiet 2-core machine): it ranks recipes by what they reach in a given time, not by what
they reach eventually.

A plain loop rather than Lightning (nothing else runs in the timed window): AdamW (betas 0.9/0.98,
weight decay 0.05), linear warm-up then a constant learning rate, gradient clipping at 1.0, batches
from the data module's length-bucket sampler.

    python benchmarks/speech_probe.py --seconds 240 --position rope --subsampling 2 --shortest_first

Prints one line per 100 steps and a result row; appends the row to
``benchmarks/results/speech_probes.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torchmetrics.text import CharErrorRate

from tzoo.core import TransformerConfig
from tzoo.tasks.speech.data import LengthBucketSampler, SpeechDataModule, collate
from tzoo.tasks.speech.model import SpeechConfig
from tzoo.tasks.speech.module import SpeechRecognizer

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=240)
    p.add_argument("--dim", type=int, default=144)
    p.add_argument("--encoder_depth", type=int, default=4)
    p.add_argument("--decoder_depth", type=int, default=1)
    p.add_argument("--num_heads", type=int, default=4)
    p.add_argument("--position", choices=["sinusoidal", "rope"], default="sinusoidal")
    p.add_argument("--subsampling", type=int, choices=[2, 4], default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--ctc_weight", type=float, default=0.5)
    p.add_argument("--masks", type=int, default=0, help="SpecAugment frequency and time masks (each)")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--shortest_first", action="store_true", help="the first pass shortest batches first (SortaGrad)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speech_probes.jsonl")
    a = p.parse_args()

    torch.manual_seed(0)
    data = SpeechDataModule("espeak", corpus_size=(20000, 300, 600), batch_size=a.batch_size, workers=2)
    data.prepare_data()
    data.setup("fit")
    train, val = data._dataset("train"), data._dataset("val")
    durations = [e["duration"] for e in train.entries]
    sampler = LengthBucketSampler(durations, a.batch_size, seed=0, shortest_first=a.shortest_first)
    stack = dict(dim=a.dim, num_heads=a.num_heads, dropout=a.dropout)
    net = SpeechConfig(
        subsampling=a.subsampling, freq_masks=a.masks, time_masks=a.masks,
        encoder_position="sinusoidal" if a.position == "sinusoidal" else "none",
        encoder=TransformerConfig(depth=a.encoder_depth, position="rope" if a.position == "rope" else "none", **stack),
        decoder=TransformerConfig(depth=a.decoder_depth, position="rope", **stack),
    )  # fmt: skip
    model = SpeechRecognizer(net, ctc_weight=a.ctc_weight, label_smoothing=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.98), weight_decay=0.05)
    model.train()
    batches, step, history = iter(sampler), 0, []
    start = time.perf_counter()
    while time.perf_counter() - start < a.seconds:
        indices = next(batches, None)
        if indices is None:
            batches = iter(sampler)
            continue
        for group in opt.param_groups:
            group["lr"] = a.lr * min(1.0, (step + 1) / a.warmup)
        loss, ctc, ce = model._losses(collate([train[i] for i in indices]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        step += 1
        history.append((ctc.item(), ce.item()))
        if step % 100 == 0:
            ctc100 = sum(h[0] for h in history[-100:]) / 100
            ce100 = sum(h[1] for h in history[-100:]) / 100
            print(f"step {step}  {time.perf_counter() - start:.0f} s  train ctc {ctc100:.3f}  ce {ce100:.3f}", flush=True)

    model.eval()
    cer_ctc, cer_greedy = CharErrorRate(), CharErrorRate()
    order = sorted(range(min(96, len(val))), key=lambda i: val.entries[i]["duration"])
    with torch.inference_mode():
        for s in range(0, len(order), 16):
            batch = collate([val[i] for i in order[s : s + 16]])
            refs = model._references(batch[2])
            cer_ctc(model.transcribe(batch[0], batch[1], method="ctc"), refs)
            cer_greedy(model.transcribe(batch[0], batch[1], method="greedy"), refs)
    row = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}, "steps": step,
           "cer_ctc": float(cer_ctc.compute()), "cer_greedy": float(cer_greedy.compute())}  # fmt: skip
    print("| steps | CTC CER | attention greedy CER |\n|---|---|---|")
    print(f"| {step} | {100 * row['cer_ctc']:.1f}% | {100 * row['cer_greedy']:.1f}% |")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
