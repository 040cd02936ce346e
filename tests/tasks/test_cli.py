"""The tzoo command: tasks, fit on a tiny config, --print_config, links, generate, bad input."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tzoo.tasks.cli import main

CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 40


@pytest.fixture
def tiny_config(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            seed_everything: 0
            trainer:
              max_steps: 4
              val_check_interval: 2
              limit_val_batches: 2
              default_root_dir: {tmp_path / "runs"}
              enable_progress_bar: false
              log_every_n_steps: 1
            model:
              class_path: tzoo.tasks.lm.module.LanguageModel
              init_args:
                sample_tokens: 8
                net:
                  block_size: 16
                  transformer: {{dim: 16, depth: 1, num_heads: 2}}
            data:
              class_path: tzoo.tasks.lm.data.TextDataModule
              init_args:
                corpus: {corpus}
                block_size: 16
                batch_size: 4
                cache_dir: {tmp_path / "cache"}
            """
        )
    )
    return tmp_path, config


def fails(capsys, argv, pattern):
    """main(argv) ends with one line ``tzoo: error: ...`` matching ``pattern`` and exit status 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("tzoo: error: ") and re.search(pattern, line), line
    return line


def test_tasks_lists_name_status_config(capsys):
    main(["tasks"])
    out = capsys.readouterr().out
    assert "lm" in out and "ok" in out and "shakespeare_char.yaml" in out


def test_fit_then_generate_from_its_checkpoint(tiny_config, capsys):
    tmp_path, config = tiny_config
    main(["fit", "--config", str(config)])
    ckpts = sorted((tmp_path / "runs").rglob("last.ckpt"))
    assert len(ckpts) == 1, list((tmp_path / "runs").rglob("*"))
    run_dir = ckpts[0].parent.parent
    assert (run_dir / "tokenizer.json").is_file() and (run_dir / "config.yaml").is_file()
    assert (run_dir / "metrics.csv").is_file()
    metrics = (run_dir / "metrics.csv").read_text()
    assert "train/loss" in metrics and "val/loss" in metrics and "val/ppl" in metrics
    capsys.readouterr()
    main(["generate", "--ckpt", str(ckpts[0]), "--prompt", "First", "--max_new_tokens", "20", "--seed", "0"])
    text = capsys.readouterr().out
    assert text.startswith("First") and len(text.strip()) > len("First")
    assert set(text) <= set(CORPUS) | {"\n"}


def test_print_config_shows_the_resolved_config(tiny_config, capsys):
    _, config = tiny_config
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "tzoo.tasks.lm.module.LanguageModel" in out and "block_size: 16" in out


def test_user_value_replaced_by_a_link_is_reported(tiny_config):
    tmp_path, config = tiny_config
    with pytest.warns(UserWarning, match=r"model.init_args.net.vocab_size=5 from your config is replaced by \d+, linked from the data"):
        main(["validate", "--config", str(config), "--model.init_args.net.vocab_size=5", "--trainer.logger=false"])


def test_missing_config_file(tmp_path, capsys):
    for flag in ("--config", "-c"):
        fails(capsys, ["fit", flag, str(tmp_path / "nope.yaml")], r"config file '.*nope.yaml' does not exist")


def test_unknown_task_lists_valid_ones(capsys):
    fails(capsys, ["fit", "--task", "nope"], r"unknown task 'nope'; registered tasks: .*lm")


def test_unknown_config_key_is_rejected(tiny_config, capsys):
    _, config = tiny_config
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--model.init_args.not_a_key=3"])
    assert exit_info.value.code != 0
    assert "not_a_key" in capsys.readouterr().err


def test_generate_refuses_other_files(tmp_path, capsys):
    bogus = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}, "tzoo": {"task": "vision", "class_path": "x.Y"}}, bogus)
    from tzoo.tasks.loading import load_module

    with pytest.raises(ValueError, match=r"written by the 'vision' task, not by 'lm'"):
        load_module(bogus, task="lm")
    bogus.write_bytes(b"not a checkpoint")
    fails(capsys, ["generate", "--ckpt", str(bogus)], r"checkpoint '.*x\.ckpt' \(16 bytes\) is truncated or corrupt")
    fails(capsys, ["generate", "--ckpt", str(tmp_path)], r"checkpoint '.*' is a folder")


def test_generate_refuses_a_negative_token_count(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--ckpt", "x.ckpt", "--max_new_tokens", "-5"])
    assert exit_info.value.code == 2
    assert "argument --max_new_tokens: '-5' is not a whole number >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--temperature", "nan", "'nan' is not a finite number >= 0"),
    ("--temperature", "-1", "'-1' is not a finite number >= 0"),
    ("--top_k", "0", "'0' is not a whole number >= 1"),
    ("--top_p", "nan", "'nan' is not a probability in \\(0, 1\\]"),
])  # fmt: skip
def test_generate_refuses_sampling_settings_it_cannot_use(capsys, flag, value, message):
    # refused while parsing, before the checkpoint is read (it does not exist here)
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--ckpt", "x.ckpt", flag, value])
    assert exit_info.value.code == 2
    assert re.search(rf"argument {flag}: {message}", capsys.readouterr().err)


def test_console_script_runs():
    out = subprocess.run([str(Path(sys.executable).parent / "tzoo"), "tasks"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "lm" in out.stdout


def test_a_link_the_model_cannot_take_is_an_error():
    from jsonargparse import Namespace

    from tzoo.tasks.cli import _link_data_to_model

    class Data:
        model_links = ("num_classes",)
        num_classes = 3

    model = Namespace(class_path="tzoo.tasks.lm.module.LanguageModel", init_args=Namespace())
    with pytest.raises(ValueError, match=r"Data provides 'num_classes' for the model, but LanguageModel has no parameter 'num_classes', nor a config field of that name"):
        _link_data_to_model(Data(), model)  # type: ignore[arg-type]


def test_optimizer_and_scheduler_overridable_from_the_command_line(tiny_config):
    from tzoo.tasks.cli import TzooCLI

    _, config = tiny_config
    cli = TzooCLI(
        args=["fit", "--config", str(config), "--trainer.max_steps=2", "--optimizer=SGD", "--optimizer.lr=0.05",
              "--lr_scheduler=StepLR", "--lr_scheduler.step_size=1"],
    )
    (optimizer,) = cli.trainer.optimizers
    assert type(optimizer).__name__ == "SGD" and optimizer.param_groups[0]["initial_lr"] == 0.05
    assert type(cli.trainer.lr_scheduler_configs[0].scheduler).__name__ == "StepLR"


def test_resuming_a_run_with_another_model_fails_before_writing_anything(tiny_config, capsys):
    tmp_path, config = tiny_config
    main(["fit", "--config", str(config)])
    run = tmp_path / "runs" / "lm" / "version_0"
    kept = {name: (run / name).read_bytes() for name in ("config.yaml", "hparams.yaml", "run_card.json", "metrics.csv")}
    other = tmp_path / "other.txt"
    other.write_text("".join(chr(c) for c in range(ord("a"), ord("z") + 1)) * 50)  # another vocabulary
    # `last` looks only for runs of this model + data configuration
    fails(capsys, ["fit", "--config", str(config), "--ckpt_path", "last", f"--data.init_args.corpus={other}"],
          r"--ckpt_path last found no run to resume .* version_0: finished, another model/data configuration")
    # the checkpoint file itself: its weights are checked against the model before anything is written
    fails(capsys, ["fit", "--config", str(config), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), f"--data.init_args.corpus={other}"],
          r"checkpoint '.*version_0/checkpoints/last\.ckpt' does not fit this model "
          r"\(model\.embed\.weight is \[\d+, 16\] in the checkpoint and \[27, 16\] in this model\).*"
          r"tzoo fit --config .*version_0/config\.yaml")  # fmt: skip
    assert {name: (run / name).read_bytes() for name in kept} == kept  # the resumed run's records are untouched
    assert sorted(p.name for p in (tmp_path / "runs" / "lm").iterdir()) == ["version_0"]


def test_a_missing_checkpoint_is_named_before_a_run_folder_is_made(tiny_config, capsys):
    tmp_path, config = tiny_config
    fails(capsys, ["test", "--config", str(config), "--ckpt_path", str(tmp_path / "gone.ckpt")],
          r"^tzoo: error: checkpoint '.*gone\.ckpt' does not exist: give a checkpoint file .*or 'last'")
    assert not (tmp_path / "runs").exists()


def test_a_checkpoint_of_another_task_is_named_as_such(tiny_config, capsys):
    tmp_path, config = tiny_config
    main(["fit", "--config", str(config)])
    (ckpt,) = (tmp_path / "runs").rglob("last.ckpt")
    vision = Path(__file__).resolve().parents[2] / "configs" / "vision" / "digits.yaml"
    fails(capsys, ["test", "--config", str(vision), "--ckpt_path", str(ckpt), f"--trainer.default_root_dir={tmp_path / 'v'}"],
          r"checkpoint '.*last\.ckpt' holds a LanguageModel \(tzoo\.tasks\.lm\.module\.LanguageModel\), "
          r"but this config's model is tzoo\.tasks\.vision\.module\.VisionClassifier")  # fmt: skip
    assert not (tmp_path / "v").exists()


def test_help_lists_every_subcommand_and_runs_carry_no_args_warning(tiny_config, capsys, recwarn):
    main(["--help"])
    out = capsys.readouterr().out
    assert all(f"tzoo {sub}" in out for sub in ("fit", "tasks", "generate", "compare", "check"))
    _, config = tiny_config
    main(["validate", "--config", str(config), "--trainer.logger=false"])
    assert not [w for w in recwarn if "args parameter is intended" in str(w.message)]


def test_a_model_that_refuses_its_arguments_is_one_clear_line(tiny_config, capsys):
    tmp_path, config = tiny_config
    fails(capsys, ["fit", "--config", str(config), "--model.init_args.net.transformer.num_kv_heads=3"],
          r"^tzoo: error: the configuration does not build: num_kv_heads=3 conflicts with num_heads=2.*valid: \[1, 2\]")
    assert not (tmp_path / "runs").exists()


def test_root_cause_reaches_the_models_own_message_through_jsonargparse():
    from tzoo.tasks.cli import root_cause

    def chain(inner: BaseException) -> ValueError:
        try:
            try:
                raise inner
            except BaseException:
                raise ValueError("Problem with given class_path 'x.Model'")
        except ValueError:
            try:
                raise ValueError("Does not validate against any of the Union subtypes\n...")
            except ValueError as wrapper:
                return wrapper

    assert root_cause(chain(RuntimeError("dim must be > 0, got -1"))) == "dim must be > 0, got -1"
    try:  # the model's own error raised `from None` over a KeyError: its message, not the KeyError's
        try:
            {}["heads"]
        except KeyError:
            raise ValueError("num_heads must divide dim") from None
    except ValueError as own:
        assert root_cause(chain(own)) == "num_heads must divide dim"


def test_the_fit_check_compares_shapes_even_when_names_may_differ(tmp_path):
    import lightning.pytorch as pl

    from tzoo.tasks.cli import UsageError, _builds_weights_later, _check_checkpoint_fits

    class Small(pl.LightningModule):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(n, 2)

    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": {"layer.weight": torch.zeros(2, 3), "layer.bias": torch.zeros(2), "extra": torch.zeros(1)}}, path)
    _check_checkpoint_fits(Small(3), path, strict=False)  # an extra name: fine when not strict
    with pytest.raises(UsageError, match=r"the checkpoint has \['extra'\] that this model lacks"):
        _check_checkpoint_fits(Small(3), path)
    with pytest.raises(UsageError, match=r"layer\.weight is \[2, 3\] in the checkpoint and \[2, 4\] in this model"):
        _check_checkpoint_fits(Small(4), path, strict=False)
    lazy = Small(3)
    lazy.layer = torch.nn.LazyLinear(2)
    assert _builds_weights_later(lazy) and not _builds_weights_later(Small(3))


# --- bad input: one line `tzoo: error: ...`, exit status 2, before any compute ------------------


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("trainer:\n  max_steps: 2\n  callbacks: [a, b\nmodel: x\n")
    fails(capsys, ["fit", "--config", str(config)], r"config file '.*broken\.yaml' is not valid YAML at line 4, column 6: .*"
                                                     r"\(while parsing a flow sequence that starts at line 3\)")  # fmt: skip


def test_a_config_folder_is_not_a_config_file(capsys):
    folder = Path(__file__).resolve().parents[2] / "configs" / "lm"
    fails(capsys, ["fit", "--config", str(folder)], r"--config '.*configs/lm' is a folder, not a config file: give a YAML file such as .*\.yaml")


def test_a_text_file_as_ckpt_path_is_named(tiny_config, capsys):
    tmp_path, config = tiny_config
    notes = tmp_path / "notes.txt"
    notes.write_text("epoch 3 looked good\n")
    fails(capsys, ["fit", "--config", str(config), "--ckpt_path", str(notes)],
          r"--ckpt_path '.*notes\.txt' is a text file, not a checkpoint \(it starts with 'epoch 3 looked good\\n'\): give a \.ckpt file")
    assert not (tmp_path / "runs").exists()


def test_a_negative_step_count_is_refused_before_the_data_is_prepared(tiny_config, capsys):
    tmp_path, config = tiny_config
    fails(capsys, ["fit", "--config", str(config), "--trainer.max_steps", "-5"],
          r"--trainer\.max_steps=-5 is not valid: give a count >= 0, or -1 for no limit")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()


def test_task_and_config_together_are_refused(tiny_config, capsys):
    tmp_path, config = tiny_config
    # (this trained a digits ViT and exited 0: the later --task's default config replaced the lm config)
    fails(capsys, ["fit", "--config", str(config), "--task", "vision"],
          r"--task vision cannot be combined with --config .*tiny\.yaml: --task vision stands for --config .*digits\.yaml")
    fails(capsys, ["fit", "--task=lm", "-c", str(config)], r"--task lm cannot be combined with --config .*tiny\.yaml")
    vision = Path(__file__).resolve().parents[2] / "configs" / "vision" / "digits.yaml"
    fails(capsys, ["fit", "--config", str(config), "--config", str(vision)],
          r"--config .*tiny\.yaml configures the 'lm' task's model \(LanguageModel\) but --config .*digits\.yaml configures "
          r"the 'vision' task's model \(VisionClassifier\): one run trains one model")  # fmt: skip
    assert not (tmp_path / "runs").exists()


def _read_only_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        return folder
    # root writes through permissions: a folder on a file system that refuses new files instead
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir="/sys"):
            pass
    except OSError:
        return Path("/sys")
    pytest.skip("no read-only folder to try (running as root, and /sys takes new files)")


def test_a_read_only_output_folder_is_named_before_training(tiny_config, capsys):
    tmp_path, config = tiny_config
    folder = _read_only_folder(tmp_path)
    fails(capsys, ["fit", "--config", str(config), f"--trainer.default_root_dir={folder / 'runs'}"],
          rf"--trainer\.default_root_dir='{re.escape(str(folder / 'runs'))}' is not writable \(it would be made in "
          rf"'{re.escape(str(folder))}'\): .*; give a folder you can write to")
    assert not (tmp_path / "cache").exists()  # nothing was prepared or trained


def test_a_sample_prompt_outside_the_vocabulary_fails_before_training(tiny_config, capsys):
    tmp_path, config = tiny_config
    # (this trained until the first validation, then raised while sampling)
    fails(capsys, ["fit", "--config", str(config), "--model.init_args.sample_prompt=Zebra#"],
          r"model\.init_args\.sample_prompt='Zebra#' cannot be encoded with this corpus's tokenizer: "
          r"cannot encode character\(s\) '#', 'Z', 'b': not in this tokenizer's vocabulary")  # fmt: skip
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


@pytest.mark.parametrize(("content", "message"), [
    (b"First Citizen:\nBefore we proceed\x00\x01\x02", r"corpus file '.*corpus\.txt' is not text: a NUL byte at offset 32"),
    ("Before we proceed any further, café".encode("latin-1"), r"corpus file '.*corpus\.txt' is not UTF-8 text: byte 0xe9 at offset 34"),
])  # fmt: skip
def test_a_corpus_that_is_not_utf8_text_is_one_line(tiny_config, capsys, content, message):
    tmp_path, config = tiny_config
    (tmp_path / "corpus.txt").write_bytes(content)
    fails(capsys, ["fit", "--config", str(config)], message)
