"""Configuration objects shared by every task: the optimizer / schedule settings, and turning the
plain dicts a checkpoint or YAML file holds back into (nested) dataclasses with clear errors.

A task's LightningModule takes ``net`` (its model's config dataclass, which holds the core's
``TransformerConfig``), ``optim`` (``OptimConfig``) and its own task options. jsonargparse builds
the dataclasses from YAML and the command line (``--model.init_args.net.transformer.window 64``);
checkpoints store them as plain dicts (``to_dict``), so they load with ``weights_only=True``, and
``from_dict`` rebuilds them.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["OptimConfig", "config_fields", "from_dict", "signature_default", "to_dict"]

T = TypeVar("T")


OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "wsd")
BUDGETS = ("steps", "time")
MUON_ADJUST_LR = ("original", "match_rms_adamw", "spectral_unclamped")


@dataclass
class OptimConfig:
    """The optimizer and its learning-rate schedule.

    ``optimizer``: ``adamw`` (AdamW with weight decay on matrices only) or ``muon``
    (``torch.optim.Muon`` for the 2-D weight matrices inside the transformer blocks, at ``muon_lr``
    with ``muon_momentum`` (Nesterov), ``muon_weight_decay``, torch's ``muon_adjust_lr`` rule and
    ``muon_ns_steps`` Newton-Schulz iterations; AdamW with ``lr`` for everything else: embeddings,
    heads, norms, biases). Muon's orthogonalisation costs about 3·ns_steps small matrix products
    per weight matrix and step, whatever the batch: at small batches on a CPU a large share of a step.

    ``schedule``: ``cosine`` (linear warmup, then cosine decay to ``min_lr``: ``lr / 10`` when
    None) or ``wsd`` (warmup-stable-decay: linear warmup, constant, then a linear decay to
    ``min_lr`` over the last ``decay_fraction`` of the steps). Every parameter group follows the
    same multiplier of its own base rate.

    ``budget``: what the schedule runs over. ``steps``: ``trainer.max_steps`` (or the epochs' steps).
    ``time``: after the warmup, the schedule's position is the larger of the steps taken and the
    share of ``trainer.max_time`` used (as a share of those steps), so a run that the clock stops
    still ends its decay at ``min_lr`` however fast the machine is (a slower machine takes fewer
    steps, each further along the schedule). The learning rate then depends on the wall clock: a run
    is not bit-for-bit repeatable, and a resumed one goes on from the time its checkpoint records."""

    lr: float = 1e-3
    min_lr: float | None = None
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    optimizer: str = "adamw"
    muon_lr: float = 0.02
    muon_momentum: float = 0.95
    muon_weight_decay: float = 0.0
    muon_adjust_lr: str = "original"
    muon_ns_steps: int = 5
    schedule: str = "cosine"
    decay_fraction: float = 0.2
    budget: str = "steps"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"optim.lr must be a finite number > 0, got {self.lr}")
        if self.min_lr is not None and not (math.isfinite(self.min_lr) and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"optim.min_lr must be in [0, lr={self.lr}] (or None for lr / 10), got {self.min_lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"optim.weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optim.optimizer={self.optimizer!r} is not one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule={self.schedule!r} is not one of {SCHEDULES} (cosine: warmup then cosine decay; wsd: warmup-stable-decay)")
        if self.budget not in BUDGETS:
            raise ValueError(f"optim.budget={self.budget!r} is not one of {BUDGETS} (what the schedule runs over: trainer.max_steps, or trainer.max_time)")
        if self.muon_adjust_lr not in MUON_ADJUST_LR:
            raise ValueError(f"optim.muon_adjust_lr={self.muon_adjust_lr!r} is not one of {MUON_ADJUST_LR} (torch.optim.Muon's adjust_lr_fn)")
        if not (isinstance(self.decay_fraction, (int, float)) and 0 < self.decay_fraction <= 1):
            raise ValueError(f"optim.decay_fraction must be in (0, 1] (the share of the steps the wsd schedule decays over), got {self.decay_fraction}")
        if not (math.isfinite(self.muon_lr) and self.muon_lr > 0):
            raise ValueError(f"optim.muon_lr must be a finite number > 0, got {self.muon_lr}")
        if not (math.isfinite(self.muon_momentum) and 0 <= self.muon_momentum < 1):
            raise ValueError(f"optim.muon_momentum must be in [0, 1), got {self.muon_momentum}")
        if isinstance(self.muon_ns_steps, bool) or not isinstance(self.muon_ns_steps, int) or not 1 <= self.muon_ns_steps < 100:
            raise ValueError(f"optim.muon_ns_steps must be an integer in [1, 99] (Newton-Schulz iterations, 5 is usual), got {self.muon_ns_steps!r}")
        if not (math.isfinite(self.muon_weight_decay) and self.muon_weight_decay >= 0):
            raise ValueError(f"optim.muon_weight_decay must be a finite number >= 0, got {self.muon_weight_decay}")


def config_fields(cls: type) -> dict[str, Any]:
    """A dataclass's fields and their resolved types."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass a field's type names (``X`` or ``X | None``), or None."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def from_dict(cls: type[T], value: Any, *, where: str = "", base: Any = None) -> T:
    """``cls`` built from ``value``: an instance of it, or a dict of (some of) its fields, nested
    dataclasses as dicts too. The fields a dict leaves out keep the values of ``base`` (an instance,
    e.g. the argument's default) or else the class's defaults; a nested dict likewise keeps those of
    the field's default, as the CLI merges a partial YAML section. An unknown field is a ValueError
    naming it and listing the valid ones."""
    if isinstance(value, cls):
        return value
    if hasattr(value, "as_dict"):  # a jsonargparse Namespace
        value = value.as_dict()
    name = where or cls.__name__
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a {cls.__name__} or a dict of its fields, got {type(value).__name__}")
    fields = config_fields(cls)
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ValueError(f"{name} has no field {unknown[0]!r} (valid fields: {', '.join(fields)})")
    base = base if isinstance(base, cls) else None
    kwargs = {}
    for key, item in value.items():
        nested = _dataclass_in(fields[key])
        if nested is not None and isinstance(item, dict):
            default = getattr(base, key) if base is not None else _field_default(cls, key)
            item = from_dict(nested, item, where=f"{name}.{key}", base=default)
        kwargs[key] = item
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def _field_default(cls: type, name: str) -> Any:
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def signature_default(cls: type, name: str) -> Any:
    """The default of ``cls.__init__``'s parameter ``name`` (None when it has none)."""
    param = inspect.signature(cls.__init__).parameters.get(name)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def to_dict(config: Any) -> dict[str, Any]:
    """A (nested) dataclass as plain dicts, lists and scalars: what a checkpoint can hold."""
    return dataclasses.asdict(config)
