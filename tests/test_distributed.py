"""Scale-out on Lightning's engines, as subprocesses (DDP inside pytest would relaunch pytest):
`tzoo fit --trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu` for the LM and
the ViT, and FSDP2 through `ModelParallelStrategy` for the LM, each against a single process
training on the same global batch."""

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tzoo.tasks.loading import load_module
from tzoo.tasks.reliability import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 40
DDP = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
FSDP2 = [
    "--trainer.strategy=lightning.pytorch.strategies.ModelParallelStrategy",
    "--trainer.strategy.save_distributed_checkpoint=false",
    # "auto" would make the 2 devices a tensor-parallel pair (data parallel = nodes)
    "--trainer.strategy.data_parallel_size=2", "--trainer.strategy.tensor_parallel_size=1",
    "--trainer.devices=2", "--trainer.accelerator=cpu",
]  # fmt: skip


def _fit(root: Path, args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TZOO_CACHE": str(root / "cache")}
    cmd = [sys.executable, "-m", "tzoo.tasks.cli", "fit", *args, f"--trainer.default_root_dir={root}",
           "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _result(proc: subprocess.Popen, root: Path, task: str) -> tuple[float, Path]:
    """(the last val/loss the run logged, its last checkpoint)."""
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-4000:]
    run = root / task / "version_0"
    rows = [r for r in csv.DictReader(open(run / "metrics.csv")) if r.get("val/loss")]
    return float(rows[-1]["val/loss"]), run / "checkpoints" / "last.ckpt"


def _lm_loss(checkpoint: Path) -> float:
    """The trained LM's loss on fixed token windows (the same for every run compared)."""
    module = load_module(checkpoint)
    tokens = torch.randint(0, module.model.vocab_size, (16, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return module._loss((tokens[:, :-1], tokens[:, 1:])).item()


def _lm_args(tmp_path: Path, batch_size: int) -> list[str]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    config = tmp_path / f"lm{batch_size}.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            seed_everything: 3
            trainer:
              max_steps: 8
              limit_val_batches: 4
              log_every_n_steps: 1
            model:
              class_path: tzoo.tasks.lm.module.LanguageModel
              init_args: {{sample_tokens: 0, net: {{block_size: 16, transformer: {{dim: 32, depth: 2, num_heads: 2}}}}, optim: {{warmup_steps: 2, lr: 3.0e-3}}}}
            data:
              class_path: tzoo.tasks.lm.data.TextDataModule
              init_args: {{corpus: {corpus}, block_size: 16, batch_size: {batch_size}, train_batches: 8, val_batches: 4}}
            """
        )
    )
    return ["--config", str(config)]


@pytest.fixture(scope="module")
def lm_single(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    return _result(_fit(root, _lm_args(root, batch_size=8)), root, "lm")[1]


def _same_model(a: Path, b: Path, atol: float) -> None:
    """Same loss on the same windows, and the same weights."""
    assert _lm_loss(a) == pytest.approx(_lm_loss(b), abs=atol)
    a, b = read_checkpoint(a)["state_dict"], read_checkpoint(b)["state_dict"]
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name].float(), b[name].float(), rtol=0, atol=atol, msg=f"{name} differs")


@pytest.mark.slow
def test_lm_ddp_trains_like_one_process_on_the_same_global_batch(tmp_path, lm_single):
    _, checkpoint = _result(_fit(tmp_path, [*_lm_args(tmp_path, batch_size=4), *DDP]), tmp_path, "lm")
    _same_model(checkpoint, lm_single, atol=1e-4)  # 2 ranks x 4 windows = the single run's 8


@pytest.mark.slow
def test_lm_fsdp2_through_model_parallel_strategy(tmp_path, lm_single):
    _, checkpoint = _result(_fit(tmp_path, [*_lm_args(tmp_path, batch_size=4), *FSDP2]), tmp_path, "lm")
    _same_model(checkpoint, lm_single, atol=1e-4)  # the shards gathered into a full state dict on save


def _vit_args(tmp_path: Path, batch_size: int) -> list[str]:
    return [
        "--config", str(ROOT / "configs/vision/digits.yaml"), f"--data.init_args.data_dir={tmp_path}",
        "--model.init_args.net.transformer.dim=16", "--model.init_args.net.transformer.depth=1", "--model.init_args.net.transformer.num_heads=2",
        "--model.init_args.attention_images=0", "--model.init_args.net.transformer.drop_path=0", "--model.init_args.optim.warmup_steps=2",
        "--data.init_args.crop_padding=0", f"--data.init_args.batch_size={batch_size}",
        "--trainer.max_steps=12", "--trainer.check_val_every_n_epoch=1", "--trainer.limit_val_batches=2",
        "--trainer.log_every_n_steps=1",
    ]  # fmt: skip


@pytest.mark.slow
def test_vit_ddp_matches_one_process_within_tolerance(tmp_path):
    single_root, ddp_root = tmp_path / "single", tmp_path / "ddp"
    single = _fit(single_root, _vit_args(single_root, batch_size=128))
    ddp = _fit(ddp_root, [*_vit_args(ddp_root, batch_size=64), *DDP])
    (single_loss, _), (ddp_loss, _) = _result(single, single_root, "vision"), _result(ddp, ddp_root, "vision")
    # the same model and global batch size; DDP's distributed sampler deals another image order
    # than the single process's shuffle, so the losses agree to the noise of that order
    assert ddp_loss == pytest.approx(single_loss, rel=0.05)
