"""The optimizers ``OptimConfig`` names: AdamW, or Muon for the transformer blocks' weight
matrices with AdamW for every other parameter, as one ``torch.optim.Optimizer`` (Lightning's
automatic optimization steps one optimizer, and a checkpoint then holds both states).

Muon (Jordan et al. 2024, ``torch.optim.Muon``) replaces each 2-D update by the nearest
semi-orthogonal matrix (Newton-Schulz iterations on the Nesterov momentum): every singular value of
the update is about 1, times the learning rate and torch's shape rule (``adjust_lr_fn``:
``original`` multiplies by sqrt(max(1, rows / cols))). It is meant for hidden-layer matrices only,
so embeddings, output heads, norms, biases and other non-matrix parameters stay with AdamW.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from tzoo.core.blocks import TransformerBlock
from tzoo.tasks.config import OptimConfig

__all__ = ["MuonWithAdamW", "build_optimizer", "muon_parameters"]


def muon_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable 2-D weight matrices inside the model's transformer blocks (attention and
    feed-forward projections), each once."""
    seen: set[int] = set()
    found = []
    for block in model.modules():
        if isinstance(block, TransformerBlock):
            for p in block.parameters():
                if p.requires_grad and p.dim() == 2 and id(p) not in seen:
                    seen.add(id(p))
                    found.append(p)
    return found


class MuonWithAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` over ``muon_groups`` and ``torch.optim.AdamW`` over ``adamw_groups``,
    stepped together. Its ``param_groups`` are the two optimizers' groups (Muon's first), so an LR
    scheduler scales both; its ``state`` is theirs, so ``state_dict`` / ``load_state_dict`` save and
    restore both."""

    def __init__(
        self, muon_groups: list[dict[str, Any]], adamw_groups: list[dict[str, Any]], *, muon: dict[str, Any], adamw: dict[str, Any]
    ) -> None:
        self.muon = torch.optim.Muon(muon_groups, **muon)
        self.adamw = torch.optim.AdamW(adamw_groups, **adamw)
        self._muon_groups = len(self.muon.param_groups)
        super().__init__([*self.muon.param_groups, *self.adamw.param_groups], {})
        self._share()

    def _share(self) -> None:
        """Point both optimizers at this one's groups and state (after building and after loading)."""
        n = self._muon_groups
        self.muon.param_groups, self.adamw.param_groups = self.param_groups[:n], self.param_groups[n:]
        self.muon.state = self.adamw.state = self.state  # the parameters are disjoint: one dict serves both

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._share()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss


def build_optimizer(model: nn.Module, optim: OptimConfig, *, fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer ``optim`` names, over ``model``'s trainable parameters. AdamW decays the
    matrices it holds (2-D and up: embeddings, heads) by ``weight_decay`` and nothing else."""
    muon = muon_parameters(model) if optim.optimizer == "muon" else []
    if optim.optimizer == "muon" and not muon:
        raise ValueError(
            f"optim.optimizer='muon' found no weight matrices inside transformer blocks in {type(model).__name__} "
            f"(Muon updates the blocks' 2-D weights): use optim.optimizer='adamw'"
        )
    if any(isinstance(p, DTensor) for p in muon):
        raise ValueError(
            "optim.optimizer='muon' with sharded weights (FSDP): Muon orthogonalises whole matrices and a shard is only "
            "part of one; use optim.optimizer='adamw' with FSDP, or a strategy that keeps whole weights (ddp)"
        )
    taken = {id(p) for p in muon}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad and id(p) not in taken:
            (decay if p.dim() >= 2 else no_decay).append(p)
    adamw_groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    adamw = dict(lr=optim.lr, betas=optim.betas, fused=fused)
    if optim.optimizer == "adamw":
        return torch.optim.AdamW(adamw_groups, **adamw)
    muon_settings = dict(
        lr=optim.muon_lr,
        momentum=optim.muon_momentum,
        weight_decay=optim.muon_weight_decay,
        nesterov=True,
        adjust_lr_fn=optim.muon_adjust_lr,
        ns_steps=optim.muon_ns_steps,
    )
    return MuonWithAdamW([{"params": muon}], adamw_groups, muon=muon_settings, adamw=adamw)
