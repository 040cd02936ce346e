"""The bert task through the CLI: 2-step fits of the configs, a classifier fine-tuned from a
pretraining (the weights really load), predict's CSV, and the pretrained checkpoints it refuses."""

import csv
import re
from pathlib import Path

import pytest
import torch

from tzoo.tasks.cli import TzooCLI, main
from tzoo.tasks.reliability import read_checkpoint

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "configs" / "bert"
TINY = [
    "--model.init_args.net.transformer.dim=16", "--model.init_args.net.transformer.depth=1",
    "--model.init_args.net.transformer.num_heads=2", "--model.init_args.net.max_len=32",
    "--data.init_args.tokenizer=char", "--data.init_args.batch_size=4",
]  # fmt: skip
RUN = ["--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("bert")


@pytest.fixture(autouse=True)
def _cache(shared, monkeypatch):
    monkeypatch.setenv("TZOO_CACHE", str(shared / "cache"))


def _fit(config: str, root: Path, *extra: str) -> Path:
    args = ["fit", "--config", str(CONFIGS / config), *TINY, *RUN, f"--trainer.default_root_dir={root}", *extra]
    if config == "pretrain.yaml":
        args += ["--data.init_args.block_size=32", "--data.init_args.val_batches=1"]
    else:
        args += ["--data.init_args.max_len=32"]
    main(args)
    (ckpt,) = root.glob("bert/version_*/checkpoints/last.ckpt")
    return ckpt


@pytest.fixture(scope="module")
def pretrained(shared):
    """A 2-step masked-LM pretraining through the CLI (configs/bert/pretrain.yaml)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TZOO_CACHE", str(shared / "cache"))
        ckpt = _fit("pretrain.yaml", shared / "pretrain")
    metrics = (ckpt.parents[1] / "metrics.csv").read_text()
    assert "val/masked_acc" in metrics and "val/loss" in metrics
    return ckpt


def _encoder(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith(("model.embed.", "model.pos.", "model.encoder."))}


def _build(*extra: str, root: Path) -> torch.nn.Module:
    args = ["--config", str(CONFIGS / "finetune.yaml"), *TINY, "--data.init_args.max_len=32", f"--trainer.default_root_dir={root}", *extra]
    return TzooCLI(args=args, run=False).model


def test_pretrained_encoder_weights_really_load_and_the_head_starts_fresh(pretrained, tmp_path):
    theirs = _encoder(read_checkpoint(pretrained)["state_dict"])
    assert len(theirs) > 10
    fresh = _build(root=tmp_path)  # the same config without pretrained: other weights, so the check below can fail
    assert any(not torch.equal(fresh.state_dict()[k], v) for k, v in theirs.items())
    model = _build(f"--model.init_args.pretrained={pretrained}", root=tmp_path)
    ours = model.state_dict()
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), name
    assert torch.equal(ours["model.classifier.weight"], fresh.state_dict()["model.classifier.weight"])  # seeded fresh head
    assert model.tokenizer.vocab_size == model.model.vocab_size


def test_fine_tune_from_pretraining_then_test_and_predict_write_the_csv(pretrained, tmp_path, capsys):
    ckpt = _fit("finetune.yaml", tmp_path / "ft", f"--model.init_args.pretrained={pretrained}")
    run = ckpt.parents[1]
    assert (run / "confusion" / "step_000002.png").is_file() and (run / "attention" / "step_000002.png").is_file()
    assert {"val/acc", "val/f1"} <= set((run / "metrics.csv").read_text().splitlines()[0].split(","))
    lines = tmp_path / "lines.txt"
    lines.write_text("To be, or not to be, that is the question:\n\nNow is the winter of our discontent\nThe king is dead\n")
    common = ["--config", str(CONFIGS / "genre.yaml"), f"--ckpt_path={ckpt}", "--trainer.enable_progress_bar=false",
              f"--trainer.default_root_dir={tmp_path / 'out'}", "--data.init_args.max_len=32", "--data.init_args.tokenizer=char"]  # fmt: skip
    main(["predict", *common, f"--data.init_args.predict_file={lines}"])
    (path,) = (tmp_path / "out").rglob("predictions.csv")
    rows = list(csv.DictReader(path.open()))
    assert [r["line"] for r in rows] == ["1", "3", "4"] and rows[1]["text"] == "Now is the winter of our discontent"
    assert list(rows[0]) == ["line", "text", "label", "probability", "p_comedy", "p_history", "p_tragedy"]
    for row in rows:
        probs = [float(row[f"p_{k}"]) for k in ("comedy", "history", "tragedy")]
        assert sum(probs) == pytest.approx(1, abs=1e-3) and float(row["probability"]) == max(probs)
        assert row["label"] == ("comedy", "history", "tragedy")[probs.index(max(probs))]
    main(["test", *common, "--trainer.limit_test_batches=2"])
    assert re.search(r"test/f1", capsys.readouterr().out)


def _refused(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / "finetune.yaml"), *TINY, "--data.init_args.max_len=32", *RUN, *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_pretrained_checkpoint_of_another_task_is_refused(tmp_path, capsys):
    other = tmp_path / "lm.ckpt"
    torch.save({"state_dict": {"model.embed.weight": torch.zeros(3, 16)}, "tzoo": {"task": "lm", "class_path": "tzoo.tasks.lm.module.LanguageModel"}}, other)
    err = _refused(capsys, f"--model.init_args.pretrained={other}", f"--trainer.default_root_dir={tmp_path}")
    assert re.search(r"pretrained checkpoint '.*lm\.ckpt' was written by the 'lm' task \(tzoo\.tasks\.lm\.module\.LanguageModel\), not by bert", err), err


def test_a_pretrained_checkpoint_of_another_vocabulary_is_refused(pretrained, tmp_path, capsys):
    err = _refused(capsys, f"--model.init_args.pretrained={pretrained}", "--data.init_args.tokenizer=bpe",
                   "--data.init_args.bpe_vocab_size=300", f"--trainer.default_root_dir={tmp_path}")  # fmt: skip
    assert re.search(r"has a vocabulary of \d+ tokens but the data's tokenizer has 300: encode the data with the checkpoint's tokenizer", err), err


def test_a_pretrained_checkpoint_of_other_sizes_or_a_text_file_is_refused(pretrained, tmp_path, capsys):
    err = _refused(capsys, f"--model.init_args.pretrained={pretrained}", "--model.init_args.net.transformer.dim=32",
                   f"--trainer.default_root_dir={tmp_path}")  # fmt: skip
    assert "was trained with other sizes: net.transformer.dim=16 (this model: 32)" in err, err
    tokenizer = pretrained.parents[1] / "tokenizer.json"
    err = _refused(capsys, f"--model.init_args.pretrained={tokenizer}", f"--trainer.default_root_dir={tmp_path}")
    assert "tokenizer.json' is not a checkpoint (not a torch zip archive" in err, err
