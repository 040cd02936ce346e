"""Every core attention option reaches every built-in task from the command line: ``tzoo fit`` for
2 steps and ``tzoo check`` on the same config, for window, top-k, memory nodes, ALiBi, GQA, QK-norm,
squared ReLU and Conformer blocks (an encoder's: the speech task's encoder; the decoder-only tasks refuse them) (or
the documented config-time error where a pair does not apply). Plus the config shape's bad input:
an unknown nested field, and a linked value set by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tzoo.tasks.cli import main

ROOT = Path(__file__).resolve().parents[1]
CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 30

# the options under test, as (name, {field: value}) set on every transformer stack of the task
OPTIONS = {
    "window": {"window": 2},
    "top_k": {"top_k": 2},
    "num_memory": {"num_memory": 2},
    "alibi": {"position": "alibi"},
    "gqa": {"num_kv_heads": 1},
    "qk_norm": {"qk_norm": True},
    "squared_relu": {"feed_forward": "squared_relu"},
    "conformer": {"block": "conformer", "conv_kernel": 3},
}


def _lm(tmp_path: Path) -> tuple[list[str], list[str]]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    args = [
        "--config", str(ROOT / "configs/lm/shakespeare_char.yaml"), f"--data.init_args.corpus={corpus}",
        f"--data.init_args.cache_dir={tmp_path / 'cache'}", "--data.init_args.block_size=16", "--data.init_args.batch_size=2",
        "--model.init_args.net.block_size=16", "--model.init_args.sample_tokens=0",
        "--model.init_args.net.transformer.dim=16", "--model.init_args.net.transformer.depth=1",
        "--model.init_args.net.transformer.num_heads=2",
    ]  # fmt: skip
    return args, ["net.transformer"]


def _speech(tmp_path: Path) -> tuple[list[str], list[str]]:
    tiny = [f"--model.init_args.net.{stack}.{k}={v}" for stack in ("encoder", "decoder") for k, v in (("dim", 16), ("depth", 1), ("num_heads", 2))]
    args = [
        "--config", str(ROOT / "configs/speech/espeak_tiny.yaml"), "--data.init_args.corpus_size=[6,3,3]",
        "--data.init_args.max_words=2", "--data.init_args.workers=1", "--data.init_args.batch_size=3",
        "--data.init_args.num_workers=0", f"--data.init_args.data_dir={SHARED / 'speech'}", "--trainer.precision=32-true",
        "--model.init_args.examples=0", *tiny,
    ]  # fmt: skip
    return args, ["net.encoder", "net.decoder"]


def _decision(tmp_path: Path) -> tuple[list[str], list[str]]:
    args = [
        "--config", str(ROOT / "configs/decision/cartpole.yaml"), "--data.init_args.episodes=10",
        "--model.init_args.net.transformer.dim=16", "--model.init_args.net.transformer.depth=1",
        "--model.init_args.net.transformer.num_heads=2", "--model.init_args.eval_episodes=1",
    ]  # fmt: skip
    return args, ["net.transformer"]


def _vision(tmp_path: Path) -> tuple[list[str], list[str]]:
    args = [
        "--config", str(ROOT / "configs/vision/digits.yaml"), f"--data.init_args.data_dir={SHARED / 'digits'}",
        "--model.init_args.net.transformer.dim=16", "--model.init_args.net.transformer.depth=1",
        "--model.init_args.net.transformer.num_heads=2", "--model.init_args.attention_images=0",
        "--trainer.limit_train_batches=2",
    ]  # fmt: skip
    return args, ["net.transformer"]


def _bert(tmp_path: Path) -> tuple[list[str], list[str]]:
    args = [
        "--config", str(ROOT / "configs/bert/genre.yaml"), "--data.init_args.tokenizer=char", "--data.init_args.batch_size=2",
        "--data.init_args.max_len=32", "--model.init_args.net.max_len=32", "--model.init_args.attention_passages=1",
        "--model.init_args.net.transformer.dim=16", "--model.init_args.net.transformer.depth=1",
        "--model.init_args.net.transformer.num_heads=2",
    ]  # fmt: skip
    return args, ["net.transformer"]


# task -> (its tiny command-line arguments, the stacks the options go to)
TASKS = {"lm": _lm, "vision": _vision, "speech": _speech, "decision": _decision, "bert": _bert}
SHARED = Path()  # a folder the tests of this module share (generated corpora), set by the fixture


@pytest.fixture(autouse=True)
def _shared_cache(tmp_path_factory, monkeypatch):
    global SHARED
    if SHARED == Path():
        SHARED = tmp_path_factory.mktemp("shared")
    monkeypatch.setenv("TZOO_CACHE", str(SHARED / "cache"))

# (task, option) pairs that cannot apply: the config-time error that says why
DECODER_ONLY = r"the configuration does not build: block='conformer' is an encoder block.*use block='transformer' for the decoder"
NOT_APPLICABLE: dict[tuple[str, str], str] = {("lm", "conformer"): DECODER_ONLY, ("decision", "conformer"): DECODER_ONLY}
# options that belong to an encoder: the speech task's decoder keeps its blocks
ENCODER_ONLY = {"conformer"}


def _stack_args(stacks: list[str], option: dict) -> list[str]:
    return [f"--model.init_args.{stack}.{field}={value}" for stack in stacks for field, value in option.items()]


@pytest.mark.slow
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("task", list(TASKS))
def test_every_core_option_trains_and_checks_in_every_task(task, option, tmp_path, capsys):
    base, stacks = TASKS[task](tmp_path)
    if option in ENCODER_ONLY and task == "speech":
        stacks = ["net.encoder"]
    args = [*base, *_stack_args(stacks, OPTIONS[option])]
    if (task, option) in NOT_APPLICABLE:
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", *args])
        assert exit_info.value.code == 2
        assert re.search(NOT_APPLICABLE[(task, option)], capsys.readouterr().err)
        return
    fit = ["fit", *args, "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=2",
           "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path / 'runs'}"]  # fmt: skip
    main(fit)
    (run,) = (tmp_path / "runs").glob("*/version_0")
    hparams = (run / "hparams.yaml").read_text()
    for field, value in OPTIONS[option].items():  # the option reached the model's saved config
        assert re.search(rf"\b{field}: {value}\b", hparams, re.IGNORECASE), hparams  # YAML writes True as true
    card = json.loads((run / "run_card.json").read_text())
    assert card["steps"] == 2 and card["status"] == "finished"
    capsys.readouterr()
    main(["check", *args])
    out = capsys.readouterr().out
    assert "tzoo check: all checks passed" in out, out


def test_an_unknown_nested_field_is_one_line_naming_it_and_the_valid_ones(tmp_path, capsys):
    args, _ = _lm(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--model.init_args.net.transformer.windw=4"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("tzoo: error: --model.init_args.net.transformer has no field 'windw' (valid fields of TransformerConfig: dim,")
    assert "window" in err and "top_k" in err


def test_an_unknown_nested_field_in_a_config_file_is_named_with_the_file(tmp_path, capsys):
    args, _ = _lm(tmp_path)
    extra = tmp_path / "extra.yaml"
    extra.write_text("model:\n  init_args:\n    net:\n      transformr: {window: 4}\n")
    with pytest.raises(SystemExit):
        main(["fit", *args, "--config", str(extra)])
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(r"tzoo: error: --config .*extra\.yaml: model\.init_args\.net has no field 'transformr' \(valid fields of GPTConfig: vocab_size, block_size, position, transformer, tie_embeddings, zero_init_head, logit_softcap\)", err), err


def test_a_null_reaches_a_nested_field(tmp_path):
    from tzoo.tasks.cli import TzooCLI, nested_nulls

    args, _ = _lm(tmp_path)
    argv = nested_nulls([*args, "--model.init_args.net.transformer.num_kv_heads=null", "--model.init_args.net.transformer.window", "null",
                         "--model.init_args.net.transformer.window=3", "--model.init_args.net.position", "none",
                         f"--trainer.default_root_dir={tmp_path}"])  # fmt: skip
    model = TzooCLI(args=argv, run=False).model
    assert model.model.cfg.transformer.num_kv_heads is None and model.model.cfg.transformer.window == 3
    assert model.model.cfg.position == "none"  # the word none is a value, only YAML's nulls are null


def test_an_option_that_does_not_build_is_one_line_naming_it(tmp_path, capsys):
    args, _ = _lm(tmp_path)
    with pytest.raises(SystemExit):
        main(["fit", *args, "--model.init_args.net.transformer.window=0"])
    err = capsys.readouterr().err.strip()
    assert err == "tzoo: error: the configuration does not build: window must be an integer >= 1 or None (no window), got window=0"
