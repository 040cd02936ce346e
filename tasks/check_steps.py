"""The checks ``tzoo check`` runs (what each one does: ``tzoo.tasks.check``, the command's light
entry point). This module imports Lightning, torch and the core; ``tzoo check --help`` does not."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from tzoo.core import Decoder, MultiHeadAttention
from tzoo.core.banded import keys_per_block
from tzoo.core.linear_attention import CHUNK
from tzoo.tasks.cli import TzooCLI, root_cause

__all__ = ["Check", "CheckConfigError", "build", "check_decoder_cache", "check_decoder_causality", "check_length", "run_checks"]

TINY_BATCH = 2
_ATOL = 1e-4  # fp32 incremental vs full attention differ by rounding only (~1e-6); a bug is O(1)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


class CheckConfigError(ValueError):
    """The configuration does not build (an invalid value or a conflicting pair of options)."""


class _BuildOnly(TzooCLI):
    """The ``tzoo`` CLI's parsing, links and instantiation, without a trainer."""

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        return None


def build(args: list[str]) -> tuple[pl.LightningModule, pl.LightningDataModule | None, dict[str, Any]]:
    """(model, datamodule, trainer config) from ``--config FILE [overrides]``, as ``tzoo fit`` builds them."""
    try:
        cli = _BuildOnly(args=args, run=False)
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckConfigError(root_cause(exc)) from exc
    trainer = cli.config.get("trainer")
    return cli.model, cli.datamodule, dict(trainer) if trainer is not None else {}


# --- decoder checks -----------------------------------------------------------------------------


def _decoder_inputs(decoder: Decoder, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
    block = decoder.blocks[0]
    device = next(decoder.parameters()).device
    dim = decoder.config.dim
    x = torch.randn(2, n, dim, generator=generator).to(device)  # (B, N, D)
    cross = getattr(block, "cross_attn", None)
    if cross is None:
        return x, None
    context_dim = cross.kv_proj.in_features if cross.kv_proj is not None else dim
    return x, torch.randn(2, 5, context_dim, generator=generator).to(device)  # (B, M, Dc)


def check_length(decoder: Decoder) -> int:
    """Nodes the decoder checks run on: 10, or for a windowed / linear decoder two banded blocks /
    linear-attention chunks and a few more (so the long-input paths and the rolling cache are used)."""
    cfg = decoder.config
    if cfg.window is None and cfg.attention != "linear":
        return 10
    if cfg.window is None:
        return 2 * CHUNK + 3
    return 2 * keys_per_block(cfg.window, causal=True) + 3


def _describe(decoder: Decoder) -> str:
    cfg = decoder.config
    attn = "full" if cfg.window is None else f"window {cfg.window}"
    if cfg.attention == "linear":
        attn = "linear"
    if cfg.top_k is not None:
        attn += f", top-{cfg.top_k}"
    heads = f"{cfg.num_heads} heads" + (f" / {cfg.num_kv_heads} kv heads" if cfg.num_kv_heads not in (None, cfg.num_heads) else "")
    cross = ", cross-attention" if getattr(decoder.blocks[0], "cross_attn", None) is not None else ""
    return f"attention {attn}, {heads}, position {cfg.position}, {cfg.num_memory} memory nodes{cross}"


@torch.no_grad()
def check_decoder_cache(decoder: Decoder, *, n: int | None = None, seed: int = 0) -> tuple[bool, float]:
    """Incremental decoding with the KV cache vs the full causal forward; (equal?, max |difference|).
    Two incremental schedules: one node per call, and a prefill of the first half then single nodes.
    ``n`` nodes (default ``check_length``)."""
    n = check_length(decoder) if n is None else n
    was_training = decoder.training
    decoder.eval()
    try:
        x, context = _decoder_inputs(decoder, n, torch.Generator().manual_seed(seed))
        full = decoder(x, context)  # (B, N, D)
        worst = 0.0
        for prefill in (1, n // 2):
            cache = decoder.make_cache(n)
            cross = decoder.make_cache() if context is not None else None
            outs = [decoder(x[:, :prefill], context, cache=cache, cross_cache=cross)]
            for t in range(prefill, n):
                outs.append(decoder(x[:, t : t + 1], context, cache=cache, cross_cache=cross))
            step = torch.cat(outs, dim=1)  # (B, N, D)
            worst = max(worst, (step - full).abs().max().item())
        return bool(math.isfinite(worst) and worst <= _ATOL * max(1.0, full.abs().max().item())), worst
    finally:
        decoder.train(was_training)


@torch.no_grad()
def check_decoder_causality(decoder: Decoder, *, n: int | None = None, seed: int = 0) -> tuple[bool, int | None]:
    """Changing nodes after position t must leave the outputs up to t unchanged; (causal?, first
    position whose output saw the future or None). ``n`` nodes (default ``check_length``); past 16
    nodes about 16 positions t spread over them, the last one included."""
    n = check_length(decoder) if n is None else n
    was_training = decoder.training
    decoder.eval()
    try:
        generator = torch.Generator().manual_seed(seed)
        x, context = _decoder_inputs(decoder, n, generator)
        full = decoder(x, context)
        for t in sorted({*range(0, n - 1, max(1, (n - 1) // 16)), n - 2}):
            changed = x.clone()
            changed[:, t + 1 :] = torch.randn(changed[:, t + 1 :].shape, generator=generator).to(x.device)
            if not torch.allclose(decoder(changed, context)[:, : t + 1], full[:, : t + 1], atol=_ATOL):
                return False, t
        return True, None
    finally:
        decoder.train(was_training)


# --- the whole check ----------------------------------------------------------------------------


def _tiny_batch(data: pl.LightningDataModule | None) -> int | None:
    """Shrink the data's batch to TINY_BATCH examples; return the configured size (None if unknown)."""
    size = getattr(data, "batch_size", None)
    if isinstance(size, int) and size > TINY_BATCH:
        data.batch_size = TINY_BATCH  # type: ignore[union-attr]
    return size if isinstance(size, int) else None


class _StepProbe(pl.Callback):
    """Records the training loss and which gradients exist (and are finite) just before the optimizer step."""

    def __init__(self) -> None:
        self.loss: float | None = None
        self.no_grad: list[str] = []
        self.bad_grads: list[str] = []
        self.params = 0

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        params = [(name, p) for name, p in pl_module.named_parameters() if p.requires_grad]
        self.params = len(params)
        self.no_grad = [name for name, p in params if p.grad is None]
        self.bad_grads = [name for name, p in params if p.grad is not None and not torch.isfinite(p.grad).all()]

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor):
            self.loss = float(loss.detach())


def _train_step(model: pl.LightningModule, data: pl.LightningDataModule | None, trainer_cfg: dict[str, Any]) -> tuple[Check, int]:
    """One fast_dev_run step; (the check, bytes of tensors saved for backward)."""
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        try:
            storage = t.untyped_storage()
            saved[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. some subclasses)
            pass
        return t

    probe = _StepProbe()
    trainer = pl.Trainer(
        fast_dev_run=1,
        accelerator=trainer_cfg.get("accelerator") or "auto",
        devices=1,
        precision=trainer_cfg.get("precision") or "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[probe],
    )
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trainer.fit(model, datamodule=data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
    if probe.loss is not None:
        metrics["train loss"] = probe.loss
    bad = [k for k, v in metrics.items() if not math.isfinite(v)] + probe.bad_grads
    shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())) or "no loss seen"
    if probe.loss is None or bad:
        problem = f"non-finite: {', '.join(bad)}" if bad else "the training step returned no loss"
        return Check("train step", False, f"{problem} ({shown})"), sum(saved.values())
    got = probe.params - len(probe.no_grad)
    detail = f"forward + backward + optimizer step: {shown}; {got}/{probe.params} parameter tensors got finite gradients"
    if probe.no_grad:
        more = f" (+{len(probe.no_grad) - 5} more)" if len(probe.no_grad) > 5 else ""
        detail += f"; no gradient (unused?): {', '.join(probe.no_grad[:5])}{more}"
    return Check("train step", True, detail), sum(saved.values())


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def run_checks(args: list[str]) -> tuple[pl.LightningModule, list[Check]]:
    """Build the configuration given by ``args`` and run every check on it."""
    model, data, trainer_cfg = build(args)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    cls = type(model)
    checks = [Check("config", True, f"{cls.__module__}.{cls.__qualname__} builds: {params:,} parameters ({trainable:,} trainable)")]

    # the core checks first: they need the freshly initialised weights only
    decoders = [(name, m) for name, m in model.named_modules() if isinstance(m, Decoder)]
    for name, decoder in decoders:
        ok, diff = check_decoder_cache(decoder)
        verdict = "equals" if ok else "DIFFERS FROM"
        checks.append(Check("kv cache", ok, f"{name}: incremental decoding {verdict} the full forward (max |diff| {diff:.2e}); {_describe(decoder)}"))
        causal, leak = check_decoder_causality(decoder)
        detail = "no output depends on a later node" if causal else f"the output at position {leak} changes when later nodes change"
        checks.append(Check("causality", causal, f"{name}: {detail}"))
    if not decoders:
        checks.append(Check("kv cache", True, "the model has no causal decoder: nothing decodes incrementally"))

    configured = _tiny_batch(data)
    step, saved_bytes = _train_step(model, data, trainer_cfg)
    checks.append(step)

    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    state = weights + sum(p.numel() * 4 * 3 for p in model.parameters() if p.requires_grad)  # grads + AdamW m, v (fp32)
    scale = (configured or TINY_BATCH) / TINY_BATCH
    activations = saved_bytes * scale
    at = f"batch {configured}" if configured else "the tiny batch (the data has no batch_size)"
    checks.append(Check("memory", True, f"estimated training memory at {at}: {_mib(state + activations)} = "
                                        f"weights + grads + AdamW {_mib(state)} + activations {_mib(activations)}"))
    attention = sum(isinstance(m, MultiHeadAttention) for m in model.modules())
    checks[0].detail += f", {attention} attention layers, {len(decoders)} causal decoder(s)"
    return model, checks
