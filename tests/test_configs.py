"""Every example config trains for a couple of steps with tiny sizes, so none of them rots."""

import json
from pathlib import Path

import pytest

from tzoo.tasks.cli import main

ROOT = Path(__file__).resolve().parents[1]
# configs/<task>/attention/*.yaml are overlays (one attention type) on the task's first config
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
BASES = {"lm": "shakespeare_char.yaml", "vision": "digits.yaml", "decision": "cartpole.yaml", "speech": "espeak_tiny.yaml", "bert": "genre.yaml"}
TINY = {
    "lm": [
        "--model.init_args.net.transformer.dim=16", "--model.init_args.net.transformer.depth=1",
        "--model.init_args.net.transformer.num_heads=2", "--model.init_args.net.transformer.num_kv_heads=null",
        "--model.init_args.sample_tokens=4", "--data.init_args.block_size=16", "--model.init_args.net.block_size=16",
        "--data.init_args.batch_size=2",
    ],
    "speech": [
        "--data.init_args.corpus_size=[6,3,3]", "--data.init_args.max_words=2", "--data.init_args.workers=1",
        "--model.init_args.net.encoder.dim=16", "--model.init_args.net.encoder.depth=3", "--model.init_args.net.encoder.num_heads=2",  # 3: the config's inter_ctc [2] needs a layer after it
        "--model.init_args.net.decoder.dim=16", "--model.init_args.net.decoder.depth=1", "--model.init_args.net.decoder.num_heads=2",
        "--data.init_args.batch_size=3", "--data.init_args.num_workers=0",
        "--trainer.precision=32-true",
    ],
    "vision": ["--model.init_args.compile=false"],  # compiling is tested apart (test_precision.py)
    "decision": ["--data.init_args.episodes=10", "--model.init_args.net.transformer.dim=16", "--model.init_args.net.transformer.depth=1",
                 "--model.init_args.eval_episodes=1"],
    "bert": ["--model.init_args.net.transformer.dim=16", "--model.init_args.net.transformer.depth=1",
             "--model.init_args.net.transformer.num_heads=2", "--data.init_args.tokenizer=char", "--data.init_args.batch_size=2"],
}


def tiny_gpt2_folder(folder: Path) -> Path:
    """A GPT-2 in Hugging Face's layout, 1 layer of width 16, with a byte-level BPE of 300 tokens."""
    import transformers

    from tzoo.tasks.text import BPETokenizer

    tokenizer = BPETokenizer.train("First Citizen:\nBefore we proceed any further, hear me speak.\n\n" * 50, vocab_size=300)
    config = transformers.GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    (folder / "tokenizer.json").write_text(tokenizer._hf.to_str())
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(ROOT / "configs")) for c in CONFIGS])
def test_config_trains_a_few_steps(config, tmp_path, monkeypatch):
    monkeypatch.setenv("TZOO_CACHE", str(tmp_path / "cache"))
    overlay = config.parent.name == "attention"
    task = config.parent.parent.name if overlay else config.parent.name
    files = ["--config", str(ROOT / "configs" / task / BASES[task])] if overlay else []
    tiny = TINY.get(task, [])
    if config.name == "gpt2_finetune.yaml":  # a hub id: a tiny local GPT-2 folder offline (the sizes are the folder's)
        folder = tiny_gpt2_folder(tmp_path / "gpt2")
        (tmp_path / "plays.txt").write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n\n" * 50)
        tiny = [a for a in tiny if ".net." not in a] + [f"--model.init_args.pretrained={folder}", f"--data.init_args.tokenizer={folder}",
                                                        f"--data.init_args.corpus={tmp_path / 'plays.txt'}"]  # fmt: skip
    args = ["fit", *files, "--config", str(config), *tiny,
            "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}"]
    if config.name in ("cifar10.yaml", "fashion_mnist.yaml", "vit_tiny_finetune.yaml"):  # downloads (or Debian files): use the bundled digits offline
        size = "32" if config.name == "vit_tiny_finetune.yaml" else "null"  # patch 16 needs more than 8x8 pixels
        args += ["--data.init_args.dataset=digits", f"--data.init_args.image_size={size}", f"--data.init_args.data_dir={tmp_path}"]
    if config.name == "speech_fusion.yaml":  # its text is written by fusion.training_text: a small one of the kind
        corpus = tmp_path / "text.txt"
        corpus.write_text("to be or not to be that is the question\nwater four seven 0 1 2 3 5 6 8 9 jump quick zax\n" * 50)
        args.append(f"--data.init_args.corpus={corpus}")
    if "tinyshakespeare" in config.name:  # a URL corpus: use a local copy of the text offline
        corpus = tmp_path / "input.txt"
        corpus.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n\n" * 50)
        args.append(f"--data.init_args.corpus={corpus}")
    if config.name == "librispeech.yaml":  # needs the user's LibriSpeech: use a tiny generated corpus offline
        args += ["--data.init_args.source=espeak", f"--data.init_args.data_dir={tmp_path / 'speech'}"]
    main(args)
    assert list(tmp_path.rglob("last.ckpt"))
    card = json.loads(next(tmp_path.rglob("run_card.json")).read_text())  # every fit writes a run card
    assert card["steps"] == 2 and card["params"] > 0
    if task in ("lm", "vision", "decision"):  # these count their nodes
        assert card["nodes_per_s"] > 0, card
    if card["metrics"]:  # validation ran: the task's own metric is among them
        assert card["metric"]["value"] is not None, card
