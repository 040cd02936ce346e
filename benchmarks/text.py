"""Encoder-only text benchmark: Shakespeare genre classification on held-out plays.

Every row classifies the same passages (``configs/bert/finetune.yaml``'s data: 8 lines of speech,
three genres, the fixed split by play of ``tzoo/tasks/bert/corpus.py``) and is scored on the test
plays (accuracy and macro-F1), in one run:

* **majority class**: the most frequent training label;
* **TF-IDF + logistic regression** (scikit-learn): word 1-2-grams or character 2-5-grams, C in
  {1, 4}, the variant with the best validation macro-F1;
* **causal decoder** (``tzoo.tasks.lm.model.GPT``, the LM's model, with a linear head on the last
  node, ``[SEP]``, which has seen every token): the encoder's sizes, the same optimizer, steps and
  batches; from scratch, and after next-token pretraining on the same text for the same steps;
* **tzoo encoder** (``TextEncoder``, ``[CLS]`` pooling): from scratch (``finetune.yaml`` without
  ``pretrained``), and after masked-LM pretraining (``pretrain.yaml``, on the 25 training plays
  only) followed by the same fine-tuning.

The neural rows are built from the config files as ``tzoo fit`` builds them (``TzooCLI`` without
running), with the step counts given here, and share one tokenizer (the pretraining's byte-level
BPE, which the genre data builds from the same training text). Times are wall-clock seconds of
``trainer.fit`` (data preparation included, process start-up not).

Targets (issue 20): the pretrained encoder at least matches TF-IDF + LR on the test plays (accuracy
and macro-F1), beats the encoder from scratch, and beats the causal decoder at equal size and
budget; pretraining + fine-tuning within 15 minutes on this machine.

    python benchmarks/text.py [--pretrain_steps 1000] [--finetune_steps 600] [--seed 1337] [--skip_lm_pretraining]

Prints a Markdown table and writes benchmarks/results/text.json.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from tzoo.tasks.bert.data import MaskedTextDataModule
from tzoo.tasks.lm.data import TextDataModule

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "bert"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _load() -> float:
    return os.getloadavg()[0]


# --- classical baselines ------------------------------------------------------------------------


def majority(data: Any) -> dict[str, Any]:
    from collections import Counter

    from sklearn.metrics import accuracy_score, f1_score

    label = Counter(e.label for e in data.examples["train"]).most_common(1)[0][0]
    truth = [e.label for e in data.examples["test"]]
    guess = [label] * len(truth)
    return {"test_acc": accuracy_score(truth, guess), "test_f1": f1_score(truth, guess, average="macro"), "note": f"always {label!r}"}


def tfidf(data: Any) -> dict[str, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    text = {split: [e.text for e in data.examples[split]] for split in ("train", "val", "test")}
    label = {split: [e.label for e in data.examples[split]] for split in ("train", "val", "test")}
    start = time.perf_counter()
    best: dict[str, Any] = {}
    for name, vectorizer in (
        ("word 1-2-grams", lambda: TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)),
        ("char 2-5-grams", lambda: TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
    ):
        vec = vectorizer()
        features = {"train": vec.fit_transform(text["train"])}
        features.update({split: vec.transform(text[split]) for split in ("val", "test")})
        for C in (1.0, 4.0):
            clf = LogisticRegression(C=C, max_iter=3000).fit(features["train"], label["train"])
            scores = {}
            for split in ("val", "test"):
                guess = clf.predict(features[split])
                scores[split] = (accuracy_score(label[split], guess), f1_score(label[split], guess, average="macro"))
            if not best or scores["val"][1] > best["val_f1"]:
                best = {"val_acc": scores["val"][0], "val_f1": scores["val"][1], "test_acc": scores["test"][0],
                        "test_f1": scores["test"][1], "note": f"{name}, C={C:g} (best validation macro-F1 of 4)"}  # fmt: skip
    best["fit_s"] = time.perf_counter() - start
    return best


# --- the causal decoder -------------------------------------------------------------------------


class CausalClassifier(nn.Module):
    """The LM's GPT read out at its last real node (``[SEP]``): ids, real (B, N) -> logits (B, K)."""

    def __init__(self, gpt: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.gpt = gpt
        self.max_len = gpt.block_size
        self.head = nn.Linear(gpt.embed.weight.shape[1], num_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: Tensor, real: Tensor) -> Tensor:
        x = self.gpt.embed(ids)  # (B, N, D)
        if self.gpt.pos is not None:
            x = self.gpt.pos(x)
        h = self.gpt.decoder(x)  # causal: right padding never reaches a real node
        last = real.sum(dim=1) - 1  # (B,)
        return self.head(h[torch.arange(len(ids)), last])


def _decoder_classifier(cli_model: Any, gpt: nn.Module) -> Any:
    """The tzoo classifier module of the encoder rows (its loss, metrics, optimizer), with the decoder
    in place of the encoder."""
    from tzoo.tasks.bert.module import TextEncoder

    module = TextEncoder(cli_model.hparams["net"], cli_model.hparams["optim"], objective="classify", attention_passages=0)
    module.model = CausalClassifier(gpt, cli_model.model.cfg.num_classes)
    return module


class NextTokenWindows(MaskedTextDataModule):
    """The pretraining data's token stream as the LM reads it: unmasked (x, y) next-token windows."""

    @classmethod
    def like(cls, data: MaskedTextDataModule) -> NextTokenWindows:
        params = inspect.signature(MaskedTextDataModule.__init__).parameters
        return cls(**{k: v for k, v in data.hparams.items() if k in params})

    def setup(self, stage: str | None = None) -> None:
        TextDataModule.setup(self, stage)


def _gpt(net: dict[str, Any]) -> nn.Module:
    from tzoo.core import TransformerConfig
    from tzoo.tasks.lm.model import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=net["vocab_size"], block_size=net["max_len"], position=net["position"], transformer=TransformerConfig(**net["transformer"]))
    return GPT(cfg)


# --- runs ---------------------------------------------------------------------------------------


def _cli(config: str, root: Path, *extra: str) -> Any:
    from tzoo.tasks.cli import TzooCLI, nested_nulls

    args = ["--config", str(CONFIGS / config), *QUIET, f"--trainer.default_root_dir={root}", *extra]
    return TzooCLI(args=nested_nulls(args), run=False)


def _trainer(cli: Any, steps: int, root: Path) -> pl.Trainer:
    """A trainer with the config's settings (clipping, precision, validation interval) and ``steps``."""
    trainer = cli.config["trainer"]
    interval = trainer.get("val_check_interval")  # none: Lightning's default, at each epoch's end
    return pl.Trainer(
        max_steps=steps, gradient_clip_val=trainer.get("gradient_clip_val"), precision=trainer.get("precision") or "32-true",
        val_check_interval=min(interval, steps) if interval else None,
        check_val_every_n_epoch=trainer.get("check_val_every_n_epoch"), logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root, num_sanity_val_steps=0,
    )  # fmt: skip


def _fit_and_test(trainer: pl.Trainer, model: Any, data: Any) -> dict[str, Any]:
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    fit_s = time.perf_counter() - start
    val = trainer.validate(model, datamodule=data, verbose=False)[0]
    test = trainer.test(model, datamodule=data, verbose=False)[0]
    return {"fit_s": fit_s, "val_acc": val["val/acc"], "val_f1": val["val/f1"], "test_acc": test["test/acc"], "test_f1": test["test/f1"],
            "params": sum(p.numel() for p in model.model.parameters())}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="tzoo-text-bench-"))
    os.environ.setdefault("TZOO_CACHE", str(root / "cache"))
    seed = [f"--seed_everything={args.seed}"]
    results: dict[str, Any] = {"load_start": _load()}
    rows: dict[str, dict[str, Any]] = {}

    # 1. masked-LM pretraining (its tokenizer is the one every neural row uses)
    pl.seed_everything(args.seed)
    pre_cli = _cli("pretrain.yaml", root / "pretrain", *seed, f"--trainer.max_steps={args.pretrain_steps}")
    start = time.perf_counter()
    pre_cli.trainer.fit(pre_cli.model, datamodule=pre_cli.datamodule)
    pretrain_s = time.perf_counter() - start
    (ckpt,) = (root / "pretrain").rglob("last.ckpt")
    mlm_metrics = {k: float(v) for k, v in pre_cli.trainer.callback_metrics.items() if k.startswith("val/")}
    tokenizer = ckpt.parents[1] / "tokenizer.json"
    print(f"pretraining: {pretrain_s:.0f} s, {mlm_metrics}", flush=True)

    finetune = [*seed, f"--data.init_args.tokenizer={tokenizer}"]
    steps = args.finetune_steps

    # 2. the classifiers: tzoo encoder pretrained / from scratch, causal decoder from scratch / pretrained
    pl.seed_everything(args.seed)
    cli = _cli("finetune.yaml", root / "ft", *finetune, f"--model.init_args.pretrained={ckpt}", "--model.init_args.attention_passages=0")
    data = cli.datamodule
    rows["tzoo encoder, MLM-pretrained"] = _fit_and_test(_trainer(cli, steps, root), cli.model, data)
    rows["tzoo encoder, MLM-pretrained"]["pretrain_s"] = pretrain_s
    print(rows["tzoo encoder, MLM-pretrained"], flush=True)

    pl.seed_everything(args.seed)
    cli = _cli("finetune.yaml", root / "scratch", *finetune, "--model.init_args.attention_passages=0")
    rows["tzoo encoder, from scratch"] = _fit_and_test(_trainer(cli, steps, root), cli.model, data)
    print(rows["tzoo encoder, from scratch"], flush=True)

    net = cli.model.hparams["net"]
    pl.seed_everything(args.seed)
    rows["causal decoder, from scratch"] = _fit_and_test(_trainer(cli, steps, root), _decoder_classifier(cli.model, _gpt(net)), data)
    print(rows["causal decoder, from scratch"], flush=True)

    if args.skip_lm_pretraining:
        return _finish(results, rows, mlm_metrics, args, data)
    # next-token pretraining of the decoder on the pretraining's token stream, same steps and batches
    from tzoo.tasks.lm.module import LanguageModel

    pl.seed_everything(args.seed)
    lm_net = {"vocab_size": net["vocab_size"], "block_size": net["max_len"], "position": net["position"], "transformer": net["transformer"]}
    lm = LanguageModel(lm_net, pre_cli.model.hparams["optim"], sample_tokens=0)
    start = time.perf_counter()
    _trainer(pre_cli, args.pretrain_steps, root).fit(lm, datamodule=NextTokenWindows.like(pre_cli.datamodule))
    lm_s = time.perf_counter() - start
    pl.seed_everything(args.seed)
    gpt = _gpt(net)
    gpt.load_state_dict(lm.model.state_dict())
    rows["causal decoder, LM-pretrained"] = _fit_and_test(_trainer(cli, steps, root), _decoder_classifier(cli.model, gpt), data)
    rows["causal decoder, LM-pretrained"]["pretrain_s"] = lm_s
    print(rows["causal decoder, LM-pretrained"], flush=True)

    return _finish(results, rows, mlm_metrics, args, data)


def _finish(results: dict[str, Any], rows: dict[str, dict[str, Any]], mlm_metrics: dict[str, float], args: argparse.Namespace, data: Any) -> dict[str, Any]:
    """The classical baselines on the same split, then everything measured as one record."""
    steps = args.finetune_steps
    rows["TF-IDF + logistic regression"] = tfidf(data)
    rows["majority class"] = majority(data)
    results.update(
        rows=rows, mlm=mlm_metrics, pretrain_steps=args.pretrain_steps, finetune_steps=steps, seed=args.seed,
        passages={split: len(data.examples[split]) for split in ("train", "val", "test")}, load_end=_load(),
        machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    )  # fmt: skip
    return results


def table(results: dict[str, Any]) -> str:
    rows = results["rows"]
    order = ["majority class", "TF-IDF + logistic regression", "causal decoder, from scratch", "causal decoder, LM-pretrained",
             "tzoo encoder, from scratch", "tzoo encoder, MLM-pretrained"]  # fmt: skip
    lines = ["| model | params | pretrain s | fine-tune s | val acc | val F1 | test acc | test macro-F1 |", "|---|---|---|---|---|---|---|---|"]
    for name in order:
        if name not in rows:
            continue
        r = rows[name]
        cell = lambda key, fmt="{:.3f}": fmt.format(r[key]) if key in r else "–"  # noqa: E731
        lines.append(f"| {name} | {cell('params', '{:,}')} | {cell('pretrain_s', '{:.0f}')} | {cell('fit_s', '{:.0f}')} | "
                     f"{cell('val_acc')} | {cell('val_f1')} | {cell('test_acc')} | {cell('test_f1')} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrain_steps", type=int, default=1000)
    parser.add_argument("--finetune_steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--skip_lm_pretraining", action="store_true", help="no 'causal decoder, LM-pretrained' row (saves a pretraining)")
    args = parser.parse_args()
    results = run(args)
    print(table(results))
    pre = results["rows"]["tzoo encoder, MLM-pretrained"]
    print(f"\npretraining + fine-tuning: {pre['pretrain_s'] + pre['fit_s']:.0f} s; load average {results['load_start']:.1f} -> "
          f"{results['load_end']:.1f}; {results['machine']}")  # fmt: skip
    out = REPO / "benchmarks" / "results" / "text.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
