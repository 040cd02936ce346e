"""Training FLOPs counted by PyTorch, for the model FLOPs utilization (MFU) of every task.

Rather than a formula per task (which drifts from the model as options are added: windows, memory
nodes, GQA, a class-token shortcut, patch dropout ...), the run card (``tzoo.tasks.run_card.RunCard``,
which every ``tzoo fit`` has) counts the FLOPs of one training step once, on the first training
batch of a fit: a forward and backward of the module's own ``training_step`` under
``torch.utils.flop_counter.FlopCounterMode``, on the batch's first ``items`` examples, scaled to the
whole batch. Divided by the batch's nodes (``count_nodes``) it is the FLOPs per node that the run
card's MFU and the logged ``train/mfu`` use. With varying lengths (speech, text) the first batch's
ratio of padded to real nodes stands for the run's.

What is counted: matrix products (mm, addmm, bmm, baddbmm, convolutions; 2·m·n·k each) and fused
attention (SDPA, including the CPU kernel PyTorch's table lacks; its backward counts 5 products
against the forward's 2, as the scores are recomputed). Elementwise work (norms, softmax,
activations, the loss, the optimizer) is not, as in the usual 6N formulas; a causal or windowed
mask does not shrink a fused attention's count (PaLM's 12·L·D·T counts the full square too); an
input that needs no gradient (token ids, pixels) costs no input-gradient product.

Counting changes nothing in the training: logging is off, the RNG state is forked, and gradients
come from ``torch.autograd.grad`` (no parameter's ``.grad`` is touched). A failure warns once and
leaves MFU off; it never stops a fit.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_training_flops", "slice_batch", "training_step_flops"]

#: examples of the first batch the step is counted on (the count is scaled to the whole batch)
COUNT_ITEMS = 2


def _sdpa_forward(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _sdpa_backward(grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


def _extra_formulas() -> dict[Any, Any]:
    """SDPA's CPU kernels, which PyTorch's FLOP table does not list (their CUDA twins it does)."""
    aten = torch.ops.aten
    pairs = (("_scaled_dot_product_flash_attention_for_cpu", _sdpa_forward),
             ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_backward))  # fmt: skip
    return {getattr(aten, name): fn for name, fn in pairs if hasattr(aten, name)}


def slice_batch(batch: Any, items: int) -> tuple[Any, int]:
    """(the first ``items`` examples of ``batch``, the batch size): every tensor whose first dimension
    is the batch size (that of the first tensor found) is cut along it, through tuples, lists, named
    tuples and dicts; anything else is kept as it is."""
    size = _batch_size(batch)
    if size is None:
        raise ValueError(f"no tensor with a batch dimension in the training batch ({type(batch).__name__})")

    def cut(value: Any) -> Any:
        if isinstance(value, Tensor):
            return value[:items] if value.dim() >= 1 and value.shape[0] == size else value
        if isinstance(value, dict):
            return type(value)((k, cut(v)) for k, v in value.items())
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            return type(value)(*(cut(v) for v in value))
        if isinstance(value, (list, tuple)):
            return type(value)(cut(v) for v in value)
        return value

    return cut(batch), size


def _batch_size(batch: Any) -> int | None:
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.dim() >= 1 else None
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        size = _batch_size(value)
        if size is not None:
            return size
    return None


@contextlib.contextmanager
def _quiet(module: nn.Module) -> Iterator[None]:
    """The module's logging calls do nothing (the counted step is not a step of the run)."""
    names = [n for n in ("log", "log_dict", "log_train_metrics") if hasattr(module, n) and n not in module.__dict__]
    for name in names:
        setattr(module, name, lambda *args, **kwargs: None)
    try:
        yield
    finally:
        for name in names:
            delattr(module, name)


def _eager() -> contextlib.AbstractContextManager[Any]:
    """A compiled model runs eagerly while counted (the counter sees each op; no compilation)."""
    stance = getattr(torch.compiler, "set_stance", None)
    return stance("force_eager") if stance is not None else contextlib.nullcontext()


def training_step_flops(module: Any, batch: Any, *, items: int = COUNT_ITEMS, context: Any = None) -> float:
    """FLOPs of one training step on ``batch`` (forward + backward of ``module.training_step``'s
    loss), counted on its first ``items`` examples and scaled by batch size / ``items``. ``context``:
    a context manager the step runs in (the trainer's precision: autocast picks the same kernels)."""
    sliced, size = slice_batch(batch, items)
    taken = min(items, size)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with _quiet(module), _eager(), torch.random.fork_rng(devices=rng_devices), \
            FlopCounterMode(display=False, custom_mapping=_extra_formulas()) as counter:  # fmt: skip
        with context if context is not None else contextlib.nullcontext():
            out = module.training_step(sliced, 0)
        loss = out.get("loss") if isinstance(out, dict) else out
        if not isinstance(loss, Tensor):
            raise ValueError(f"training_step returned {type(out).__name__}, not a loss tensor")
        params = [p for p in module.parameters() if p.requires_grad]
        if loss.requires_grad and params:
            torch.autograd.grad(loss, params, allow_unused=True)
    return counter.get_total_flops() * size / taken


def count_training_flops(trainer: Any, module: Any, batch: Any) -> float | None:
    """Training FLOPs per node of ``module`` (its ``count_nodes``) from the first training batch of a
    fit, or None: nothing reports it (no logger, a ``fast_dev_run``, no node count), the step cannot
    be run apart (manual optimization, sharded weights: a warning says so) or counting failed (a
    warning says why; training goes on)."""
    if trainer.fast_dev_run or not trainer.loggers:
        return None
    reason = None
    if not getattr(module, "automatic_optimization", True):
        reason = "the module optimizes manually (its training_step steps the optimizer itself)"
    elif getattr(module, "device_mesh", None) is not None or any(k in type(trainer.strategy).__name__.lower() for k in ("fsdp", "deepspeed")):
        reason = f"weights sharded by {type(trainer.strategy).__name__} (one rank cannot run the step alone)"
    try:
        if reason is None:
            count_nodes = getattr(module, "count_nodes", None)
            nodes = count_nodes(batch) if callable(count_nodes) else None
            if not nodes:  # a task that counts no nodes has no nodes/s, hence no MFU: nothing to warn about
                return None
            return training_step_flops(module, batch, context=trainer.precision_plugin.train_step_context()) / float(nodes)
    except Exception as exc:  # noqa: BLE001 - MFU is a report; it never stops a fit
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    warnings.warn(f"MFU is not reported for this fit: the training step's FLOPs could not be counted ({reason})", stacklevel=2)
    return None
