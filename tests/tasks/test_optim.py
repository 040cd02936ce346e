"""OptimConfig's options: Muon for the blocks' matrices (+ AdamW for the rest), the
warmup-stable-decay schedule, and their bad values; Muon's state survives a checkpoint."""

import math

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from tzoo.core import TransformerConfig
from tzoo.tasks.base import cosine_with_warmup, warmup_stable_decay
from tzoo.tasks.config import OptimConfig
from tzoo.tasks.lm.data import TextDataModule
from tzoo.tasks.lm.model import GPT, GPTConfig
from tzoo.tasks.lm.module import LanguageModel
from tzoo.tasks.optim import MuonWithAdamW, build_optimizer, muon_parameters

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 30


def gpt(**net) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(40, block_size=16, transformer=TransformerConfig(dim=16, depth=2, num_heads=2, bias=True), **net))


def test_muon_takes_the_block_matrices_and_adamw_the_rest():
    model = gpt()
    opt = build_optimizer(model, OptimConfig(optimizer="muon", muon_lr=0.03, lr=1e-3, weight_decay=0.1))
    assert isinstance(opt, MuonWithAdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    muon_names = {names[id(p)] for p in opt.muon.param_groups[0]["params"]}
    assert muon_names == {n for n, p in model.named_parameters() if n.startswith("decoder.blocks.") and p.dim() == 2}
    assert all(n.endswith(("qkv_proj.weight", "out_proj.weight", "fc1.weight", "fc2.weight")) for n in muon_names)
    decayed, plain = opt.adamw.param_groups
    assert {names[id(p)] for p in decayed["params"]} == {"embed.weight", "pos.weight"}  # the head is tied to embed
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    plain_names = {names[id(p)] for p in plain["params"]}
    assert "decoder.norm.weight" in plain_names and "decoder.blocks.0.attn.qkv_proj.bias" in plain_names
    every = [p for g in opt.param_groups for p in g["params"]]
    assert len(every) == len(set(map(id, every))) == len(list(model.parameters()))
    assert opt.param_groups[0]["lr"] == 0.03 and opt.param_groups[1]["lr"] == 1e-3
    # an untied head is a matrix outside the blocks: AdamW's
    untied = gpt(tie_embeddings=False)
    assert all(p is not untied.head.weight for p in muon_parameters(untied))


@pytest.mark.parametrize("name", ["decoder.blocks.0.attn.qkv_proj.weight", "decoder.blocks.1.feed_forward.fc2.weight"])
def test_a_muon_update_is_orthogonalised_at_the_documented_scale(name):
    model = gpt()
    lr = 0.02
    opt = build_optimizer(model, OptimConfig(optimizer="muon", muon_lr=lr, muon_weight_decay=0.0, muon_momentum=0.95))
    w = dict(model.named_parameters())[name]
    torch.manual_seed(1)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    w.grad = torch.randn_like(w) * torch.logspace(-1, 1, w.shape[1])  # a badly conditioned gradient
    before = w.detach().clone()
    opt.step()
    rows, cols = w.shape  # qkv (48, 16): scale sqrt(3); fc2 (16, 64): scale 1
    update = (before - w.detach()) / lr
    s = torch.linalg.svdvals(update) / math.sqrt(max(1.0, rows / cols))  # torch's "original" shape rule
    # 5 Newton-Schulz steps with the speedrun's coefficients leave every singular value in about [0.7, 1.15]
    assert s.min() > 0.6 and s.max() < 1.2, s
    g = torch.linalg.svdvals(w.grad)
    assert g.max() / g.min() > 5 and s.max() / s.min() < 2  # the gradient's spread is gone


def test_wsd_schedule_values():
    kw = dict(warmup_steps=10, total_steps=100, decay_fraction=0.2, min_ratio=0.1)
    assert warmup_stable_decay(0, **kw) == pytest.approx(0.1)
    assert warmup_stable_decay(4, **kw) == pytest.approx(0.5)
    assert warmup_stable_decay(9, **kw) == pytest.approx(1.0)
    assert warmup_stable_decay(10, **kw) == warmup_stable_decay(50, **kw) == warmup_stable_decay(80, **kw) == 1.0
    assert warmup_stable_decay(90, **kw) == pytest.approx(0.55)  # halfway down from 1 to 0.1
    assert warmup_stable_decay(100, **kw) == pytest.approx(0.1)
    assert warmup_stable_decay(150, **kw) == pytest.approx(0.1)
    # a decay longer than the steps after warmup starts right after warmup, without a jump
    long = dict(kw, decay_fraction=1.0)
    assert warmup_stable_decay(10, **long) == pytest.approx(1.0)
    assert warmup_stable_decay(55, **long) == pytest.approx(0.55)
    assert cosine_with_warmup(55, warmup_steps=10, total_steps=100, min_ratio=0.1) == pytest.approx(0.55)


def _scheduled(budget: str, **trainer) -> tuple[LanguageModel, pl.Trainer]:
    cfg = GPTConfig(40, block_size=16, transformer=TransformerConfig(dim=16, depth=1, num_heads=2))
    model = LanguageModel(cfg, OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, budget=budget), sample_tokens=0)
    model.trainer = pl.Trainer(max_steps=1000, logger=False, enable_progress_bar=False, enable_model_summary=False, **trainer)
    return model, model.trainer


def test_a_time_budget_runs_the_schedule_over_trainer_max_time(monkeypatch):
    from lightning.pytorch.callbacks import Timer

    model, trainer = _scheduled("time", max_time="00:00:10:00")
    timer = next(cb for cb in trainer.callbacks if isinstance(cb, Timer))
    used = {"s": 0.0}
    monkeypatch.setattr(timer, "time_elapsed", lambda stage="train": used["s"])
    lr = model.configure_optimizers()["lr_scheduler"]["scheduler"].lr_lambdas[0]
    kw = dict(warmup_steps=10, total_steps=1000, min_ratio=0.1)
    used["s"] = 300.0
    assert lr(5) == cosine_with_warmup(5, **kw)  # the warmup counts steps
    assert lr(100) == pytest.approx(cosine_with_warmup(500, **kw))  # half the time used: halfway along
    assert lr(800) == pytest.approx(cosine_with_warmup(800, **kw))  # steps ahead of the clock lead
    used["s"] = 600.0
    assert lr(100) == pytest.approx(0.1)  # the time is up: min_lr
    steps, _ = _scheduled("steps", max_time="00:00:10:00")  # the default ignores the clock
    assert steps.configure_optimizers()["lr_scheduler"]["scheduler"].lr_lambdas[0](100) == pytest.approx(cosine_with_warmup(100, **kw))


def test_a_time_budget_without_max_time_is_an_error():
    model, _ = _scheduled("time")
    with pytest.raises(ValueError, match=r"optim.budget='time' runs the schedule over trainer.max_time, but no max_time is set; give trainer.max_time"):
        model.configure_optimizers()


@pytest.fixture
def data(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    return TextDataModule(str(corpus), block_size=16, batch_size=4, val_batches=2, cache_dir=str(tmp_path / "cache"))


def _fit(tmp_path, data, steps, *, ckpt_path=None, save_every=None):
    pl.seed_everything(0)
    cfg = GPTConfig(data.vocab_size, block_size=16, transformer=TransformerConfig(dim=16, depth=1, num_heads=2))
    optim = OptimConfig(optimizer="muon", schedule="wsd", warmup_steps=2, decay_fraction=0.5)
    model = LanguageModel(cfg, optim, sample_tokens=0)
    callbacks = [pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=save_every, save_top_k=-1)] if save_every else []
    trainer = pl.Trainer(
        max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        limit_val_batches=0, gradient_clip_val=1.0, callbacks=callbacks, enable_checkpointing=bool(save_every),
    )  # fmt: skip
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return model, trainer


def test_muon_wsd_resume_is_bit_exact(tmp_path, data):
    full, trainer = _fit(tmp_path / "a", data, 8, save_every=4)
    opt = trainer.optimizers[0]
    assert isinstance(opt, MuonWithAdamW) and opt.muon.state and opt.adamw.state
    assert trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(0.02 * 0.1)  # the wsd floor, Muon's group
    ckpt = tmp_path / "a" / "ckpt" / "epoch=0-step=4.ckpt"
    saved = torch.load(ckpt, weights_only=True)["optimizer_states"][0]
    assert any("momentum_buffer" in s for s in saved["state"].values()) and any("exp_avg" in s for s in saved["state"].values())
    resumed, trainer2 = _fit(tmp_path / "b", data, 8, ckpt_path=ckpt)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    opt2 = trainer2.optimizers[0]
    assert opt2.muon.state is opt2.state and opt2.muon.param_groups[0] is opt2.param_groups[0]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("optimizer", "sgd", r"optim.optimizer='sgd' is not one of \('adamw', 'muon'\)"),
        ("schedule", "linear", r"optim.schedule='linear' is not one of \('cosine', 'wsd'\)"),
        ("budget", "wall", r"optim.budget='wall' is not one of \('steps', 'time'\)"),
        ("decay_fraction", 0.0, r"optim.decay_fraction must be in \(0, 1\].*got 0.0"),
        ("decay_fraction", 1.5, r"optim.decay_fraction must be in \(0, 1\].*got 1.5"),
        ("muon_lr", -1.0, r"optim.muon_lr must be a finite number > 0, got -1.0"),
        ("muon_momentum", 1.0, r"optim.muon_momentum must be in \[0, 1\), got 1.0"),
        ("muon_weight_decay", -0.1, r"optim.muon_weight_decay must be a finite number >= 0, got -0.1"),
        ("muon_adjust_lr", "rms", r"optim.muon_adjust_lr='rms' is not one of \('original', 'match_rms_adamw', 'spectral_unclamped'\)"),
    ],
)
def test_bad_optim_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        OptimConfig(**{field: value})


def test_muon_without_transformer_blocks_is_refused():
    with pytest.raises(ValueError, match=r"optim.optimizer='muon' found no weight matrices inside transformer blocks in Linear.*'adamw'"):
        build_optimizer(nn.Linear(4, 4), OptimConfig(optimizer="muon"))


def test_muon_refuses_sharded_weights(tmp_path):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path / 'pg'}")
    try:
        model = gpt()
        for block in model.decoder.blocks:
            fully_shard(block, mesh=init_device_mesh("cpu", (1,)))
        with pytest.raises(ValueError, match=r"optim.optimizer='muon' with sharded weights \(FSDP\).*optim.optimizer='adamw'"):
            build_optimizer(model, OptimConfig(optimizer="muon"))
        assert isinstance(build_optimizer(model, OptimConfig()), torch.optim.AdamW)
    finally:
        dist.destroy_process_group()


def test_muon_ns_steps_reach_torch_and_bad_values_are_named():
    opt = build_optimizer(gpt(), OptimConfig(optimizer="muon", muon_ns_steps=3))
    assert opt.muon.param_groups[0]["ns_steps"] == 3
    for bad in (0, 100, 2.5, True):
        with pytest.raises(ValueError, match=rf"optim.muon_ns_steps must be an integer in \[1, 99\].*got {bad!r}"):
            OptimConfig(muon_ns_steps=bad)
