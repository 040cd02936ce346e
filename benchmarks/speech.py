"""Speech task benchmark: the held-out-speaker error rates of the full run, decoding speed, and the
KV cache's effect on beam search.

* corpus: the generated eSpeak NG corpus of ``configs/speech/espeak.yaml`` (made once into the cache;
  its generation time is reported apart from training).
* train: ``tzoo fit --config configs/speech/espeak.yaml`` run as a user runs it (a subprocess, wall
  time from launch to exit). Target: <= 30 minutes on this 2-core CPU.
* eval, on the test split (voices never heard in training: held-out eSpeak NG variants, Festival's
  HTS voice, Flite's voices, as installed), from the run's last checkpoint (or ``--checkpoint``): CER / WER
  (torchmetrics) with joint CTC/attention beam search (the config's beam width and CTC weight), the
  same beam without the CTC head, attention greedy and CTC greedy; the joint beam within the
  corpus's words (a closed vocabulary, ``lexicon: words``); the joint beam's CER / WER per
  engine and per voice, free and within the lexicon; and the same for the real-sentence split (lines of plays training never
  read; its lexicon beam within ``training``, the training plays' words). Targets: eSpeak NG beam CER <= 5%, unseen Festival voice <= 20%.
* real-time factor of greedy decoding at batch 1 (log-mel + encoder + greedy decoder with the KV
  cache, audio already in memory): decoding time / audio time over the test split. Target: <= 0.05.
* beam search (as the module runs it: joint with CTC) with and without the KV cache on the same
  utterances: wall time and whether every hypothesis is the same. Target: >= 3x faster, same hypotheses.

    flock /tmp/tzoo_cpu.lock python benchmarks/speech.py                 # both stages
    flock /tmp/tzoo_cpu.lock python benchmarks/speech.py --stage train   # corpus + training
    flock /tmp/tzoo_cpu.lock python benchmarks/speech.py --stage eval    # the trained run's numbers

Prints Markdown tables and writes benchmarks/results/speech.json (the train stage writes its part
first; the eval stage adds to it).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
TZOO = str(Path(sys.executable).parent / "tzoo")
CONFIG = REPO / "configs" / "speech" / "espeak.yaml"
RESULTS = REPO / "benchmarks" / "results" / "speech.json"
RUNS = REPO / "runs" / "benchmark_speech"


def _load_results() -> dict[str, Any]:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def _save_results(results: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


def _datamodule(fit_options: list[str] = ()):
    """The config's data module with the ``--data.*`` options among ``fit_options`` (jsonargparse
    builds it exactly as the CLI does), so that the benchmark prepares and tests the corpus the
    training run reads."""
    import yaml
    from jsonargparse import ArgumentParser
    import lightning.pytorch as pl

    spec = yaml.safe_load(CONFIG.read_text())["data"]
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(pl.LightningDataModule, "data", required=True)
    data_options = [o for o in fit_options if o.startswith("--data.")]
    return parser.instantiate(parser.parse_args(["--data", json.dumps(spec), *data_options])).data


def stage_train(results: dict[str, Any], fit_options: list[str]) -> None:
    data = _datamodule(fit_options)
    start = time.perf_counter()
    data.prepare_data()
    info = json.loads((data.root / "corpus.json").read_text())
    splits = ["train", "val", *data.test_splits()]
    hours = {s: sum(e["duration"] for e in data.split_entries(s)) / 3600 for s in splits}
    results["corpus"] = {
        "root": str(data.root), "generation_s": info["generation_seconds"], "check_s": round(time.perf_counter() - start, 1),
        "utterances": {s: len(data.split_entries(s)) for s in splits},
        "hours": {s: round(h, 2) for s, h in hours.items()},
        "engines": info.get("engines"), "per_engine": info.get("utterances"),
    }  # fmt: skip
    print(f"corpus: {results['corpus']}")
    RUNS.mkdir(parents=True, exist_ok=True)
    before = set(RUNS.rglob("version_*"))
    start = time.perf_counter()
    # The environment as it is (no OMP_WAIT_POLICY forced): on the quiet machine PASSIVE (threads
    # sleep between parallel regions) cost 1.7x in training steps (234 against 400 in 45 s of the
    # probe loop); on a machine shared with busy processes spinning threads once made a step 20x
    # slower, so set OMP_WAIT_POLICY=PASSIVE yourself there.
    done = subprocess.run(
        [TZOO, "fit", "--config", str(CONFIG), "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={RUNS}", *fit_options],
        capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-5000:])
        raise SystemExit("tzoo fit failed")
    (run,) = set(RUNS.rglob("version_*")) - before
    card = json.loads((run / "run_card.json").read_text())
    results["train"] = {"run_dir": str(run), "fit_options": fit_options, "wall_s": round(wall, 1), "steps": card["steps"], "epochs": card["epochs"],
                        "train_step_time_s": card["train_step_time_s"], "params": card["params"], "val": card["metrics"]}  # fmt: skip
    print(f"train: {results['train']}")


def _error_rates(hyps: list[str], refs: list[str]) -> dict[str, float]:
    from torchmetrics.functional.text import char_error_rate, word_error_rate

    return {"cer": float(char_error_rate(hyps, refs)), "wer": float(word_error_rate(hyps, refs))}


def _encode(module: Any, waves: list[torch.Tensor], speakers: list[str | None]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each utterance's encoder output (1, N, D) and mask (1, N), one at a time, as the module's test
    encodes it (at its surest frequency warp with ``warp_search``; with ``warp_search_by="speaker"``
    at its speaker's, pooled over the split's utterances shortest first, the order ``tzoo test``
    takes): every decoding below reads these."""
    module.speaker_warps.reset()
    encodings: list[Any] = [None] * len(waves)
    for i in sorted(range(len(waves)), key=lambda i: len(waves[i])):
        encodings[i] = module.encode(waves[i][None], torch.tensor([len(waves[i])]), [speakers[i]])
    return encodings


def _decodings(module: Any, encodings: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, list[str]]:
    """The joint beam, attention greedy and CTC greedy of each encoding (``SpeechRecognizer._decode``)."""
    return {method: [module._decode(*e, method=method)[0] for e in encodings] for method in ("beam", "greedy", "ctc")}


def _lexicon_beams(module: Any, lexicon: Any, encodings: list[tuple[torch.Tensor, torch.Tensor]]) -> list[str]:
    """The module's joint beam on each encoding, within ``lexicon``'s words."""
    previous, module.lexicon = module.lexicon, lexicon
    try:
        return [module._decode(*e, method="beam")[0] for e in encodings]
    finally:
        module.lexicon = previous


def _greedy_rtf(module: Any, waves: list[torch.Tensor], threads: int) -> float:
    """Decoding time / audio time of greedy decoding, one utterance at a time, with ``threads`` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        longest = max(waves, key=len)
        module.transcribe(longest[None], torch.tensor([len(longest)]), method="greedy")  # warm-up: every cache length
        seconds = 0.0
        for wave in waves:
            start = time.perf_counter()
            module.transcribe(wave[None], torch.tensor([len(wave)]), method="greedy")
            seconds += time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    return seconds / (sum(len(w) for w in waves) / module.model.sample_rate)


@torch.inference_mode()
def stage_eval(results: dict[str, Any], *, speed_utterances: int, limit: int | None = None,
               beam_size: int | None = None, beam_ctc_weight: float | None = None, warp_search: list[float] | None = None,
               warp_search_by: str | None = None, beam_length_penalty: float | None = None, checkpoint: str = "last.ckpt") -> None:
    from tzoo.tasks.loading import load_module
    from tzoo.tasks.speech.audio import load_audio
    from tzoo.tasks.speech.decoding import beam_search, max_tokens
    from tzoo.tasks.speech.corpus import speaker_of
    from tzoo.tasks.speech.lexicon import Lexicon

    run = Path(results["train"]["run_dir"])
    # settings chosen after training (benchmarks/speech_decode.py picks the beam's on the val split;
    # test-time VTLN, vtln.py, on a checkpoint trained without it); None: the checkpoint's
    settings = {"beam_size": beam_size, "beam_ctc_weight": beam_ctc_weight, "warp_search_by": warp_search_by, "beam_length_penalty": beam_length_penalty}
    overrides = {k: v for k, v in settings.items() if v is not None}
    if warp_search is not None:  # an empty list: no search, so no warp to pool per speaker either
        overrides["warp_search"] = warp_search or None
        if not warp_search:
            overrides.setdefault("warp_search_by", "utterance")
    path = run / "checkpoints" / checkpoint
    if checkpoint == "current.ckpt" and not path.exists():  # the optimizer's weights, no average (ema_variants.py)
        from tzoo.tasks.ema_variants import write_current

        write_current(path.with_name("last.ckpt"))
    module = load_module(path, task="speech", **overrides)  # checked as at construction
    model, beam, penalty = module.model, module.beam_size, module.beam_length_penalty
    data = _datamodule(results["train"].get("fit_options", []))
    entries = data.split_entries("test")[:limit]
    waves = [load_audio(e["audio"], module.model.sample_rate) for e in entries]
    refs = [e["text"] for e in entries]
    audio_s = sum(len(w) for w in waves) / module.model.sample_rate

    # error rates, one utterance at a time (no padding): beam search, attention greedy, CTC greedy.
    # Decoding one short utterance is a chain of small matrix products: one thread does it fastest
    # (two threads spend more on synchronising than they gain), so decoding runs on one thread.
    torch.set_num_threads(1)
    start = time.perf_counter()
    encodings = _encode(module, waves, [speaker_of(e) for e in entries])
    hyps = _decodings(module, encodings)
    eval_s = time.perf_counter() - start
    hyps["beam_attention"] = [  # the same beam without the CTC head's prefix scores
        module.text(beam_search(model, encoded, beam=beam, max_len=max_tokens(encoded.shape[1], module.max_text_len), length_penalty=penalty))
        for encoded, _ in encodings
    ]
    # the joint beam within the corpus's word list and digits (a closed vocabulary, lexicon.py)
    words = Lexicon.load("words", module.tokenizer)
    hyps["beam_lexicon"] = _lexicon_beams(module, words, encodings)
    quality = {name: _error_rates(h, refs) for name, h in hyps.items()}
    by_engine, by_voice = _by_group(entries, hyps["beam"], refs)
    lexicon_by_engine, lexicon_by_voice = _by_group(entries, hyps["beam_lexicon"], refs)
    examples = [{"ref": r, "beam": h} for r, h in list(zip(refs, hyps["beam"]))[:8]]
    errors = [{"ref": r, "beam": h} for r, h in zip(refs, hyps["beam"]) if r != h][:8]
    rtf = {threads: _greedy_rtf(module, waves, threads) for threads in (1, 2)}
    sentences = _sentences(module, data, limit) if "test_sentences" in data.test_splits() else None

    # beam search with and without the KV cache on the same utterances: a fixed random sample
    order = torch.randperm(len(waves), generator=torch.Generator().manual_seed(0))[:speed_utterances].tolist()
    # twice: the attention beam alone (all of its work is the decoder's) and the joint search the
    # module runs (its CTC prefix scores are the same work with or without the cache)
    timed = [encodings[i][0] for i in order]
    ctc_logits = [model.ctc_head(e[0]) for e in timed]
    weight = module.beam_ctc_weight
    cache = {}
    for name, w in (("attention", 0.0), ("joint", weight)):
        timing: dict[bool, float] = {}
        outs: dict[bool, list[list[int]]] = {}
        for use_cache in (True, False, True):  # the cached run twice (warm-up), the faster one counts
            start = time.perf_counter()
            outs[use_cache] = [
                beam_search(model, e, beam=beam, max_len=max_tokens(e.shape[1], module.max_text_len), use_cache=use_cache,
                            ctc_logits=c, ctc_weight=w, length_penalty=penalty)
                for e, c in zip(timed, ctc_logits)
            ]
            timing[use_cache] = min(timing.get(use_cache, float("inf")), time.perf_counter() - start)
        cache[name] = {"utterances": len(order), "tokens": sum(len(o) + 1 for o in outs[True]), "ctc_weight": w,
                       "with_cache_s": timing[True], "without_cache_s": timing[False], "speedup": timing[False] / timing[True],
                       "same_hypotheses": sum(a == b for a, b in zip(outs[True], outs[False]))}  # fmt: skip

    results["eval"] = {
        "checkpoint": checkpoint, "test_utterances": len(entries), "test_audio_s": round(audio_s, 1), "beam": beam, "beam_ctc_weight": weight, "beam_length_penalty": penalty, "decode_threads": 1,
        "warp_search": module.warp_search, "warp_search_by": module.warp_search_by,
        "eval_s": round(eval_s, 1), "quality": quality, "beam_by_engine": by_engine, "beam_by_voice": by_voice,
        "lexicon": {"name": "words", "words": len(words)},
        "lexicon_by_engine": lexicon_by_engine, "lexicon_by_voice": lexicon_by_voice,
        "sentences": sentences, "greedy_rtf": rtf[1], "greedy_rtf_2_threads": rtf[2], "cache": cache,
        "examples": examples, "errors": errors,
    }  # fmt: skip


def _by_group(entries: list[dict[str, Any]], hyps: list[str], refs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Error rates (and utterance counts) per engine and per engine/voice (``corpus.report_groups``);
    entries without an engine (older corpora) are grouped by their voice variant."""
    from tzoo.tasks.speech.corpus import report_groups

    pairs: dict[str, list[tuple[str, str]]] = {}
    for entry, h, r in zip(entries, hyps, refs):
        groups = report_groups(entry) or ("espeak", f"espeak/{str(entry.get('voice', '?')).split('+')[-1]}")
        for g in groups:
            pairs.setdefault(g, []).append((h, r))
    rates = {g: {**_error_rates(*map(list, zip(*p))), "utterances": len(p)} for g, p in sorted(pairs.items())}
    return {g: q for g, q in rates.items() if "/" not in g}, {g: q for g, q in rates.items() if "/" in g}


def _sentences(module: Any, data: Any, limit: int | None) -> dict[str, Any]:
    """The real-sentence split: joint beam, attention greedy and CTC greedy, one utterance at a
    time, and the joint beam within the training texts' vocabulary (lexicon ``training``: the
    test plays' words it lacks cannot be written); the joint beam per engine and voice."""
    from tzoo.tasks.speech.audio import load_audio
    from tzoo.tasks.speech.corpus import speaker_of
    from tzoo.tasks.speech.lexicon import Lexicon

    entries = data.split_entries("test_sentences")[:limit]
    refs = [e["text"] for e in entries]
    start = time.perf_counter()
    encodings = _encode(module, [load_audio(e["audio"], module.model.sample_rate) for e in entries], [speaker_of(e) for e in entries])
    hyps = _decodings(module, encodings)
    eval_s = time.perf_counter() - start
    lexicon = Lexicon.load("training", module.tokenizer)
    hyps["beam_lexicon"] = _lexicon_beams(module, lexicon, encodings)
    by_engine, by_voice = _by_group(entries, hyps["beam"], refs)
    return {"utterances": len(entries), "eval_s": round(eval_s, 1),
            "lexicon": {"name": "training", "words": len(lexicon), "oov_rate": lexicon.oov_rate(refs)},
            "quality": {name: _error_rates(h, refs) for name, h in hyps.items()}, "beam_by_engine": by_engine,
            "beam_by_voice": by_voice, "errors": [{"ref": r, "beam": h} for r, h in zip(refs, hyps["beam"]) if r != h][:8]}  # fmt: skip


def _group_table(title: str, by_engine: dict[str, Any], by_voice: dict[str, Any]) -> None:
    print(f"\n| {title} | utterances | CER | WER |\n|---|---|---|---|")
    for engine, q in by_engine.items():
        print(f"| **{engine}** | {q['utterances']} | {100 * q['cer']:.2f}% | {100 * q['wer']:.2f}% |")
        for voice, v in by_voice.items():
            if voice.split("/")[0] == engine:
                print(f"| {voice} | {v['utterances']} | {100 * v['cer']:.2f}% | {100 * v['wer']:.2f}% |")


def print_tables(results: dict[str, Any]) -> None:
    c, t = results.get("corpus"), results.get("train")
    if c and t:
        splits = list(c["utterances"])
        print(f"\n| corpus (generated once) | {' | '.join(splits)} |\n|---|" + "---|" * len(splits))
        print("| utterances | " + " | ".join(str(c["utterances"][s]) for s in splits) + " |")
        print("| hours | " + " | ".join(str(c["hours"][s]) for s in splits) + " |")
        for engine in (c.get("engines") or {}):
            print(f"| {engine} utterances | " + " | ".join(str(c["per_engine"].get(s, {}).get(engine, 0)) for s in splits) + " |")
        print(f"\ncorpus generation: {c['generation_s']:.0f} s; training (`tzoo fit`, launch to exit): {t['wall_s'] / 60:.1f} min, "
              f"{t['steps']} steps, {t['params'] / 1e6:.2f} M parameters")  # fmt: skip
    e = results.get("eval")
    if not e:
        return
    print(f"\nTest split (its voices: the corpus spec's test voices, by default none heard in training; {e['test_utterances']} utterances, {e['test_audio_s'] / 60:.1f} min of audio):\n")
    if e.get("warp_search"):
        who = "its speaker's surest" if e.get("warp_search_by") == "speaker" else "its surest"
        print(f"Every decoding below reads each utterance at {who} frequency warp among {list(e['warp_search'])} (warp_search, vtln.py).\n")
    print("| decoding | CER | WER |\n|---|---|---|")
    lexicon = e.get("lexicon", {})
    normalised = f", length penalty {e['beam_length_penalty']}" if e.get("beam_length_penalty") else ""
    rows = (("beam", f"joint CTC/attention beam search (width {e['beam']}, CTC weight {e.get('beam_ctc_weight', 0)}{normalised})"),
            ("beam_lexicon", f"the same within lexicon `{lexicon.get('name')}` ({lexicon.get('words')} words: a closed vocabulary)"),
            ("beam_attention", f"attention beam search (width {e['beam']}{normalised})"), ("greedy", "attention greedy"), ("ctc", "CTC greedy"))
    for name, label in rows:
        if name not in e["quality"]:
            continue
        q = e["quality"][name]
        print(f"| {label} | {100 * q['cer']:.2f}% | {100 * q['wer']:.2f}% |")
    if "beam_by_engine" in e:
        _group_table("test split per engine / voice (joint beam)", e["beam_by_engine"], e["beam_by_voice"])
        if "lexicon_by_engine" in e:
            _group_table(f"test split per engine / voice (joint beam, lexicon `{lexicon['name']}`)", e["lexicon_by_engine"], e["lexicon_by_voice"])
    elif "beam_by_voice" in e:  # older results: eSpeak NG variants only
        print("\n| held-out voice variant (joint beam) | " + " | ".join(e["beam_by_voice"]) + " |")
        print("|---|" + "---|" * len(e["beam_by_voice"]))
        for m in ("cer", "wer"):
            print(f"| {m.upper()} | " + " | ".join(f"{100 * q[m]:.2f}%" for q in e["beam_by_voice"].values()) + " |")
    s = e.get("sentences")
    if s:
        print(f"\nReal-sentence test split (lines of plays never read in training; {s['utterances']} utterances):\n")
        print("| decoding | CER | WER |\n|---|---|---|")
        sl = s.get("lexicon", {})
        for name, label in (("beam", "joint CTC/attention beam"), ("greedy", "attention greedy"), ("ctc", "CTC greedy"),
                            ("beam_lexicon", f"joint beam within lexicon `{sl.get('name')}` ({sl.get('words')} words; "
                                             f"{100 * sl.get('oov_rate', 0):.1f}% of the split's words are not among them)")):
            if name not in s["quality"]:
                continue
            q = s["quality"][name]
            print(f"| {label} | {100 * q['cer']:.2f}% | {100 * q['wer']:.2f}% |")
        _group_table("real sentences per engine / voice (joint beam)", s["beam_by_engine"], s["beam_by_voice"])
    print("\n| speed (CPU, batch 1) | value | target |\n|---|---|---|")
    print(f"| greedy real-time factor, 1 thread (log-mel + encoder + decoder) | {e['greedy_rtf']:.4f} | <= 0.05 |")
    print(f"| greedy real-time factor, 2 threads | {e['greedy_rtf_2_threads']:.4f} | |")
    caches = e["cache"] if "attention" in e["cache"] else {"attention": e["cache"]}  # older results: one entry
    for name, k in caches.items():
        what = "attention beam" if name == "attention" else f"joint CTC/attention beam (CTC weight {k['ctc_weight']})"
        print(f"| {what} with / without KV cache ({k['utterances']} random test utterances, {k['tokens']} tokens) | "
              f"{k['with_cache_s']:.2f} s / {k['without_cache_s']:.2f} s = {k['speedup']:.2f}x faster | >= 3x |")  # fmt: skip
        print(f"| same hypotheses with and without the cache | {k['same_hypotheses']}/{k['utterances']} | all |")


def main() -> None:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=("all", "train", "eval"), default="all")
    parser.add_argument("--speed_utterances", type=int, default=60, help="utterances in the cache comparison")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N test utterances (a quick check)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON file to write (and, for --stage eval, read)")
    parser.add_argument("--beam_size", type=int, default=None, help="beam width for the evaluation (default: the checkpoint's)")
    parser.add_argument("--beam_ctc_weight", type=float, default=None, help="CTC weight of the joint beam (default: the checkpoint's)")
    parser.add_argument("--beam_length_penalty", type=float, default=None, help="the beam's length normalisation (default: the checkpoint's)")
    parser.add_argument("--warp_search", type=float, nargs="*", default=None,
                        help="test-time frequency warps to choose among per utterance (vtln.py; default: the checkpoint's; none given: off)")
    parser.add_argument("--warp_search_by", choices=("utterance", "speaker"), default=None,
                        help="one warp per utterance or per speaker, pooled (vtln.py; default: the checkpoint's)")
    parser.add_argument("--checkpoint", default="last.ckpt",
                        help="the run's checkpoint to evaluate, in its checkpoints folder (e.g. ema-0.9995.ckpt, tasks/ema_variants.py; "
                             "current.ckpt: the optimizer's weights without the average, written from last.ckpt when missing)")
    parser.add_argument("fit_options", nargs="*", help="after --: options for tzoo fit, e.g. -- --model.init_args.net.cross_position=sinusoidal")
    args = parser.parse_args()
    RESULTS = args.results
    results = _load_results() if args.stage == "eval" else {}
    results["machine"] = {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if args.stage in ("all", "train"):
        stage_train(results, args.fit_options)
        _save_results(results)
    if args.stage in ("all", "eval"):
        stage_eval(results, speed_utterances=args.speed_utterances, limit=args.limit, beam_size=args.beam_size, beam_ctc_weight=args.beam_ctc_weight,
                   warp_search=args.warp_search, warp_search_by=args.warp_search_by, beam_length_penalty=args.beam_length_penalty,
                   checkpoint=args.checkpoint)
        _save_results(results)
    print_tables(results)


if __name__ == "__main__":
    main()
