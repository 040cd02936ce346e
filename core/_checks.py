"""Up-front checks of what users hand the core's public forwards and constructors.

A wrong shape or dtype would otherwise fail deep inside torch (``mat1 and mat2 shapes cannot be
multiplied``) or, worse, broadcast into a wrong result. The forward checks run on the hot path:
shape and dtype inspections only, never anything that reads tensor values (no device syncs).

Shape legend: B batch, N nodes, M key/context nodes.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

__all__ = ["check_nodes", "check_padding_mask", "is_whole", "is_finite_real"]


def check_nodes(x: object, name: str, width: int, owner: str, *, nodes: str = "N") -> None:
    """Raise unless ``x`` is a floating (B, nodes, width) tensor.

    ``owner`` names the width in the message "... but {owner}={width}", e.g. "this Encoder's width
    is dim" (a constant string: nothing is formatted unless the check fails).
    """
    if isinstance(x, Tensor) and x.dim() == 3 and x.shape[-1] == width and x.is_floating_point():
        return  # the hot path: a few attribute reads
    expected = f"(B, {nodes}, {width})"
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor of shape {expected}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating tensor, got {x.dtype} (expected node embeddings {expected}; "
            f"token ids or other integers must go through an embedding first)"
        )
    hint = f" (for a single sequence add the batch axis: {name}[None])" if x.dim() == 2 and x.shape[-1] == width else ""
    raise ValueError(f"{name} has shape {tuple(x.shape)} but {owner}={width}: expected {expected}{hint}")


def check_padding_mask(mask: object, name: str, B: int, M: int, *, what: str = "M") -> None:
    """Raise unless ``mask`` is a bool (B, M) tensor (True = real node)."""
    if isinstance(mask, Tensor) and mask.dtype == torch.bool and mask.dim() == 2 and mask.shape[0] == B and mask.shape[1] == M:
        return
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a bool tensor of shape (B, {what}) = ({B}, {M}), got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(
            f"{name} must be a bool tensor of shape (B, {what}) = ({B}, {M}) (True = real node), got {mask.dtype} "
            f"(convert a 0/1 mask with .bool())"
        )
    raise ValueError(
        f"{name} must be a bool tensor of shape (B, {what}) = ({B}, {M}) (True = real node), "
        f"got shape {tuple(mask.shape)}"
    )


def is_whole(value: object) -> bool:
    """An integer (not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_finite_real(value: object) -> bool:
    """A finite int or float (not a bool, not NaN or infinite)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
