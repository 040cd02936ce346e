"""LanguageModel: training steps through Lightning, sampling, checkpoints, bad input."""

import lightning.pytorch as pl
import pytest
import torch

from tzoo.tasks.loading import load_module
from tzoo.tasks.lm.data import TextDataModule
from tzoo.core import TransformerConfig
from tzoo.tasks.config import OptimConfig
from tzoo.tasks.lm.model import GPTConfig
from tzoo.tasks.lm.module import LanguageModel

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 30


@pytest.fixture
def data(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    return TextDataModule(str(corpus), block_size=16, batch_size=4, val_batches=2, cache_dir=str(tmp_path / "cache"))


def net(vocab_size, block_size=16):
    return GPTConfig(vocab_size, block_size=block_size, transformer=TransformerConfig(dim=16, depth=1, num_heads=2))


def tiny(vocab_size, **optim):
    return LanguageModel(net(vocab_size), OptimConfig(warmup_steps=2, **optim), sample_tokens=0)


def trainer(tmp_path, steps=6):
    return pl.Trainer(
        max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, limit_val_batches=2, val_check_interval=3,
    )


def test_loss_falls_and_checkpoint_carries_the_tokenizer(tmp_path, data):
    pl.seed_everything(0)
    model = tiny(data.vocab_size, lr=3e-3)
    first = trainer(tmp_path, 1).validate(model, datamodule=data, verbose=False)[0]["val/loss"]
    t = trainer(tmp_path, 60)
    t.fit(model, datamodule=data)
    assert t.callback_metrics["val/loss"] < first - 0.5
    assert torch.isclose(t.callback_metrics["val/ppl"], t.callback_metrics["val/loss"].exp())
    path = tmp_path / "m.ckpt"
    t.save_checkpoint(path)
    restored = load_module(path, task="lm")
    assert restored.tokenizer.encode("question") == data.tokenizer.encode("question")
    probe = torch.tensor([data.tokenizer.encode("To be, or not")])
    assert torch.allclose(restored(probe), model.eval()(probe), atol=1e-5)
    text = restored.sample("To be", max_new_tokens=20, temperature=0.8, seed=0)
    assert text.startswith("To be") and len(text) == len("To be") + 20


def test_prompt_outside_the_character_vocabulary(tmp_path, data):
    model = tiny(data.vocab_size)
    model.tokenizer = data.tokenizer
    with pytest.raises(ValueError, match=r"'Z'"):
        model.sample("Zounds", max_new_tokens=3)


def test_data_block_size_larger_than_model_positions(tmp_path, data):
    model = LanguageModel(net(data.vocab_size, block_size=8))
    with pytest.raises(ValueError, match=r"data's block_size=16 is larger than the model's block_size=8"):
        trainer(tmp_path).fit(model, datamodule=data)


def test_vocab_size_must_be_given_outside_the_cli():
    with pytest.raises(ValueError, match=r"net.vocab_size is not set: the tzoo CLI links it from the data"):
        LanguageModel()


def test_optimizer_groups_and_schedule(tmp_path, data):
    model = tiny(data.vocab_size, lr=1e-3, min_lr=1e-4)
    t = trainer(tmp_path, 10)
    t.fit(model, datamodule=data)
    opt = t.optimizers[0]
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in plain["params"])
    assert t.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(1e-4, rel=1e-3)  # cosine floor at the end
