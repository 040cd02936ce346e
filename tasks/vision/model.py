"""ViT: patch nodes -> bidirectional core encoder -> class-token or mean pooling -> linear head.

Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"; the named sizes are those of DeiT
(Touvron et al. 2021), the usual ones for training from scratch.

Shape legend: B batch, C channels, H, W image size, P prefix nodes (class + registers),
N patch nodes, h, w patch grid (N = h*w), M kept patch nodes, D width, K classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tzoo.core import Encoder, TransformerBlock, TransformerConfig
from tzoo.tasks.vision.tokenizer import PatchTokenizer, Size, _pair, grid_size

__all__ = ["SIZES", "ViT", "ViTConfig", "local_mask", "vit_base", "vit_small", "vit_tiny"]


# --- named sizes: the encoder stack of each ---------------------------------------------------


def vit_tiny(**overrides: Any) -> TransformerConfig:
    """DeiT-Ti: width 192, 12 layers, 3 heads (5.7 M parameters at 224 px)."""
    return TransformerConfig(**{"dim": 192, "depth": 12, "num_heads": 3, **overrides})


def vit_small(**overrides: Any) -> TransformerConfig:
    """DeiT-S: width 384, 12 layers, 6 heads (22 M parameters)."""
    return TransformerConfig(**{"dim": 384, "depth": 12, "num_heads": 6, **overrides})


def vit_base(**overrides: Any) -> TransformerConfig:
    """ViT-B: width 768, 12 layers, 12 heads (86 M parameters)."""
    return TransformerConfig(**{"dim": 768, "depth": 12, "num_heads": 12, **overrides})


SIZES: dict[str, Callable[..., TransformerConfig]] = {"tiny": vit_tiny, "small": vit_small, "base": vit_base}


def _default_transformer() -> TransformerConfig:
    return vit_tiny(drop_path=0.1)  # DeiT-Ti's training recipe: stochastic depth 0.1


@dataclass
class ViTConfig:
    """The vision transformer: its own fields and the core stack's ``TransformerConfig``.

    ``num_classes``, ``in_channels`` and ``image_size`` are linked from the data by the CLI.
    ``image_size`` is needed for learned positions only (their grid); sin-cos positions take any
    image that tiles into patches. ``position`` is the absolute scheme of the patch grid; a
    relative scheme of the stack (``transformer.position``: ``rope`` / ``alibi``) counts nodes in
    row-major grid order after the class and register nodes. ``pool``: read the class node
    (``cls``) or average the patch nodes (``mean``). ``stem="conv"``: a convolutional stem instead
    of the patch projection (see ``tzoo.tasks.vision.tokenizer``). ``patch_dropout`` p > 0: each
    training image keeps a random (1 - p) of its patch nodes (see ``ViT``). ``local_radius`` r:
    2-D local attention: a patch node attends only to the patches within r rows and r columns of
    it on the grid (a (2r+1) x (2r+1) neighbourhood), while the class and register nodes stay
    global (they attend to every node and every node attends to them); None: every node sees
    every node."""

    num_classes: int | None = None
    image_size: int | tuple[int, int] | None = None
    in_channels: int | None = None
    patch_size: int | tuple[int, int] = 4
    stride: int | tuple[int, int] | None = None
    pool: Literal["cls", "mean"] = "cls"
    position: Literal["sincos", "learned"] = "sincos"
    num_registers: int = 0
    stem: Literal["patch", "conv"] = "patch"
    patch_dropout: float = 0.0
    head_dropout: float = 0.0
    local_radius: int | None = None
    transformer: TransformerConfig = field(default_factory=_default_transformer)

    def __post_init__(self) -> None:
        for name in ("num_classes", "in_channels"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"net.{name} must be an integer >= 1, got {value!r}")
        for name in ("image_size", "patch_size", "stride"):  # lists (from a checkpoint or YAML) as tuples
            value = getattr(self, name)
            if value is not None:
                pair = _pair(value, f"net.{name}")
                setattr(self, name, value if isinstance(value, int) else pair)
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"net.pool={self.pool!r} is not one of ('cls', 'mean')")
        if self.position not in ("sincos", "learned"):
            raise ValueError(
                f"net.position={self.position!r} is not one of ('sincos', 'learned'); relative positions are "
                f"net.transformer.position ('rope', 'alibi')"
            )
        if self.stem not in ("patch", "conv"):
            raise ValueError(f"net.stem={self.stem!r} is not one of ('patch', 'conv')")
        if not (isinstance(self.num_registers, int) and self.num_registers >= 0):
            raise ValueError(f"net.num_registers must be an integer >= 0, got {self.num_registers!r}")
        if not 0.0 <= self.patch_dropout < 1.0:
            raise ValueError(
                f"net.patch_dropout must be in [0, 1) (the share of patch nodes dropped in training), got {self.patch_dropout}"
            )
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"net.head_dropout must be in [0, 1), got {self.head_dropout}")
        if self.local_radius is not None and not (isinstance(self.local_radius, int) and self.local_radius >= 0):
            raise ValueError(
                f"net.local_radius must be an integer >= 0 (patches within that many rows and columns on the grid; "
                f"0: a patch sees only itself and the class/register nodes) or None (global attention), got {self.local_radius!r}"
            )
        if self.local_radius is not None and self.transformer.attention == "linear":
            raise ValueError(
                f"net.local_radius={self.local_radius} conflicts with net.transformer.attention='linear' in the vision task: "
                f"2-D local attention is a mask over the patch grid, and linear attention takes no mask; use "
                f"attention='softmax' with local_radius, or linear attention over the whole image (local_radius=None)"
            )


def local_mask(grid: tuple[int, int], radius: int, num_prefix: int, *, device: torch.device | None = None) -> Tensor:
    """2-D local attention over a (h, w) patch grid behind ``num_prefix`` global nodes, (P + N, P + N)
    bool, True = may attend: patch i sees patch j when their grid rows and columns each differ by at
    most ``radius`` (Chebyshev distance); prefix nodes see and are seen by every node."""
    h, w = grid
    rows = torch.arange(h, device=device).repeat_interleave(w)  # (N,) row of each patch, row-major
    cols = torch.arange(w, device=device).repeat(h)  # (N,)
    near = ((rows[:, None] - rows[None, :]).abs() <= radius) & ((cols[:, None] - cols[None, :]).abs() <= radius)  # (N, N)
    mask = torch.ones(num_prefix + h * w, num_prefix + h * w, dtype=torch.bool, device=device)
    mask[num_prefix:, num_prefix:] = near
    return mask  # (P + N, P + N)


class ViT(nn.Module):
    """Vision Transformer classifier: (B, C, H, W) -> logits (B, K).

    ``patch_dropout`` p > 0: in training each image keeps a random (1 - p) of its patch nodes
    (after their positions are added; class and register nodes always stay) and drops the rest
    before the encoder (PatchDropout, Liu et al. 2022): the encoder's work shrinks about in
    proportion, so more steps fit in a budget; evaluation sees every patch. With ``local_radius``
    the local mask follows the kept patches (each image's rows and columns of it).
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        if cfg.num_classes is None or cfg.in_channels is None:
            raise ValueError(
                "net.num_classes and net.in_channels are not set: the tzoo CLI links them from the data; when building "
                "the model yourself pass ViTConfig(num_classes=, in_channels= (and image_size=) of the dataset, ...)"
            )
        self.cfg = cfg
        t = cfg.transformer
        self.num_classes, self.pool, self.patch_dropout = cfg.num_classes, cfg.pool, cfg.patch_dropout
        self.local_radius = cfg.local_radius
        self.tokenizer = PatchTokenizer(
            t.dim,
            patch_size=cfg.patch_size,
            stride=cfg.stride,
            in_channels=cfg.in_channels,
            image_size=cfg.image_size,
            position=cfg.position,
            class_token=cfg.pool == "cls",
            num_registers=cfg.num_registers,
            stem=cfg.stem,
        )
        self.drop = nn.Dropout(t.dropout) if t.dropout else None
        self.encoder = Encoder(t)  # ends with a norm when pre-norm
        self.head_drop = nn.Dropout(cfg.head_dropout) if cfg.head_dropout else None
        self.head = nn.Linear(t.dim, cfg.num_classes)
        # forward's last-layer shortcut reads the class node through the attention's cross path,
        # which takes neither relative positions nor a post-norm block (nor a Conformer block: its
        # convolution needs every node's output)
        self._class_shortcut = cfg.pool == "cls" and t.norm_first and t.position == "none" and t.block == "transformer"
        self._masks: dict[tuple[int, int, torch.device], Tensor] = {}  # local masks by grid and device: not state
        self._init_weights()

    def _init_weights(self) -> None:
        # timm / DeiT: truncated N(0, 0.02) linear weights, zero biases; the patch projection as a
        # linear map of the flattened patch (Xavier uniform, as in MAE)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        proj = self.tokenizer.proj
        if isinstance(proj, nn.Conv2d):
            nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
            nn.init.zeros_(proj.bias)

    @property
    def num_prefix(self) -> int:
        return self.tokenizer.num_prefix

    def local_mask(self, grid: tuple[int, int], device: torch.device) -> Tensor | None:
        """The (P + N, P + N) local-attention mask of a patch grid (made once per grid and device),
        or None without ``local_radius``."""
        if self.local_radius is None:
            return None
        key = (grid[0], grid[1], device)
        if key not in self._masks:
            self._masks[key] = local_mask(grid, self.local_radius, self.num_prefix, device=device)
        return self._masks[key]

    def _embed(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """images (B, C, H, W) -> nodes (B, P + M, D) and their attention mask: None, (P + N, P + N),
        or with dropped patches (B, P + M, P + M)."""
        x, grid = self.tokenizer(images)  # (B, P + N, D)
        mask = self.local_mask(grid, x.device)
        if self.training and self.patch_dropout > 0:
            x, kept = self._drop_patches(x)
            if mask is not None:
                mask = self._kept_mask(mask, kept)
        return (self.drop(x) if self.drop is not None else x), mask

    def kept_patches(self, n: int) -> int:
        """How many of ``n`` patch nodes a training image keeps under ``patch_dropout``."""
        return max(1, round(n * (1 - self.patch_dropout)))

    def _drop_patches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, P + N, D) -> (B, P + M, D): the prefix nodes and a random M = round((1 - p) N) of
        the patch nodes of each image, in grid order; and the kept patches' indices (B, M)."""
        B, P, D = x.shape[0], self.num_prefix, x.shape[2]
        N = x.shape[1] - P
        chosen = torch.rand(B, N, device=x.device).topk(self.kept_patches(N), dim=1).indices.sort(dim=1).values  # (B, M)
        patches = x[:, P:].gather(1, chosen[..., None].expand(-1, -1, D))
        return torch.cat([x[:, :P], patches], dim=1), chosen

    def _kept_mask(self, mask: Tensor, kept: Tensor) -> Tensor:
        """The (P + N, P + N) mask restricted to each image's kept patches (B, M) -> (B, P + M, P + M)."""
        P = self.num_prefix
        nodes = torch.cat([torch.arange(P, device=kept.device).expand(kept.shape[0], -1), kept + P], dim=1)  # (B, P + M)
        return mask[nodes[:, :, None], nodes[:, None, :]]  # (B, P + M, P + M)

    def forward_features(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) -> normalised nodes (B, P + N, D), every node through every layer."""
        x, mask = self._embed(images)
        return self.encoder(x, mask=mask)

    def forward_head(self, x: Tensor, *, pre_logits: bool = False) -> Tensor:
        """nodes (B, P + N, D) -> logits (B, K), or the pooled features (B, D) with ``pre_logits``."""
        x = x[:, 0] if self.pool == "cls" else x[:, self.num_prefix :].mean(dim=1)  # (B, D)
        if self.head_drop is not None:
            x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) -> logits (B, K), the same as ``forward_head(forward_features(images))``.

        With class-token pooling the head reads one node, so the last block computes that node's
        output only: its query still attends to every node (the class node is global under
        ``local_radius`` too), but the other nodes' queries, output projections and MLPs in the last
        layer (about a sixth of a 6-layer model's work) are skipped.
        """
        if not self._class_shortcut:
            return self.forward_head(self.forward_features(images))
        x, mask = self._embed(images)
        *blocks, last = self.encoder.blocks
        for block in blocks:
            x = block(x, mask=mask)
        return self.forward_head(self.encoder.norm(_class_node_output(last, x)))  # (B, 1, D) -> (B, K)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_image(self, image_size: Size) -> float:
        """Training FLOPs of one image (matmuls only; backward = 2 x forward; the encoder sees the
        patch nodes ``patch_dropout`` keeps; attention counted over every pair of nodes, masked or not)."""
        tok, cfg = self.tokenizer, self.encoder.config
        h, w = grid_size(image_size, tok.patch_size, tok.stride)
        n, d, f = self.kept_patches(h * w) + self.num_prefix, cfg.dim, int(cfg.mlp_ratio * cfg.dim)
        per_layer = 2 * n * (4 * d * d + 2 * d * f) + 4 * n * n * d  # q, k, v, out, MLP; scores and mixing
        patches = 2 * h * w * d * tok.in_channels * tok.patch_size[0] * tok.patch_size[1]
        return 3 * (cfg.depth * per_layer + patches + 2 * d * self.num_classes)


def _class_node_output(block: TransformerBlock, x: Tensor) -> Tensor:
    """A pre-norm block's output for the first node only: (B, N, D) -> (B, 1, D).

    The class node's query attends to the keys and values of every node through the attention's
    cross-attention path, which uses the query rows and the key/value rows of the same fused
    projection, so the result equals row 0 of ``block(x)`` (its window, top-k and memory nodes
    apply there as in self-attention; relative positions do not, so ``ViT`` skips this then).
    """
    assert block.norm_first and block.cross_attn is None, "ViT builds pre-norm blocks without cross-attention"
    h = block.attn_norm(x)
    h = block.attn(h[:, :1], h)  # (B, 1, D)
    x = x[:, :1] + (block.attn_out(h) if block.attn_out is not None else h)
    h = block.feed_forward(block.ff_norm(x))
    return x + (block.ff_out(h) if block.ff_out is not None else h)
