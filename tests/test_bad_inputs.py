"""The bad-input catalogue: every input tzoo validates, per task, with the exact error it gives.

Each case is (what is wrong, a call that must fail, the exception type, a regex its message must
match). Every message names the offending value and what would be valid. The per-task test files
test the same errors in context; this file is the one list of them (the README's "what tzoo
validates" table is generated from the ids below).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tzoo.core import MultiHeadAttention
from tzoo.tasks.base import TaskModule
from tzoo.tasks.decision.data import TrajectoryDataModule
from tzoo.tasks.decision.model import DecisionTransformerModel, DTConfig
from tzoo.tasks.decision.module import DecisionTransformer
from tzoo.tasks.decision.tokenizer import TrajectoryTokenizer
from tzoo.tasks.loading import load_checkpoint
from tzoo.tasks.lm.data import TextDataModule
from tzoo.tasks.config import OptimConfig
from tzoo.tasks.lm.model import GPT, GPTConfig
from tzoo.tasks.lm.module import LanguageModel
from tzoo.tasks.text import BPETokenizer, CharTokenizer, load_tokenizer
from tzoo.tasks.reliability import NonFiniteLossGuard, read_checkpoint
from tzoo.tasks.vision.data import ImageDataModule
from tzoo.tasks.vision.model import ViTConfig
from tzoo.tasks.vision.module import VisionClassifier
from tzoo.tasks.vision.tokenizer import PatchTokenizer, grid_size, unpatchify

CHAR = CharTokenizer.from_text("abc")


def _gpt(vocab_size: int, *, block_size: int = 16) -> GPTConfig:
    from tzoo.core import TransformerConfig

    return GPTConfig(vocab_size, block_size=block_size, transformer=TransformerConfig(dim=8, depth=1, num_heads=2))


def _file(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _tokenizer_file(tmp_path: Path, **changes) -> Path:
    document = {"kind": "char", "version": 1, "chars": ["a"], "special_tokens": ["<|endoftext|>"], **changes}
    return _file(tmp_path, "tok.json", json.dumps(document))


def _short_corpus(tmp_path: Path) -> None:
    dm = TextDataModule(str(_file(tmp_path, "short.txt", "abcdefghij")), block_size=64, cache_dir=str(tmp_path))
    dm.setup("fit")


Case = tuple[str, Callable[[Path], object], type[BaseException], str]

CASES: list[Case] = [
    # --- lm: data ------------------------------------------------------------------------------
    ("lm.data.tokenizer", lambda t: TextDataModule(tokenizer="words"), ValueError, r"tokenizer='words' is not one of \('char', 'bpe'\)"),
    ("lm.data.bpe_vocab_size", lambda t: TextDataModule(tokenizer="bpe", bpe_vocab_size=200), ValueError,
     r"bpe_vocab_size=200 is too small for byte-level BPE: it needs >= 257"),
    ("lm.data.block_size", lambda t: TextDataModule(block_size=0), ValueError, r"block_size must be >= 1, got 0"),
    ("lm.data.batch_size", lambda t: TextDataModule(batch_size=-2), ValueError, r"batch_size must be >= 1, got -2"),
    ("lm.data.val_fraction", lambda t: TextDataModule(val_fraction=1.0), ValueError,
     r"val_fraction must be between 0 and 1 \(exclusive\), got 1.0"),
    ("lm.data.sha256", lambda t: TextDataModule(sha256="abc"), ValueError, r"sha256 must be 64 hexadecimal digits, got 'abc'"),
    ("lm.data.num_workers", lambda t: TextDataModule(num_workers=-1), ValueError, r"num_workers must be >= 0, got -1"),
    ("lm.data.corpus_empty_name", lambda t: TextDataModule(""), ValueError,
     r"corpus must be a name \['shakespeare', 'python-stdlib', 'tinyshakespeare'\], an http\(s\) URL or a path, got ''"),
    ("lm.data.corpus_missing", lambda t: TextDataModule(str(t / "nowhere.txt"), cache_dir=str(t)).prepare_data(),
     FileNotFoundError, r"corpus '.*nowhere\.txt' is not a named corpus \['shakespeare', 'python-stdlib', 'tinyshakespeare'\]"),
    ("lm.data.corpus_blank", lambda t: TextDataModule(str(_file(t, "blank.txt", " \n\n ")), cache_dir=str(t)).prepare_data(),
     ValueError, r"corpus '.*blank\.txt' is empty \(no characters other than whitespace\)"),
    ("lm.data.corpus_not_utf8", lambda t: TextDataModule(str(_file(t, "latin.txt", b"caf\xe9 au lait")), cache_dir=str(t)).prepare_data(),
     ValueError, r"corpus file '.*latin\.txt' is not UTF-8 text: byte 0xe9 at offset 3 .*convert it to UTF-8"),
    ("lm.data.corpus_binary", lambda t: TextDataModule(str(_file(t, "pic.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")), cache_dir=str(t)).prepare_data(),
     ValueError, r"corpus file '.*pic\.png' is not text: a NUL byte at offset 8 \(a binary file.*give a UTF-8 text file"),
    ("lm.data.corpus_too_short", _short_corpus, ValueError,
     r"corpus '.*short\.txt' has 9 train and 1 validation tokens, but block_size=64 needs at least 65 in each"),
    ("lm.data.sha256_mismatch", lambda t: TextDataModule(str(_file(t, "c.txt", "abc")), sha256="0" * 64, cache_dir=str(t)).prepare_data(),
     ValueError, r"SHA-256 of .*c\.txt is [0-9a-f]{64}, expected 0{64}"),
    # --- lm: tokenizers ------------------------------------------------------------------------
    ("lm.tokenizer.unknown_char", lambda t: CHAR.encode("abz"), ValueError,
     r"cannot encode character\(s\) 'z': not in this tokenizer's vocabulary of 3 characters"),
    ("lm.tokenizer.id_out_of_range", lambda t: CHAR.decode([1, 9]), ValueError, r"cannot decode id 9: valid ids are 0\.\.3 \(vocab_size=4\)"),
    ("lm.tokenizer.negative_id", lambda t: CHAR.decode(torch.tensor([-1])), ValueError, r"cannot decode id -1: valid ids are 0\.\.3"),
    ("lm.tokenizer.non_integer_id", lambda t: CHAR.decode([1.5]), ValueError,
     r"decode takes a flat sequence of integer ids, got elements like 1\.5"),
    ("lm.tokenizer.nested_ids", lambda t: CHAR.decode([[1, 2]]), ValueError, r"decode takes a flat sequence of integer ids, got elements like \[1, 2\]"),
    ("lm.tokenizer.chars_not_single", lambda t: CharTokenizer(["ab"]), ValueError, r"chars must be single characters, got \['ab'\]"),
    ("lm.tokenizer.chars_repeat", lambda t: CharTokenizer(["a", "a"]), ValueError, r"chars must not repeat a character"),
    ("lm.tokenizer.special_tokens", lambda t: CharTokenizer(["a"], special_tokens=()), ValueError,
     r"special_tokens must be a non-empty sequence of strings \(the first marks end of text\), got \(\)"),
    ("lm.tokenizer.bpe_vocab_size", lambda t: BPETokenizer.train("abc", vocab_size=100), ValueError,
     r"vocab_size=100 is too small for a byte-level BPE: it needs at least 256 \(bytes\) \+ 1 \(special tokens\) = 257"),
    ("lm.tokenizer.file_missing", lambda t: load_tokenizer(t / "none.json"), FileNotFoundError, r"tokenizer file '.*none\.json' does not exist"),
    ("lm.tokenizer.file_not_json", lambda t: load_tokenizer(_file(t, "tok.json", b"\x80\x04K\x01.")), ValueError,
     r"tok\.json is not a tzoo tokenizer file \(not JSON"),
    ("lm.tokenizer.file_kind", lambda t: load_tokenizer(_tokenizer_file(t, kind="wordpiece")), ValueError,
     r"tok\.json is not a tzoo tokenizer file: its 'kind' is 'wordpiece', not one of \['bpe', 'char'\]"),
    ("lm.tokenizer.file_version", lambda t: load_tokenizer(_tokenizer_file(t, version=7)), ValueError,
     r"tok\.json has tokenizer format version 7; this tzoo reads version 1"),
    ("lm.tokenizer.file_wrong_kind", lambda t: BPETokenizer.load(_tokenizer_file(t)), ValueError,
     r"tok\.json holds a 'char' tokenizer, not a 'bpe' one: use load_tokenizer\(\)"),
    ("lm.tokenizer.bpe_lone_surrogate", lambda t: BPETokenizer.train("abc", vocab_size=260).encode("a\ud800"), ValueError,
     r"cannot encode '\\ud800' at index 1: a lone surrogate is not valid Unicode text"),
    # --- lm: model -----------------------------------------------------------------------------
    ("lm.model.vocab_size_unset", lambda t: LanguageModel(), ValueError, r"net.vocab_size is not set: the tzoo CLI links it from the data"),
    ("lm.model.lr", lambda t: LanguageModel(_gpt(10), OptimConfig(lr=0.0)), ValueError, r"optim.lr must be a finite number > 0, got 0\.0"),
    ("lm.model.warmup_steps", lambda t: LanguageModel(_gpt(10), {"warmup_steps": -1}), ValueError, r"optim.warmup_steps must be >= 0, got -1"),
    ("lm.model.optim_unknown_field", lambda t: LanguageModel(_gpt(10), {"learning_rate": 1e-3}), ValueError,
     r"optim has no field 'learning_rate' \(valid fields: lr, min_lr, weight_decay, betas, warmup_steps, .*schedule"),
    ("lm.model.net_unknown_nested_field", lambda t: LanguageModel({"vocab_size": 10, "transformer": {"windw": 4}}), ValueError,
     r"net.transformer has no field 'windw' \(valid fields: dim, depth, .*window"),
    ("lm.model.relative_position_in_the_wrong_place", lambda t: GPTConfig(10, position="rope"), ValueError,
     r"net.position='rope' is not one of \('learned', 'none'\); relative positions are net.transformer.position"),
    ("lm.model.sequence_too_long", lambda t: GPT(_gpt(10, block_size=4))(torch.zeros(1, 5, dtype=torch.long)),
     ValueError, r"5 tokens at position 0 exceed the model's block_size=4 \(its maximum positions\); crop the input to the last 4 tokens"),
    ("lm.model.temperature_nan", lambda t: GPT(_gpt(10, block_size=4)).generate(torch.zeros(1, 1, dtype=torch.long), 2,
     temperature=float("nan")), ValueError, r"temperature must be a finite number >= 0 \(0 = greedy\), got nan"),
    ("lm.model.max_new_tokens", lambda t: GPT(_gpt(10, block_size=4)).generate(torch.zeros(1, 1, dtype=torch.long), -5),
     ValueError, r"max_new_tokens must be a whole number >= 0, got -5"),
    # --- vision ----------------------------------------------------------------------------------
    ("vision.tokenizer.not_4d", lambda t: PatchTokenizer(8, in_channels=3)(torch.zeros(3, 8, 8)), ValueError,
     r"images must be \(B, C, H, W\), got a tensor of shape \(3, 8, 8\)"),
    ("vision.tokenizer.channels", lambda t: PatchTokenizer(8, in_channels=3)(torch.zeros(1, 1, 8, 8)), ValueError,
     r"images have 1 channels but the model takes 3 \(in_channels=3\)"),
    ("vision.tokenizer.dtype", lambda t: PatchTokenizer(8, in_channels=1)(torch.zeros(1, 1, 8, 8, dtype=torch.uint8)), ValueError,
     r"images must be a floating-point tensor, got torch.uint8; convert them first \(e.g. uint8 pixels: images.float\(\) / 255"),
    ("vision.tokenizer.does_not_tile", lambda t: PatchTokenizer(8, patch_size=4, in_channels=1)(torch.zeros(1, 1, 30, 8)), ValueError,
     r"image height 30 does not tile into patches of 4 with stride 4: valid heights are a multiple of 4 \(e\.g\. 28 or 32\)"),
    ("vision.tokenizer.smaller_than_patch", lambda t: grid_size(2, 4), ValueError, r"image height 2 does not tile into patches of 4"),
    ("vision.tokenizer.stride", lambda t: grid_size((8, 9), 4, 2), ValueError,
     r"image width 9 does not tile into patches of 4 with stride 2: valid widths are 4 \+ a multiple of 2 \(e\.g\. 8 or 10\)"),
    ("vision.tokenizer.patch_size", lambda t: PatchTokenizer(8, patch_size=0), ValueError,
     r"patch_size must be a positive int or a \(height, width\) pair of them, got 0"),
    ("vision.tokenizer.position", lambda t: PatchTokenizer(8, position="rope"), ValueError, r"position='rope' is not one of \('sincos', 'learned'\)"),
    ("vision.tokenizer.learned_needs_size", lambda t: PatchTokenizer(8, position="learned"), ValueError,
     r"learned positions need the training image_size \(their grid\); pass image_size="),
    ("vision.tokenizer.unpatchify_shape", lambda t: unpatchify(torch.zeros(1, 3, 24), (2, 2), (4, 2), 3), ValueError,
     r"patches of shape \(1, 3, 24\) do not fit a 2x2 grid of 3-channel 4x2 patches: expected \(B, 4, 24\)"),
    ("vision.model.links_unset", lambda t: VisionClassifier(), ValueError,
     r"net.num_classes and net.in_channels are not set: the tzoo CLI links them from the data"),
    ("vision.model.flat_size", lambda t: VisionClassifier({"num_classes": 10, "in_channels": 1, "size": "huge"}), ValueError,
     r"net has no field 'size' \(valid fields: num_classes, image_size, in_channels, patch_size, .*, local_radius, transformer\)"),
    ("vision.model.net_unknown_nested_field", lambda t: VisionClassifier({"num_classes": 10, "in_channels": 1, "transformer": {"windw": 4}}),
     ValueError, r"net.transformer has no field 'windw' \(valid fields: dim, depth, .*window"),
    ("vision.model.label_smoothing", lambda t: VisionClassifier(ViTConfig(10, 8, 1), label_smoothing=1.0), ValueError,
     r"label_smoothing must be in \[0, 1\), got 1\.0"),
    ("vision.model.relative_position_in_the_wrong_place", lambda t: ViTConfig(10, position="alibi"), ValueError,
     r"net.position='alibi' is not one of \('sincos', 'learned'\); relative positions are net.transformer.position"),
    ("vision.model.local_radius", lambda t: ViTConfig(10, local_radius=-1), ValueError,
     r"net.local_radius must be an integer >= 0 .* or None \(global attention\), got -1"),
    ("vision.model.patch_dropout", lambda t: ViTConfig(10, patch_dropout=1.0), ValueError,
     r"net.patch_dropout must be in \[0, 1\) \(the share of patch nodes dropped in training\), got 1\.0"),
    ("vision.data.dataset", lambda t: ImageDataModule("imagenet"), ValueError,
     r"unknown dataset 'imagenet'; valid datasets: digits, mnist, fashion_mnist, cifar10, folder"),
    ("vision.data.auto_augment", lambda t: ImageDataModule("digits", auto_augment="auto"), ValueError,
     r"auto_augment='auto' is not one of \(None, 'trivial', 'rand'\)"),
    ("vision.data.random_erasing", lambda t: ImageDataModule("digits", random_erasing=2), ValueError,
     r"random_erasing is a probability in \[0, 1\], got 2"),
    ("vision.data.folder_one_class", lambda t: ImageDataModule("folder", data_dir=str(_image_folder(t, "cats")), image_size=8).num_classes,
     ValueError, r"image folder '.*pics' has one class subfolder \('cats'\): a classifier needs at least 2"),
    ("vision.data.folder_missing", lambda t: ImageDataModule("folder", data_dir=str(t / "nowhere"), image_size=8).num_classes,
     FileNotFoundError, r"image folder '.*nowhere' does not exist"),
    # --- decision --------------------------------------------------------------------------------
    ("decision.tokenizer.obs_dim", lambda t: TrajectoryTokenizer(0, 2, discrete=True, dim=8, max_timestep=10), ValueError,
     r"obs_dim must be >= 1, got 0"),
    ("decision.model.context_length", lambda t: DTConfig(obs_dim=4, act_dim=3, discrete=True, context_length=0), ValueError,
     r"context_length \(K\) must be >= 1 step, got 0"),
    ("decision.model.links_unset", lambda t: DecisionTransformer(), ValueError,
     r"net.obs_dim, net.act_dim, net.discrete, net.max_timestep, net.context_length, env_id not set: the tzoo CLI links them"),
    ("decision.model.eval_target_return", lambda t: _decision(eval_target_return=float("nan")), ValueError,
     r"eval_target_return must be a finite number \(the return to ask the model for\), got nan"),
    ("decision.model.eval_temperature", lambda t: _decision(eval_temperature=-0.5), ValueError,
     r"eval_temperature must be a finite number >= 0 \(0 = the most likely action\), got -0\.5"),
    ("decision.evaluate.target_return", lambda t: _decision(statistics=True).evaluate(float("nan"), temperature=0), ValueError,
     r"target_return must be a finite number \(the return to ask the model for\), got nan"),
    ("decision.evaluate.temperature", lambda t: _decision(statistics=True).evaluate(100.0, temperature=float("nan")), ValueError,
     r"temperature must be a finite number >= 0 \(0 = the most likely action\), got nan"),
    ("decision.model.net_links_unset", lambda t: DecisionTransformerModel(DTConfig(obs_dim=4, act_dim=3)), ValueError,
     r"net.discrete, net.max_timestep, net.context_length not set: the tzoo CLI links them"),
    ("decision.data.context_length", lambda t: TrajectoryDataModule(context_length=0), ValueError,
     r"context_length \(K\) must be >= 1 step, got 0"),
    ("decision.data.random_rate", lambda t: TrajectoryDataModule(random_rate=(0.5, 0.1)), ValueError,
     r"random_rate must be \(low, high\) with 0 <= low <= high <= 1, got \(0\.5, 0\.1\)"),
    ("decision.data.env_id", lambda t: TrajectoryDataModule(env_id="CartPol-v1", data_dir=str(t)).prepare_data(), ValueError,
     r"unknown environment id 'CartPol-v1'.*did you mean CartPole-v1"),
    # --- core ------------------------------------------------------------------------------------
    ("core.attention.heads", lambda t: MultiHeadAttention(10, 3), ValueError, r"dim=10 must be divisible by num_heads=3 \(num_heads >= 1\)"),
    # --- checkpoints, training -------------------------------------------------------------------
    ("checkpoint.missing", lambda t: read_checkpoint(t / "gone.ckpt"), FileNotFoundError, r"checkpoint '.*gone\.ckpt' is missing"),
    ("checkpoint.truncated", lambda t: read_checkpoint(_file(t, "cut.ckpt", b"PK\x03\x04" + b"\0" * 50)), ValueError,
     r"checkpoint '.*cut\.ckpt' \(54 bytes\) is truncated or corrupt and cannot be read"),
    ("checkpoint.generate_not_lightning", lambda t: load_checkpoint(_torch_file(t, {"weights": torch.zeros(1)})), ValueError,
     r"'.*plain\.pt' is not a Lightning checkpoint \(no 'state_dict'\)"),
    ("training.guard_action", lambda t: NonFiniteLossGuard("ignore"), ValueError, r"action='ignore' is not one of \('stop', 'skip'\)"),
]  # fmt: skip


def _image_folder(tmp_path: Path, *classes: str) -> Path:
    from PIL import Image

    for name in classes:
        (tmp_path / "pics" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "pics" / name / "0.png")
    return tmp_path / "pics"


def _decision(*, statistics: bool = False, **options) -> DecisionTransformer:
    import numpy as np

    from tzoo.tasks.decision.tokenizer import DatasetStatistics

    net = {"obs_dim": 4, "act_dim": 2, "discrete": True, "max_timestep": 500, "context_length": 5, "transformer": {"dim": 16, "depth": 1, "num_heads": 2}}
    module = DecisionTransformer(net, env_id="CartPole-v1", eval_episodes=1, **options)
    if statistics:  # a model that can play: its target and temperature are what is checked
        module.model.tokenizer.set_statistics(DatasetStatistics.from_arrays(np.ones((10, 4)), np.array([20.0, 30.0])))
    return module


def _torch_file(tmp_path: Path, obj: object) -> Path:
    path = tmp_path / "plain.pt"
    torch.save(obj, path)
    return path


@pytest.mark.parametrize(("call", "error", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, call, error, message):
    with pytest.raises(error) as info:
        call(tmp_path)
    assert type(info.value) is error  # the documented type itself, not a subclass standing in for it
    assert re.search(message, str(info.value)), f"{str(info.value)!r} does not match {message!r}"


def test_every_task_is_in_the_catalogue():
    from tzoo.tasks.registry import list_tasks

    tasks, _ = list_tasks()
    covered = {case[0].split(".")[0] for case in CASES}
    # speech and bert keep their catalogues in tests/tasks/speech and tests/tasks/bert (built alongside this file)
    missing = {t.name for t in tasks} - covered - {"speech", "bert"} - {t.name for t in tasks if not t.module.__module__.startswith("tzoo.")}
    assert not missing, f"tasks without bad-input cases: {sorted(missing)}"
    assert issubclass(LanguageModel, TaskModule)
