"""Safe loading: what tzoo writes loads with `weights_only=True` for every task; a planted
malicious pickle is refused before it runs; a truncated or corrupt checkpoint is an error naming
the file; tokenizers are JSON."""

import json
import os
import re
from pathlib import Path

import pytest
import torch

from tzoo.tasks.cli import main
from tzoo.tasks.loading import load_module
from tzoo.tasks.text import load_tokenizer
from tzoo.tasks.reliability import SafeCheckpointIO, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
LM_TINY = [
    "--model.init_args.net.transformer.dim=16", "--model.init_args.net.transformer.depth=1", "--model.init_args.net.transformer.num_heads=2",
    "--model.init_args.sample_tokens=4", "--model.init_args.sample_prompt=First", "--data.init_args.block_size=16", "--model.init_args.net.block_size=16",
    "--data.init_args.batch_size=2", "--data.init_args.val_batches=1",
]  # fmt: skip
CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 40


def _fit(tmp_path: Path, config: str, *extra: str) -> Path:
    root = tmp_path / "runs"
    main(["fit", "--config", str(ROOT / "configs" / config), *extra, "--trainer.max_steps=2",
          "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={root}"])  # fmt: skip
    (last,) = root.rglob("last.ckpt")
    return last


@pytest.fixture(scope="module")
def lm_checkpoint(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("lm")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    os.environ["TZOO_CACHE"] = str(tmp_path / "cache")
    try:
        return _fit(tmp_path, "lm/shakespeare_char.yaml", *LM_TINY, f"--data.init_args.corpus={corpus}")
    finally:
        del os.environ["TZOO_CACHE"]


class _Payload:
    """Unpickling this runs a shell command: what a hostile checkpoint would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(tmp_path: Path) -> tuple[Path, Path]:
    marker, evil = tmp_path / "pwned", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "tzoo": {"task": "lm"}, "x": _Payload(marker)}, evil)
    return evil, marker


def _fails(capsys, argv: list[str], pattern: str) -> None:
    """The tzoo command ends with one line ``tzoo: error: ...`` matching ``pattern``, exit status 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert re.search(rf"^tzoo: error: .*{pattern}", capsys.readouterr().err, re.M)


def test_a_malicious_pickle_is_refused_by_every_loader(tmp_path, lm_checkpoint, capsys):
    evil, marker = _plant(tmp_path)
    message = r"refused to load checkpoint '.*evil\.ckpt': it holds objects that only code execution could rebuild"
    with pytest.raises(ValueError, match=message):
        read_checkpoint(evil)
    with pytest.raises(ValueError, match=message):
        SafeCheckpointIO().load_checkpoint(evil)
    with pytest.raises(ValueError, match=message):
        load_module(evil)
    _fails(capsys, ["generate", "--ckpt", str(evil)], message)
    # resuming a run from it: the trainer reads checkpoints through SafeCheckpointIO
    config = lm_checkpoint.parents[1] / "config.yaml"
    _fails(capsys, ["fit", "--config", str(config), "--ckpt_path", str(evil), f"--trainer.default_root_dir={tmp_path}"], message)
    assert not marker.exists()  # the payload never ran
    torch.load(evil, weights_only=False)  # (check that the planted payload is real)
    assert marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_checkpoint_is_an_error_naming_the_file(tmp_path, lm_checkpoint, damage, capsys):
    data = lm_checkpoint.read_bytes()
    bad = tmp_path / f"{damage}.ckpt"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    with pytest.raises(ValueError, match=rf"checkpoint '.*{damage}\.ckpt' \(\d+ bytes\) is truncated or corrupt"):
        read_checkpoint(bad)
    config = lm_checkpoint.parents[1] / "config.yaml"
    _fails(capsys, ["fit", "--config", str(config), "--ckpt_path", str(bad), f"--trainer.default_root_dir={tmp_path}"],
           rf"'.*{damage}\.ckpt' .* is truncated or corrupt .* resume from an earlier checkpoint")


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint '.*nothing\.ckpt' is missing"):
        read_checkpoint(tmp_path / "nothing.ckpt")


def test_the_lm_checkpoint_holds_only_safe_values_and_a_json_tokenizer(lm_checkpoint):
    checkpoint = torch.load(lm_checkpoint, map_location="cpu", weights_only=True)
    assert checkpoint["tzoo"]["task"] == "lm"
    json.dumps(checkpoint["tokenizer"])  # plain JSON data, not an object
    assert checkpoint["tokenizer"]["kind"] == "char"
    assert "RNGStateCallback" in checkpoint["callbacks"]
    run_dir = lm_checkpoint.parents[1]
    assert load_tokenizer(run_dir / "tokenizer.json").vocab_size == checkpoint["hyper_parameters"]["net"]["vocab_size"]
    assert load_module(lm_checkpoint).sample("All:", max_new_tokens=3, seed=0).startswith("All:")


def test_a_pickled_tokenizer_file_is_refused(tmp_path):
    import pickle

    path = tmp_path / "tokenizer.json"
    path.write_bytes(pickle.dumps({"kind": "char"}))
    with pytest.raises(ValueError, match=r"tokenizer\.json is not a tzoo tokenizer file \(not JSON"):
        load_tokenizer(path)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "extra"),
    [
        ("lm/shakespeare_bpe.yaml", [*LM_TINY, "--data.init_args.bpe_vocab_size=300"]),
        ("vision/digits.yaml", ["--model.init_args.net.transformer.dim=16", "--model.init_args.net.transformer.depth=1", "--model.init_args.attention_images=0"]),
        ("decision/cartpole.yaml", ["--data.init_args.episodes=10", "--model.init_args.net.transformer.dim=16",
                                    "--model.init_args.net.transformer.depth=1", "--model.init_args.eval_episodes=1"]),
    ],
    ids=["lm-bpe", "vision", "decision"],
)  # fmt: skip
def test_every_task_writes_weights_only_checkpoints(tmp_path, monkeypatch, config, extra):
    monkeypatch.setenv("TZOO_CACHE", str(tmp_path / "cache"))
    if config.startswith("lm/"):
        corpus = tmp_path / "corpus.txt"
        corpus.write_text(CORPUS)
        extra = [*extra, f"--data.init_args.corpus={corpus}"]
    if config.startswith("vision/"):
        extra = [*extra, f"--data.init_args.data_dir={tmp_path}"]
    last = _fit(tmp_path, config, *extra)
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)  # raises on anything unsafe
    assert checkpoint["tzoo"]["task"] == config.split("/")[0]
    assert load_module(last).task_name == checkpoint["tzoo"]["task"]


def test_a_setting_an_older_version_had_is_ignored_with_a_warning_naming_it(tmp_path, lm_checkpoint):
    checkpoint = torch.load(lm_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["retired_setting"] = 0.3  # e.g. renamed since the checkpoint was written
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    with pytest.warns(UserWarning, match=r"no longer takes, ignored: \['retired_setting'\]"):
        module = load_module(old)
    assert module.sample("All:", max_new_tokens=3, seed=0) == load_module(lm_checkpoint).sample("All:", max_new_tokens=3, seed=0)


def test_a_checkpoint_with_an_older_tzoos_flat_arguments_loads_through_the_migration(tmp_path, lm_checkpoint):
    """Before net/optim, LanguageModel took dim, depth, lr ... flat: such a checkpoint still loads
    (LanguageModel.upgrade_hparams) and gives the same model."""
    checkpoint = torch.load(lm_checkpoint, weights_only=True)
    hp = checkpoint["hyper_parameters"]
    net, optim = hp.pop("net"), hp.pop("optim")
    flat = {**hp, **{k: v for k, v in net["transformer"].items() if k in ("dim", "depth", "num_heads", "num_kv_heads", "dropout", "bias", "feed_forward", "norm")}}
    flat.update(vocab_size=net["vocab_size"], block_size=net["block_size"], position="rope" if net["transformer"]["position"] == "rope" else "learned", **optim)
    checkpoint["hyper_parameters"] = flat
    old = tmp_path / "flat.ckpt"
    torch.save(checkpoint, old)
    assert "dim" in torch.load(old, weights_only=True)["hyper_parameters"]
    module = load_module(old)
    assert module.sample("All:", max_new_tokens=5, seed=0) == load_module(lm_checkpoint).sample("All:", max_new_tokens=5, seed=0)
    assert module.optim.lr == optim["lr"]


def test_a_flat_checkpoint_of_a_task_without_a_migration_is_refused_saying_how_to_retrain():
    from tzoo.tasks.base import TaskModule

    class Plain(TaskModule):  # takes net / optim, knows no older layout
        def __init__(self, net: dict | None = None, optim: dict | None = None) -> None:
            super().__init__(optim=optim)

    with pytest.raises(ValueError, match=r"'x\.ckpt' holds hyperparameters that Plain does not take \(depth, dim\).*older tzoo.*Retrain with a current config"):
        Plain.hparams_from_checkpoint({"dim": 8, "depth": 1}, path="x.ckpt")


def test_a_partial_config_dict_keeps_the_defaults_it_leaves_out():
    """Python callers get what the CLI gives for a partial section: the fields left out keep the
    argument's default (the LM's betas, bias-free stack), not the bare class defaults."""
    from tzoo.tasks.lm.module import LanguageModel

    module = LanguageModel({"vocab_size": 10, "transformer": {"dim": 16, "depth": 1, "num_heads": 2}}, {"lr": 3e-3})
    assert module.optim.lr == 3e-3 and module.optim.betas == (0.9, 0.99)  # LanguageModel's default betas
    assert module.model.cfg.transformer.bias is False  # GPTConfig's default stack is bias-free
