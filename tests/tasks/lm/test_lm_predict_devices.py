"""`tzoo predict` for the LM (prompts from a file -> generations.jsonl in the run folder, equal to the
module's own sampling), and devices: `tzoo generate --device`, `load_module(device=)` (cpu here,
`auto` picks the CPU on a machine without a GPU; the CUDA path runs where there is one)."""

import json
import re
import textwrap

import pytest
import torch

from tzoo.tasks.cli import main
from tzoo.tasks.loading import load_module, resolve_device

CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 40
NO_GPU = not torch.cuda.is_available() and not torch.backends.mps.is_available()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_predict")
    (root / "corpus.txt").write_text(CORPUS)
    config = root / "tiny.yaml"
    config.write_text(textwrap.dedent(f"""\
        seed_everything: 0
        trainer: {{max_steps: 2, limit_val_batches: 0, default_root_dir: {root / "runs"}, enable_progress_bar: false}}
        model:
          class_path: tzoo.tasks.lm.module.LanguageModel
          init_args: {{sample_tokens: 0, net: {{block_size: 16, transformer: {{dim: 16, depth: 1, num_heads: 2}}}}}}
        data:
          class_path: tzoo.tasks.lm.data.TextDataModule
          init_args: {{corpus: {root / "corpus.txt"}, block_size: 16, batch_size: 2, cache_dir: {root / "cache"}}}
        """))  # fmt: skip
    main(["fit", "--config", str(config)])
    (ckpt,) = (root / "runs").rglob("last.ckpt")
    return root, config, ckpt


def one_line_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("tzoo: error: "), line
    return line


def test_predict_writes_a_generation_per_prompt_into_the_run_folder(trained, capsys):
    root, config, ckpt = trained
    prompts = root / "prompts.txt"
    prompts.write_text("First\n\nAll:\nhear me\n")  # the blank line is skipped
    capsys.readouterr()
    main(["predict", "--config", str(config), "--ckpt_path", str(ckpt), "--data.init_args.predict_prompts", str(prompts),
          "--model.init_args.sample_tokens", "12"])  # fmt: skip
    (written,) = re.findall(r"wrote 3 predictions to (\S+)", capsys.readouterr().out)
    assert written.endswith("generations.jsonl") and "/runs/lm/version_1/" in written
    rows = [json.loads(line) for line in open(written)]
    assert [r["prompt"] for r in rows] == ["First", "All:", "hear me"]
    module = load_module(ckpt, task="lm", device="cpu")
    for index, row in enumerate(rows):  # the reference: the module's own sampler, seeded by the prompt's index
        text = module.sample(row["prompt"], max_new_tokens=12, temperature=0.8, top_k=50, seed=index)
        assert row["completion"] == text[len(row["prompt"]) :]
    assert any(r["completion"] for r in rows)  # (a completion may end at once, on the end-of-text token)


def test_predict_settings_that_cannot_work_are_one_line(trained, capsys, tmp_path):
    _, config, ckpt = trained
    base = ["predict", "--config", str(config), "--ckpt_path", str(ckpt)]
    line = one_line_error(capsys, base)
    assert "tzoo predict for the lm task needs prompts: --data.init_args.predict_prompts FILE" in line
    line = one_line_error(capsys, [*base, "--data.init_args.predict_prompts", str(tmp_path / "nope.txt")])
    assert re.search(r"predict_prompts='.*nope\.txt' is not a file: give a text file of prompts, one a line", line)
    bad = tmp_path / "bad.txt"
    bad.write_text("First\nZebra~\n")  # neither 'Z' nor '~' is in the corpus
    line = one_line_error(capsys, [*base, "--data.init_args.predict_prompts", str(bad), "--model.init_args.sample_tokens", "4"])
    assert re.search(r"predict_prompts '.*bad\.txt' line 2: 'Zebra~' cannot be encoded with the corpus's tokenizer", line)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    line = one_line_error(capsys, [*base, "--data.init_args.predict_prompts", str(blank), "--model.init_args.sample_tokens", "4"])
    assert "holds no prompt (every line is blank)" in line
    prompts = tmp_path / "ok.txt"
    prompts.write_text("First\n")
    line = one_line_error(capsys, [*base, "--data.init_args.predict_prompts", str(prompts)])  # the checkpoint's sample_tokens=0
    assert "model.init_args.sample_tokens=0: tzoo predict would generate nothing; set --model.init_args.sample_tokens N" in line


def test_generate_on_the_cpu_and_a_device_that_is_not_there(trained, capsys):
    _, _, ckpt = trained
    main(["generate", "--ckpt", str(ckpt), "--prompt", "First", "--max_new_tokens", "8", "--seed", "0", "--device", "cpu"])
    on_cpu = capsys.readouterr().out
    reference = load_module(ckpt, device="cpu").sample("First", max_new_tokens=8, temperature=0.8, seed=0)
    assert on_cpu.rstrip("\n") == reference
    line = one_line_error(capsys, ["generate", "--ckpt", str(ckpt), "--device", "tpu"])
    assert line == "tzoo: error: device 'tpu' is not one of auto, cpu, cuda, mps (or cuda:N)"
    if not torch.cuda.is_available():
        line = one_line_error(capsys, ["generate", "--ckpt", str(ckpt), "--device", "cuda"])
        assert line == "tzoo: error: device 'cuda' is not available: no CUDA GPU is visible here; use cpu or auto"


@pytest.mark.skipif(not NO_GPU, reason="a machine with a GPU: auto picks it")
def test_auto_picks_the_cpu_on_a_machine_without_a_gpu(trained):
    _, _, ckpt = trained
    assert resolve_device("auto") == torch.device("cpu")
    assert {p.device for p in load_module(ckpt, device="auto").parameters()} == {torch.device("cpu")}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_holds_the_model_and_samples_there(trained, capsys):
    _, _, ckpt = trained
    assert resolve_device("auto") == torch.device("cuda")
    module = load_module(ckpt, device="cuda")
    assert {p.device.type for p in module.parameters()} == {"cuda"}
    assert module.sample("First", max_new_tokens=8, seed=0).startswith("First")
    main(["generate", "--ckpt", str(ckpt), "--prompt", "First", "--max_new_tokens", "8", "--seed", "0", "--device", "cuda"])
    assert capsys.readouterr().out.startswith("First")


@pytest.mark.parametrize(("device", "message"), [
    ("cpu:0", r"device 'cpu:0': only cuda takes an index \(cuda:N\); give 'cpu'"),
    ("cuda:x", r"device 'cuda:x': the index after 'cuda:' must be a whole number, e.g. cuda:0"),
    ("gpu", r"device 'gpu' is not one of auto, cpu, cuda, mps \(or cuda:N\)"),
])  # fmt: skip
def test_bad_device_names(device, message):
    with pytest.raises(ValueError, match=message):
        resolve_device(device)
