"""Precision and compile on CPU: `bf16-mixed` trains every task's tiny config; the LM's opt-in
`torch.compile` trains and writes the plain model's state-dict keys; attention masks take the
form SDPA's fused kernels accept."""

import copy
import pickle
from pathlib import Path

import pytest
import torch

from tzoo.tasks.cli import main
from tzoo.tasks.reliability import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CORPUS = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n\n" * 30
LM = ["--model.init_args.net.transformer.dim=32", "--model.init_args.net.transformer.depth=1", "--model.init_args.net.transformer.num_heads=2",
      "--model.init_args.sample_tokens=4", "--model.init_args.sample_prompt=To be", "--data.init_args.block_size=16", "--model.init_args.net.block_size=16",
      "--data.init_args.batch_size=4", "--data.init_args.val_batches=1"]  # fmt: skip


def _fit(tmp_path: Path, config: str, *extra: str) -> dict:
    root = tmp_path / "runs"
    # the run card's peak-FLOP/s probe (a 2048^2 matmul in the run's dtype) takes minutes in bf16 on a CPU
    card = ["--trainer.callbacks+=tzoo.tasks.run_card.RunCard", "--trainer.callbacks.peak_flops=1e11"]
    main(["fit", "--config", str(ROOT / "configs" / config), *extra, *card, "--trainer.max_steps=3",
          "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={root}"])  # fmt: skip
    (last,) = root.rglob("last.ckpt")
    return read_checkpoint(last)


def _lm(tmp_path: Path) -> list[str]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    return [*LM, f"--data.init_args.corpus={corpus}"]


@pytest.mark.parametrize("task", ["lm", "vision"])
def test_bf16_mixed_trains_on_cpu(tmp_path, monkeypatch, task):
    monkeypatch.setenv("TZOO_CACHE", str(tmp_path / "cache"))
    if task == "lm":
        checkpoint = _fit(tmp_path, "lm/shakespeare_char.yaml", *_lm(tmp_path), "--trainer.precision=bf16-mixed")
    else:
        checkpoint = _fit(tmp_path, "vision/digits.yaml", "--model.init_args.net.transformer.dim=16", "--model.init_args.net.transformer.depth=1",
                          "--model.init_args.attention_images=0", f"--data.init_args.data_dir={tmp_path}",
                          "--trainer.precision=bf16-mixed")  # fmt: skip
    weights = checkpoint["state_dict"]
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())  # fp32 master weights
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


@pytest.mark.slow
def test_compiled_lm_trains_and_saves_plain_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("TZOO_CACHE", str(tmp_path / "cache"))
    torch._dynamo.reset()
    compiled = []
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, *args, **kwargs: compiled.append(fn) or compile_(fn, *args, **kwargs))
    checkpoint = _fit(tmp_path, "lm/shakespeare_char.yaml", *_lm(tmp_path), "--model.init_args.compile=true")
    assert [fn.__name__ for fn in compiled] == ["_logits_loss"]  # the fit compiled the forward and loss, once
    assert not any("_orig_mod" in key for key in checkpoint["state_dict"])  # loads into an uncompiled model
    assert all(torch.isfinite(w).all() for w in checkpoint["state_dict"].values())


def test_vision_compile_option_compiles_the_model_in_place_for_fit_only():
    import lightning.pytorch as pl
    from lightning.pytorch.trainer.states import TrainerFn

    from tzoo.core import TransformerConfig
    from tzoo.tasks.vision.model import ViTConfig
    from tzoo.tasks.vision.module import VisionClassifier

    net = ViTConfig(10, 8, 1, patch_size=4, transformer=TransformerConfig(dim=16, depth=1, num_heads=2))
    plain = VisionClassifier(net)
    module = VisionClassifier(net, compile=True)
    module.trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    module.trainer.state.fn = TrainerFn.VALIDATING
    module.configure_model()  # the hook Lightning calls (TaskModule's: tasks do not override it)
    assert module.model._compiled_call_impl is None  # only training compiles
    module.trainer.state.fn = TrainerFn.FITTING
    module.configure_model()
    assert module.model._compiled_call_impl is not None
    assert list(module.state_dict()) == list(plain.state_dict())  # checkpoints keep the plain keys


def test_masks_reach_sdpa_as_booleans_or_as_its_causal_flag(monkeypatch):
    """The core hands SDPA either ``is_causal=True`` without a mask (the flash kernel's form) or a
    boolean mask; never a float mask built per call."""
    from tzoo.core import TransformerConfig
    from tzoo.tasks.lm.model import GPT, GPTConfig

    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        calls.append((None if attn_mask is None else attn_mask.dtype, is_causal))
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    GPT(GPTConfig(20, block_size=16, transformer=TransformerConfig(dim=16, depth=1, num_heads=2)))(torch.zeros(2, 16, dtype=torch.long))
    assert calls and all(dtype in (None, torch.bool) for dtype, _ in calls)
    assert all(causal for dtype, causal in calls if dtype is None)


def test_lm_compile_option_compiles_forward_and_loss_as_one_graph_for_fit_only(monkeypatch):
    import lightning.pytorch as pl
    from lightning.pytorch.trainer.states import TrainerFn

    from tzoo.core import TransformerConfig
    from tzoo.tasks.lm.model import GPTConfig
    from tzoo.tasks.lm.module import LanguageModel

    graphs = []

    def record(graph, inputs):  # a dynamo backend that keeps the captured graph and runs it as traced
        graphs.append(graph)
        return graph.forward

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, *args, **kwargs: compile_(fn, backend=record))
    torch._dynamo.reset()
    net = GPTConfig(vocab_size=11, block_size=8, transformer=TransformerConfig(dim=16, depth=1, num_heads=2))
    plain = LanguageModel(net)
    module = LanguageModel(net, compile=True)
    module.trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    module.trainer.state.fn = TrainerFn.VALIDATING
    module.configure_model()
    assert module._loss_graph is None  # only training compiles
    module.trainer.state.fn = TrainerFn.FITTING
    module.configure_model()
    assert module._loss_graph is not None and module.model._compiled_call_impl is None  # the loss's graph, not the model alone
    batch = (torch.randint(0, 11, (2, 8)), torch.randint(0, 11, (2, 8)))
    loss = module._loss(batch)
    assert len(graphs) == 1, f"the training loss ran as {len(graphs)} graphs (a graph break), not one"
    ops = {str(node.target) for node in graphs[0].graph.nodes}
    assert any("cross_entropy" in op for op in ops) and any("linear" in op for op in ops), ops  # forward and loss in one graph
    torch.testing.assert_close(loss, module._logits_loss(*batch), rtol=0, atol=1e-6)
    assert list(module.state_dict()) == list(plain.state_dict())  # checkpoints keep the plain keys
    # a copy (weight averaging deep-copies the module; DDP spawn pickles it) starts uncompiled: the
    # compiled graph would run the original's weights
    for copy_ in (copy.deepcopy(module), pickle.loads(pickle.dumps(module))):
        assert copy_._loss_graph is None and copy_._compiled is False
        with torch.no_grad():
            for weight in copy_.model.parameters():
                weight.add_(torch.randn_like(weight))
        assert (copy_._loss(batch) - module._loss(batch)).abs() > 1e-3  # the copy's loss uses the copy's weights
    torch._dynamo.reset()  # the record backend's cache ends with this test
