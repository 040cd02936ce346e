"""timm ViT weights in and out of the vision task's ``ViT``.

timm's ``VisionTransformer`` (``vit_tiny_patch16_224`` and its family, class-token pooling) is the
core's pre-norm encoder with exact GELU, LayerNorm eps 1e-6, biases everywhere, a convolutional
patch projection, a class token and learned positions. One difference in layout: timm's position
table has a row for the class token; tzoo adds positions to the patch nodes only, and since the
class token is the same for every image, ``cls_token + pos_embed[:, 0]`` is tzoo's class token
(the export writes that sum back with a zero row). Another image size than the table's grid is
served by the tokenizer's bicubic resizing of learned positions.

    model = load_timm_vit("vit_tiny.pth")                   # a timm state dict (.pth / .safetensors)
    model = from_timm_state(timm_model.state_dict())        # or the model's state dict in memory
    torch.save(to_timm_state(model), "out.pth")             # timm's create_model(...).load_state_dict loads it

Head counts are not stored in the weights; timm's standard ViTs use 64-wide heads, the default.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from tzoo.core import TransformerConfig
from tzoo.tasks.reliability import read_checkpoint
from tzoo.tasks.vision.model import ViT, ViTConfig

__all__ = ["from_timm_state", "load_into", "load_timm_vit", "read_timm_state", "timm_config", "to_timm_state"]

_BLOCK = {
    "attn_norm": "norm1", "attn.qkv_proj": "attn.qkv", "attn.out_proj": "attn.proj",
    "ff_norm": "norm2", "feed_forward.fc1": "mlp.fc1", "feed_forward.fc2": "mlp.fc2",
}  # fmt: skip


def timm_config(state: dict[str, Tensor], *, head_dim: int = 64, eps: float = 1e-6) -> ViTConfig:
    """The ``ViTConfig`` a timm ViT state dict describes (sizes read off the tensors)."""
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if key not in state:
            raise ValueError(f"not a timm ViT state dict with a class token: no {key!r} (found e.g. {sorted(state)[:4]})")
    dim = state["cls_token"].shape[-1]
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    patch = tuple(state["patch_embed.proj.weight"].shape[-2:])
    grid = state["pos_embed"].shape[1] - 1
    side = int(round(grid**0.5))
    if side * side != grid:
        raise ValueError(f"pos_embed holds {grid} patch positions, not a square grid: give image_size yourself")
    if dim % head_dim:
        raise ValueError(f"width {dim} is not a multiple of head_dim={head_dim}: give the model's head width")
    hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    stack = TransformerConfig(
        dim=dim, depth=depth, num_heads=dim // head_dim, mlp_ratio=hidden / dim, norm_eps=eps, bias=True, feed_forward="gelu"
    )
    classes = state["head.weight"].shape[0] if "head.weight" in state else None
    return ViTConfig(
        num_classes=classes, image_size=(side * patch[0], side * patch[1]), in_channels=state["patch_embed.proj.weight"].shape[1],
        patch_size=patch, pool="cls", position="learned", transformer=stack,
    )  # fmt: skip


def tzoo_state(state: dict[str, Tensor], depth: int) -> dict[str, Tensor]:
    """A timm ViT state dict under tzoo's ``ViT`` names (no shape checks)."""
    ours: dict[str, Tensor] = {
        "tokenizer.cls": state["cls_token"] + state["pos_embed"][:, :1],
        "tokenizer.pos": state["pos_embed"][:, 1:],
        "tokenizer.proj.weight": state["patch_embed.proj.weight"],
        "tokenizer.proj.bias": state["patch_embed.proj.bias"],
        "encoder.norm.weight": state["norm.weight"],
        "encoder.norm.bias": state["norm.bias"],
    }
    for i in range(depth):
        for name, theirs in _BLOCK.items():
            for kind in ("weight", "bias"):
                key = f"blocks.{i}.{theirs}.{kind}"
                if key not in state:
                    raise ValueError(f"the timm weights have no {key!r}: fewer blocks than net.transformer.depth={depth}?")
                ours[f"encoder.blocks.{i}.{name}.{kind}"] = state[key]
    if "head.weight" in state:
        ours["head.weight"], ours["head.bias"] = state["head.weight"], state["head.bias"]
    return ours


def load_into(model: ViT, state: dict[str, Tensor], *, source: str = "the timm weights") -> list[str]:
    """Load a timm ViT's weights into an existing ``model`` for fine-tuning: its position table is
    resized to the model's grid (as timm does), a head for another number of classes is left fresh;
    any other difference is a ValueError naming the tensor and both shapes. Returns notes on what
    was adapted."""
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if key not in state:
            raise ValueError(f"{source} is not a timm ViT state dict with a class token: no {key!r}")
    if model.cfg.position != "learned" or model.cfg.pool != "cls":
        raise ValueError(f"timm ViT weights need net.position='learned' and net.pool='cls', got {model.cfg.position!r} and {model.cfg.pool!r}")
    ours = tzoo_state(state, model.cfg.transformer.depth)
    expected = model.state_dict()
    notes = []
    tok = model.tokenizer
    theirs_grid = ours["tokenizer.pos"].shape[1]
    if tok.grid is not None and theirs_grid != tok.grid[0] * tok.grid[1] and expected["tokenizer.pos"].shape[-1] == ours["tokenizer.pos"].shape[-1]:
        side = int(round(theirs_grid**0.5))
        if side * side != theirs_grid:
            raise ValueError(
                f"{source}: the position table holds {theirs_grid} patches, not a square grid, so it cannot be resized "
                f"to this model's {tok.grid[0]}x{tok.grid[1]} patches; give net.image_size / net.patch_size of the "
                f"pretrained model's grid"
            )
        table = rearrange(ours["tokenizer.pos"], "1 (h w) d -> 1 d h w", h=side, w=side)
        table = F.interpolate(table, size=tok.grid, mode="bicubic", align_corners=False, antialias=True)
        ours["tokenizer.pos"] = rearrange(table, "1 d h w -> 1 (h w) d")
        notes.append(f"positions resized from {side}x{side} to {tok.grid[0]}x{tok.grid[1]} patches")
    if "head.weight" in ours and ours["head.weight"].shape != expected["head.weight"].shape:
        notes.append(f"head starts fresh ({ours['head.weight'].shape[0]} classes in the weights, {expected['head.weight'].shape[0]} here)")
        del ours["head.weight"], ours["head.bias"]
    for name, value in ours.items():
        if name not in expected:
            raise ValueError(f"{source}: {name} has no place in this ViT (another architecture?)")
        if expected[name].shape != value.shape:
            raise ValueError(
                f"{source}: {name} is {list(value.shape)} in the weights but {list(expected[name].shape)} in this model: "
                f"set net.transformer / net.patch_size to the pretrained model's sizes"
            )
    model.load_state_dict(ours, strict=False)
    return notes


def from_timm_state(state: dict[str, Tensor], cfg: ViTConfig | None = None, *, head_dim: int = 64) -> ViT:
    """A ``ViT`` holding a timm ViT's weights (``cfg`` defaults to the one the tensors describe;
    a state dict without a head, ``num_classes=0`` in timm, needs ``cfg.num_classes`` and gets a fresh head)."""
    cfg = cfg or timm_config(state, head_dim=head_dim)
    model = ViT(cfg)
    ours = tzoo_state(state, cfg.transformer.depth)
    expected = model.state_dict()
    for name, value in ours.items():
        if expected[name].shape != value.shape:
            raise ValueError(f"{name} is {list(value.shape)} in the timm weights but {list(expected[name].shape)} in a ViT of this config")
    model.load_state_dict(ours, strict=False)
    return model.eval()


def to_timm_state(model: ViT) -> dict[str, Tensor]:
    """``model``'s weights in timm's ``VisionTransformer`` layout (class-token pooling, learned positions)."""
    cfg = model.cfg
    if cfg.position != "learned" or cfg.pool != "cls" or cfg.num_registers or cfg.stem != "patch" or cfg.local_radius:
        raise ValueError(
            "only a timm-shaped ViT exports to timm's layout (learned positions, class-token pooling, a patch "
            f"projection, no registers or local attention); this one has position={cfg.position!r}, pool={cfg.pool!r}, "
            f"num_registers={cfg.num_registers}, stem={cfg.stem!r}, local_radius={cfg.local_radius}"
        )
    if cfg.stride not in (None, cfg.patch_size):
        raise ValueError(f"timm's patch projection does not overlap: stride={cfg.stride} must equal patch_size={cfg.patch_size}")
    if cfg.transformer.block != "transformer":
        raise ValueError(f"net.transformer.block={cfg.transformer.block!r} has no place in timm's ViT layout: only block='transformer' exports")
    if cfg.transformer.qk_norm:  # timm's qk_norm is a LayerNorm with a bias, tzoo's an RMSNorm
        raise ValueError("net.transformer.qk_norm=True has no place in timm's layout (timm's q/k norms are LayerNorms): only qk_norm=False exports")
    ours = model.state_dict()
    pos = ours["tokenizer.pos"]
    out = {
        "cls_token": ours["tokenizer.cls"],
        "pos_embed": torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1),
        "patch_embed.proj.weight": ours["tokenizer.proj.weight"],
        "patch_embed.proj.bias": ours["tokenizer.proj.bias"],
        "norm.weight": ours["encoder.norm.weight"],
        "norm.bias": ours["encoder.norm.bias"],
        "head.weight": ours["head.weight"],
        "head.bias": ours["head.bias"],
    }
    for i in range(cfg.transformer.depth):
        for name, theirs in _BLOCK.items():
            for kind in ("weight", "bias"):
                out[f"blocks.{i}.{theirs}.{kind}"] = ours[f"encoder.blocks.{i}.{name}.{kind}"]
    return {k: v.detach().clone() for k, v in out.items()}


def read_timm_state(path: str | Path) -> dict[str, Tensor]:
    """A timm ViT state dict from a file (``.safetensors``, or a weights-only ``.pth``/``.bin``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"timm ViT weights {str(path)!r} do not exist: give a state dict file (.pth, .bin or .safetensors)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = read_checkpoint(path)
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} does not hold a state dict")
    return state


def load_timm_vit(path: str | Path, *, head_dim: int = 64) -> ViT:
    """A ``ViT`` from a timm ViT state dict file (``.safetensors``, or a weights-only ``.pth``/``.bin``)."""
    return from_timm_state(read_timm_state(path), head_dim=head_dim)
