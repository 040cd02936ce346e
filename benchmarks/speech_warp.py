"""Test-time frequency warping (VTLN) for a trained speech model: does decoding an unseen voice
with its spectrum scaled toward the training voices help?

For every utterance of a split the features are computed at several warp factors alpha (the VTLP
warp the model trained with, ``tokenizer.vtlp_warp``: a formant at f moves to alpha * f), and

- ``fixed``: the joint beam at alpha = 1 (what ``tzoo test`` does);
- ``ml``: maximum-likelihood VTLN (Lee & Rose 1998, with the CTC head as the acoustic model): the
  alpha = 1 beam's hypothesis is scored by the CTC head at every alpha, the beam runs again at the
  alpha that gives it the highest likelihood;
- ``confidence``: the alpha whose CTC best path is the most probable per node, then the beam there
  (what ``SpeechRecognizer(warp_search=...)`` does, ``tasks/speech/vtln.py``);
- ``tta``: the CTC head's log-probabilities averaged over every alpha (test-time augmentation),
  the decoder reading the alpha = 1 encoding, in the joint beam;
- ``speaker``: one alpha per speaker, as VTLN was defined (Lee & Rose 1998): the alpha whose CTC
  best paths are the most probable per node over all of the speaker's utterances in the split
  (the confidence pooled over them, each weighted by its nodes, ``vtln.SpeakerWarps``), then the
  beam there. The speaker is ``corpus.speaker_of``'s (eSpeak NG's variant, another engine's
  voice); it assumes a decoder that knows which utterances share a speaker (a session,
  a recording);
- ``speaker_online``: the same, pooled over the speaker's utterances decoded so far (this one
  included), in the order ``tzoo test`` decodes them (shortest first): what
  ``SpeechRecognizer(warp_search_by="speaker")`` does in one pass.

The choice among alphas uses only the audio (no reference), so every method is a decoder a user
could run. Error rates per engine, as benchmarks/speech.py reports them.

    flock /tmp/tzoo_cpu.lock python benchmarks/speech_warp.py --results benchmarks/results/speech_W.json

Prints a Markdown table and writes benchmarks/results/speech_warp.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speech import _by_group, _datamodule, _error_rates  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "speech_warp.json"


@torch.inference_mode()
def evaluate(module: Any, entries: list[dict[str, Any]], alphas: list[float], lexicon: Any = None) -> dict[str, Any]:
    from tzoo.tasks.speech.audio import load_audio
    from tzoo.tasks.speech.decoding import beam_search, ctc_log_likelihood, max_tokens
    from tzoo.tasks.speech.vtln import ctc_confidence, warped_encodings

    model = module.model
    one = alphas.index(1.0)

    def beam(encoded: torch.Tensor, ctc: torch.Tensor) -> list[int]:
        return beam_search(model, encoded[None], beam=module.beam_size, max_len=max_tokens(encoded.shape[0], module.max_text_len),
                           ctc_logits=ctc, ctc_weight=module.beam_ctc_weight, lexicon=lexicon,
                           length_penalty=module.beam_length_penalty)  # fmt: skip

    from tzoo.tasks.speech.corpus import speaker_of
    from tzoo.tasks.speech.vtln import SpeakerWarps

    hyps: dict[str, list[str]] = {"fixed": [], "ml": [], "confidence": [], "tta": []}
    chosen: dict[str, list[float]] = {"ml": [], "confidence": []}
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # per utterance: encodings, CTC logits, confidences
    start = time.perf_counter()
    for entry in entries:
        wave = load_audio(entry["audio"], model.sample_rate)
        encoded, mask, ctc = warped_encodings(model, wave[None], torch.tensor([len(wave)]), alphas)  # (A, N, *)
        first = beam(encoded[one], ctc[one])
        hyps["fixed"].append(module.text(first))
        nodes = ctc.shape[1]
        likelihood = torch.stack([ctc_log_likelihood(c, [first])[0] for c in ctc]) if first else torch.zeros(len(alphas))
        confidence = ctc_confidence(ctc, mask)  # (A,)
        for name, score in (("ml", likelihood / nodes), ("confidence", confidence)):
            a = int(score.argmax())
            chosen[name].append(alphas[a])
            hyps[name].append(module.text(first if a == one else beam(encoded[a], ctc[a])))
        kept.append((encoded, ctc, confidence))
        averaged = torch.logsumexp(ctc.float().log_softmax(-1), 0) - torch.log(torch.tensor(float(len(alphas))))
        hyps["tta"].append(module.text(beam(encoded[one], averaged)))
    speakers = [speaker_of(e) for e in entries]

    def pooled(order: list[int], pool: SpeakerWarps) -> list[int]:
        """Each utterance's alpha index as ``pool`` chooses it, fed in ``order``."""
        picks = [0] * len(entries)
        for i in order:
            picks[i] = int(pool.choose(kept[i][2][None], torch.tensor([kept[i][1].shape[1]]), [speakers[i]])[0])
        return picks

    everyone = SpeakerWarps()  # every utterance pooled first, then each decoded at its speaker's choice
    pooled(list(range(len(entries))), everyone)
    offline = [everyone.best(s) if s is not None else int(kept[i][2].argmax()) for i, s in enumerate(speakers)]
    online = pooled(sorted(range(len(entries)), key=lambda i: entries[i].get("duration") or 0.0), SpeakerWarps())
    for name, picks in (("speaker", offline), ("speaker_online", online)):
        chosen[name] = [alphas[a] for a in picks]
        hyps[name] = [module.text(beam(kept[i][0][a], kept[i][1][a])) for i, a in enumerate(picks)]
    refs = [e["text"] for e in entries]
    out: dict[str, Any] = {"utterances": len(entries), "seconds": round(time.perf_counter() - start, 1)}
    for name, h in hyps.items():
        by_engine, _ = _by_group(entries, h, refs)
        out[name] = {"all": _error_rates(h, refs), "by_engine": by_engine}
    out["chosen_alpha"] = {name: {str(a): sum(c == a for c in cs) for a in alphas} for name, cs in chosen.items()}
    engines = [e.get("engine", "?") for e in entries]
    out["chosen_alpha_by_engine"] = {
        name: {g: {str(a): sum(c == a and e == g for c, e in zip(cs, engines)) for a in alphas} for g in sorted(set(engines))}
        for name, cs in chosen.items()
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="a benchmarks/speech.py results JSON (its run and data options)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.88, 0.94, 1.0, 1.06, 1.12])
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--lexicon", default=None, help="decode within this lexicon (e.g. words)")
    args = parser.parse_args()
    if 1.0 not in args.alphas:
        raise SystemExit(f"--alphas must include 1.0 (the unwarped features every method starts from), got {args.alphas}")
    from tzoo.tasks.loading import load_module

    torch.set_num_threads(1)
    results = json.loads(args.results.read_text())
    module = load_module(Path(results["train"]["run_dir"]) / "checkpoints" / "last.ckpt", task="speech")
    data = _datamodule(results["train"].get("fit_options", []))
    from tzoo.tasks.speech.lexicon import Lexicon

    lexicon = Lexicon.load(args.lexicon, module.tokenizer) if args.lexicon else None
    report: dict[str, Any] = {"checkpoint": results["train"]["run_dir"], "alphas": args.alphas, "lexicon": args.lexicon}
    for split in args.splits:
        report[split] = evaluate(module, data.split_entries(split)[: args.limit], args.alphas, lexicon)
        r = report[split]
        engines = sorted(r["fixed"]["by_engine"])
        print(f"\n{split} ({r['utterances']} utterances, {r['seconds']} s): CER")
        print("| method | all | " + " | ".join(engines) + " |\n|---|---|" + "---|" * len(engines))
        for name in ("fixed", "ml", "confidence", "tta", "speaker", "speaker_online"):
            cells = " | ".join(f"{100 * r[name]['by_engine'][e]['cer']:.2f}" for e in engines)
            print(f"| {name} | {100 * r[name]['all']['cer']:.2f} | {cells} |")
        print(f"alphas chosen: {r['chosen_alpha']}")
        print(f"by engine: {r['chosen_alpha_by_engine']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
