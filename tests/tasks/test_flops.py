"""Training FLOPs counted by PyTorch's FlopCounterMode (``tzoo.tasks.flops``), against the written-out
formulas they replace, and the promises around them: counted once on a slice, scaled to the batch;
a counting pass changes nothing in the training; a counting failure warns once and the fit goes on.

Where the counter and a formula differ, the difference is exact and explained (CPU, fused SDPA):
- the fused attention's backward counts 5 products to the forward's 2 (it recomputes the scores),
  so attention costs 14·L·N²·D per sequence, not the 12 of ``backward = 2 x forward``;
- 6N counts 6 FLOPs per token for every parameter, also for biases, norms and embedding tables,
  which do no matrix product (the LM's tied head is a real product and is counted);
- an input that needs no gradient (pixels) costs no input-gradient product: the patch projection
  is 2x its forward, not 3x;
- the ViT's class-token shortcut skips most of the last layer, which its formula does not know.
"""

import json
import warnings
from collections import namedtuple

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from tzoo.core import TransformerConfig
from tzoo.tasks import flops
from tzoo.tasks.base import TaskModule
from tzoo.tasks.flops import slice_batch, training_step_flops
from tzoo.tasks.run_card import CARD_JSON, RunCard


def tiny(**kw):
    return TransformerConfig(dim=32, depth=2, num_heads=4, **kw)


def matrix_params(module, prefix):
    return sum(p.numel() for name, p in module.named_parameters() if p.dim() >= 2 and name.startswith(prefix))


def test_lm_counted_flops_match_the_palm_formula():
    from tzoo.tasks.lm.model import GPTConfig
    from tzoo.tasks.lm.module import LanguageModel

    T, L, D = 32, 2, 32
    lm = LanguageModel(GPTConfig(vocab_size=65, block_size=T, transformer=tiny()))
    x = torch.randint(0, 65, (2, T))
    counted = training_step_flops(lm, (x, x), items=2) / x.numel()  # per token
    palm = 6 * lm.model.num_params() + 12 * L * D * T  # PaLM appendix B, the LM's former hand-written count
    blocks_and_head = matrix_params(lm.model, "decoder") + 65 * D  # the tied head: a (T, D) x (D, V) product
    assert counted == 6 * blocks_and_head + 14 * L * D * T  # exact: the differences named in the module docstring
    assert counted == pytest.approx(palm, rel=0.02)


def test_vision_counted_flops_match_flops_per_image():
    from tzoo.tasks.vision.model import ViTConfig
    from tzoo.tasks.vision.module import VisionClassifier

    images, labels = torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,))
    L, D, n = 2, 32, 16  # 4x4 patches of 4x4 pixels; mean pooling: no class node, every layer runs every node
    vit = VisionClassifier(ViTConfig(num_classes=10, image_size=16, in_channels=1, patch_size=4, pool="mean", transformer=tiny()))
    counted = training_step_flops(vit, (images, labels), items=4) / 4  # per image
    formula = vit.model.flops_per_image(16)
    patch_forward = 2 * n * D * 16
    assert counted == formula + 2 * L * n * n * D - patch_forward  # attention 14 vs 12; no gradient for the pixels
    assert counted == pytest.approx(formula, rel=0.02)
    shortcut = VisionClassifier(ViTConfig(num_classes=10, image_size=16, in_channels=1, patch_size=4, transformer=tiny()))
    counted = training_step_flops(shortcut, (images, labels), items=4) / 4
    assert 0.5 < counted / shortcut.model.flops_per_image(16) < 0.7  # the last layer runs the class node only


def test_bert_counted_flops_match_the_6n_formula():
    from tzoo.tasks.bert.model import BertConfig
    from tzoo.tasks.bert.module import TextEncoder

    T, L, D, K = 32, 2, 32, 3
    bert = TextEncoder(BertConfig(vocab_size=50, num_classes=K, max_len=T, transformer=tiny()))
    ids, real, labels = torch.randint(5, 50, (4, T)), torch.ones(4, T, dtype=torch.bool), torch.randint(0, K, (4,))
    counted = training_step_flops(bert, (ids, real, labels), items=4) / ids.numel()
    formula = 6 * bert.model.num_params() + 12 * L * D * T  # the module's former count
    assert counted == 6 * matrix_params(bert.model, "encoder") + 14 * L * D * T + 6 * K * D / T  # classifier: one node a sequence
    assert counted == pytest.approx(formula, rel=0.08)  # 6N also counts the token table (a lookup), biases and norms


def test_a_slice_of_the_batch_scaled_up_counts_the_whole_batch():
    from tzoo.tasks.lm.model import GPTConfig
    from tzoo.tasks.lm.module import LanguageModel

    lm = LanguageModel(GPTConfig(vocab_size=65, block_size=16, transformer=tiny()))
    x = torch.randint(0, 65, (8, 16))
    assert training_step_flops(lm, (x, x), items=2) == training_step_flops(lm, (x, x), items=8)


def test_autocast_counts_the_same_products():
    from tzoo.tasks.lm.model import GPTConfig
    from tzoo.tasks.lm.module import LanguageModel

    lm = LanguageModel(GPTConfig(vocab_size=65, block_size=16, transformer=tiny()))
    x = torch.randint(0, 65, (2, 16))
    bf16 = training_step_flops(lm, (x, x), context=torch.autocast("cpu", dtype=torch.bfloat16))
    assert bf16 == training_step_flops(lm, (x, x))


def test_slice_batch_cuts_batch_tensors_only():
    Pair = namedtuple("Pair", "a b")
    batch = {"x": torch.zeros(5, 3), "pair": Pair(torch.zeros(5), torch.zeros(7)), "items": [torch.zeros(5, 2)], "n": 3}
    cut, size = slice_batch(batch, 2)
    assert size == 5 and cut["x"].shape == (2, 3) and cut["items"][0].shape == (2, 2) and cut["n"] == 3
    assert isinstance(cut["pair"], Pair) and cut["pair"].a.shape == (2,) and cut["pair"].b.shape == (7,)
    with pytest.raises(ValueError, match="no tensor with a batch dimension"):
        slice_batch({"n": 3}, 2)


class Toy(TaskModule):
    task_name = "toy"

    def __init__(self):
        super().__init__(optim={"lr": 1e-2, "warmup_steps": 1})
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 2))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def count_nodes(self, batch):
        return len(batch[0])


def fit_toy(root):
    torch.manual_seed(0)
    x = torch.randn(32, 4)
    loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)
    toy = Toy()
    trainer = pl.Trainer(max_steps=3, logger=CSVLogger(root, name="toy", version=0), callbacks=[RunCard(peak_flops=1e12)],
                         log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, accelerator="cpu")  # fmt: skip
    trainer.fit(toy, loader)
    return toy, json.loads((root / "toy" / "version_0" / CARD_JSON).read_text())


def test_counting_changes_nothing_in_the_training(tmp_path, monkeypatch):
    counted, card = fit_toy(tmp_path / "a")
    # per example: 2 FLOPs per weight forward, 4 backward (input and weight gradients), less the
    # first layer's input gradient (the data needs none)
    assert card["flops_per_node"] == 2 * (4 * 16 + 16 * 2) + 4 * (4 * 16 + 16 * 2) - 2 * 4 * 16 and card["mfu"] > 0
    rows = (tmp_path / "a" / "toy" / "version_0" / "metrics.csv").read_text().splitlines()
    mfu = rows[0].split(",").index("train/mfu")
    assert [float(row.split(",")[mfu]) > 0 for row in rows[1:] if row.split(",")[mfu]] == [True] * 3  # logged each step
    monkeypatch.setattr(flops, "count_training_flops", lambda *args: None)
    plain, card = fit_toy(tmp_path / "b")
    assert card["flops_per_node"] is None and card["mfu"] is None
    for (name, a), b in zip(counted.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name  # same dropout draws, same gradients, same weights


def test_a_counting_failure_warns_once_and_the_fit_goes_on(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no formula for this op\nsecond line")

    monkeypatch.setattr(flops, "training_step_flops", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        toy, card = fit_toy(tmp_path)
    mfu = [str(w.message) for w in caught if "MFU" in str(w.message)]
    assert mfu == ["MFU is not reported for this fit: the training step's FLOPs could not be counted (RuntimeError: no formula for this op)"]
    assert card["steps"] == 3 and card["status"] == "finished" and card["mfu"] is None
