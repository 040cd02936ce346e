"""Fine-tuning GPT-2 through the CLI: `model.init_args.pretrained` (a local GPT-2 folder built here)
gives the LM its sizes, weights and tokenizer, the data encodes with that BPE, two steps train and
the checkpoint reloads without the folder; GPT-2's original vocab.json + merges.txt tokenize as
transformers does; mismatches and a hub id without network are one line naming the fix."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tzoo.tasks.cli import main  # noqa: E402
from tzoo.tasks.lm.gpt2 import load_gpt2_tokenizer  # noqa: E402
from tzoo.tasks.text import BPETokenizer  # noqa: E402

CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 40
CONFIG = "configs/lm/gpt2_finetune.yaml"


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A tiny GPT-2 in Hugging Face's layout: weights of trained scale and a byte-level BPE of its own."""
    folder = tmp_path_factory.mktemp("gpt2") / "tiny-gpt2"
    tokenizer = BPETokenizer.train(CORPUS, vocab_size=300)
    config = transformers.GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                     bos_token_id=tokenizer.eot_id, eos_token_id=tokenizer.eot_id)  # fmt: skip
    model = transformers.GPT2LMHeadModel(config).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if p.dim() == 1 and name.endswith("weight") else 0.0
            p.copy_(base + (0.2 * torch.randn(p.shape, generator=g) if p.dim() == 1 else torch.randn(p.shape, generator=g) / math.sqrt(min(p.shape))))
    model.save_pretrained(folder)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer._hf, eos_token="<|endoftext|>").save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="module")
def fine_tuned(gpt2_folder, tmp_path_factory):
    """Two steps of configs/lm/gpt2_finetune.yaml from the tiny folder: the checkpoint."""
    root = tmp_path_factory.mktemp("fine_tune")
    main(["fit", *_args(root, gpt2_folder[0])])
    (ckpt,) = (root / "runs").rglob("last.ckpt")
    return ckpt


def one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("tzoo: error: "), line
    return line


def _args(tmp_path, folder, *extra):
    (tmp_path / "corpus.txt").write_text(CORPUS)
    return ["--config", CONFIG, "--model.init_args.pretrained", str(folder), "--data.init_args.tokenizer", str(folder),
            "--data.init_args.corpus", str(tmp_path / "corpus.txt"), "--data.init_args.cache_dir", str(tmp_path / "cache"),
            "--data.init_args.block_size", "16", "--data.init_args.batch_size", "2", "--trainer.max_steps", "2",
            "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false", "--model.init_args.sample_tokens", "0",
            "--trainer.default_root_dir", str(tmp_path / "runs"), *extra]  # fmt: skip


def test_a_gpt2_folder_fine_tunes_through_the_cli(gpt2_folder, fine_tuned):
    from tzoo.tasks.lm.module import LanguageModel
    from tzoo.tasks.loading import load_module

    folder, reference = gpt2_folder
    start = LanguageModel(pretrained=str(folder)).eval()
    ids = torch.randint(0, reference.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (start.model(ids) - reference(ids).logits).abs().max() < 1e-5  # the weights, through the module
    assert start.model.cfg.transformer.feed_forward == "gelu_tanh" and start.tokenizer.vocab_size == reference.config.vocab_size

    ckpt = fine_tuned
    moved = shutil.move(str(folder), str(folder.with_name("moved")))  # the checkpoint holds weights and tokenizer
    try:
        module = load_module(ckpt)
    finally:
        shutil.move(moved, str(folder))
    assert module.pretrained is None and module.tokenizer.encode("Speak, speak.") == start.tokenizer.encode("Speak, speak.")
    with torch.no_grad():
        moved_by = (module.model(ids) - start.model(ids)).abs().max()
    assert 0 < moved_by < 1  # two small steps from the pretrained weights


def test_a_fine_tuned_checkpoint_generates_and_exports_as_hf_does(fine_tuned, tmp_path, capsys):
    """`tzoo generate` (greedy, KV cache) from the fine-tuned checkpoint = transformers' greedy
    generation from its `tzoo export --to hf` folder, tokenizer included; that folder is a
    `pretrained` folder again."""
    from tzoo.tasks.lm.module import LanguageModel
    from tzoo.tasks.loading import load_module

    ckpt = fine_tuned
    capsys.readouterr()
    main(["generate", "--ckpt", str(ckpt), "--prompt", "Speak", "--max_new_tokens", "30", "--temperature", "0", "--device", "cpu"])
    ours = capsys.readouterr().out.removesuffix("\n")
    main(["export", str(ckpt), "--to", "hf", str(tmp_path / "out")])
    reference = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "out" / "tokenizer.json"))
    prompt = torch.tensor([tokenizer.encode("Speak")])
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    new = reference.generate(prompt, max_new_tokens=30, do_sample=False, eos_token_id=eot, pad_token_id=eot)[0, prompt.shape[1] :].tolist()
    new = new[: new.index(eot)] if eot in new else new
    assert len(new) > 5 and ours == "Speak" + tokenizer.decode(new)
    again = LanguageModel(pretrained=str(tmp_path / "out"))
    assert torch.equal(again.model.embed.weight, load_module(ckpt).model.embed.weight)


def test_the_data_must_encode_with_the_pretrained_tokenizer(gpt2_folder, tmp_path, capsys):
    folder, _ = gpt2_folder
    line = one_line_error(capsys, ["fit", *_args(tmp_path, folder, "--data.init_args.tokenizer", "char")])
    assert f"pretrained={str(folder)!r} has a vocabulary of 300 tokens but net.vocab_size is" in line
    assert f"set data.init_args.tokenizer={str(folder)!r}" in line
    other = tmp_path / "other-bpe"  # another BPE of the same size: caught when the data meets the model
    other.mkdir()
    (other / "tokenizer.json").write_text(BPETokenizer.train(CORPUS.upper(), vocab_size=300)._hf.to_str())
    assert load_gpt2_tokenizer(other).vocab_size == 300
    line = one_line_error(capsys, ["fit", *_args(tmp_path, folder, "--data.init_args.tokenizer", str(other))])
    assert f"the data's tokenizer is not the one of model.init_args.pretrained={str(folder)!r}: set data.init_args.tokenizer=" in line
    line = one_line_error(capsys, ["fit", *_args(tmp_path, folder, "--model.init_args.net.transformer.depth", "3")])
    assert "net.transformer.depth=3 conflicts with the pretrained GPT-2's 2" in line


def test_gpt2s_original_vocab_and_merges_tokenize_as_transformers_does(gpt2_folder, tmp_path):
    folder, _ = gpt2_folder
    original = tmp_path / "original"
    original.mkdir()
    load_gpt2_tokenizer(folder)._hf.model.save(str(original))  # vocab.json + merges.txt, GPT-2's original files
    ours = load_gpt2_tokenizer(original)
    theirs = transformers.GPT2TokenizerFast.from_pretrained(str(original))  # reads vocab.json + merges.txt
    text = "First Citizen:\n  Before we proceed, hear me speak!<|endoftext|>All: ünïcode \t tabs"
    assert ours.encode(text) == theirs(text)["input_ids"]
    assert ours.decode(ours.encode(text)) == text


def test_a_hub_id_without_network_names_the_offline_alternative(monkeypatch):
    import huggingface_hub

    from tzoo.tasks.lm.gpt2 import load_gpt2

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match=r"'someone/gpt2' are not a local folder and could not be downloaded .* offline, give a local folder"):
        load_gpt2("someone/gpt2")


def test_tzoo_generate_samples_a_gpt2_folder_as_transformers_does(gpt2_folder, capsys):
    folder, reference = gpt2_folder
    capsys.readouterr()
    main(["generate", "--ckpt", str(folder), "--prompt", "Speak", "--max_new_tokens", "20", "--temperature", "0", "--device", "cpu"])
    ours = capsys.readouterr().out.removesuffix("\n")
    tokenizer = load_gpt2_tokenizer(folder)
    prompt = torch.tensor([tokenizer.encode("Speak")])
    eot = tokenizer.eot_id
    new = reference.generate(prompt, max_new_tokens=20, do_sample=False, eos_token_id=eot, pad_token_id=eot)[0, prompt.shape[1] :].tolist()
    assert ours == "Speak" + tokenizer.decode(new[: new.index(eot)] if eot in new else new)

