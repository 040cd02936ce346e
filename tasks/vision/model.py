"""ViT: patch nodes -> bidirectional core encoder -> class-token or mean pooling -> linear head.

Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"; the named sizes are those of DeiT
(Touvron et al. 2021), the usual ones for training from scratch.

Shape legend: B batch, C channels, H, W image size, P prefix nodes (class + registers),
N patch nodes, D width, K classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tzoo.core import Encoder, TransformerBlock, TransformerConfig
from tzoo.tasks.vision.tokenizer import PatchTokenizer, Size, grid_size

__all__ = ["SIZES", "ViT", "vit_base", "vit_small", "vit_tiny"]


class ViT(nn.Module):
    """Vision Transformer classifier: (B, C, H, W) -> logits (B, K).

    ``pool="cls"`` reads the class node (which then exists); ``pool="mean"`` averages the patch
    nodes. ``image_size`` is needed for learned positions only (their grid); sin-cos positions take
    any image that tiles into patches. ``patch_dropout`` p > 0: in training each image keeps a random
    (1 - p) of its patch nodes (after their positions are added; class and register nodes always
    stay) and drops the rest before the encoder (PatchDropout, Liu et al. 2022): the encoder's work
    shrinks about in proportion, so more steps fit in a budget; evaluation sees every patch.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        image_size: Size | None = None,
        in_channels: int = 3,
        patch_size: Size = 4,
        stride: Size | None = None,
        dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        pool: Literal["cls", "mean"] = "cls",
        position: Literal["sincos", "learned"] = "sincos",
        num_registers: int = 0,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path: float = 0.0,
        layer_scale: float | None = None,
        head_dropout: float = 0.0,
        stem: Literal["patch", "conv"] = "patch",
        patch_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= patch_dropout < 1.0:
            raise ValueError(f"patch_dropout must be in [0, 1) (the share of patch nodes dropped in training), got {patch_dropout}")
        self.patch_dropout = patch_dropout
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool={pool!r} is not one of ('cls', 'mean')")
        self.num_classes, self.pool = num_classes, pool
        self.tokenizer = PatchTokenizer(
            dim,
            patch_size=patch_size,
            stride=stride,
            in_channels=in_channels,
            image_size=image_size,
            position=position,
            class_token=pool == "cls",
            num_registers=num_registers,
            stem=stem,
        )
        self.drop = nn.Dropout(dropout) if dropout else None
        config = TransformerConfig(
            dim=dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            dropout=dropout,
            attn_dropout=attn_dropout,
            drop_path=drop_path,
            layer_scale=layer_scale,
        )
        self.encoder = Encoder(config)  # ends with a LayerNorm
        self.head_drop = nn.Dropout(head_dropout) if head_dropout else None
        self.head = nn.Linear(dim, num_classes)
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

    def _embed(self, images: Tensor) -> Tensor:
        x, _ = self.tokenizer(images)  # (B, P + N, D)
        if self.training and self.patch_dropout > 0:
            x = self._drop_patches(x)
        return self.drop(x) if self.drop is not None else x

    def kept_patches(self, n: int) -> int:
        """How many of ``n`` patch nodes a training image keeps under ``patch_dropout``."""
        return max(1, round(n * (1 - self.patch_dropout)))

    def _drop_patches(self, x: Tensor) -> Tensor:
        """(B, P + N, D) -> (B, P + M, D): the prefix nodes and a random M = round((1 - p) N) of
        the patch nodes of each image, in grid order."""
        B, P, D = x.shape[0], self.num_prefix, x.shape[2]
        N = x.shape[1] - P
        chosen = torch.rand(B, N, device=x.device).topk(self.kept_patches(N), dim=1).indices.sort(dim=1).values  # (B, M)
        patches = x[:, P:].gather(1, chosen[..., None].expand(-1, -1, D))
        return torch.cat([x[:, :P], patches], dim=1)

    def forward_features(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) -> normalised nodes (B, P + N, D), every node through every layer."""
        return self.encoder(self._embed(images))

    def forward_head(self, x: Tensor, *, pre_logits: bool = False) -> Tensor:
        """nodes (B, P + N, D) -> logits (B, K), or the pooled features (B, D) with ``pre_logits``."""
        x = x[:, 0] if self.pool == "cls" else x[:, self.num_prefix :].mean(dim=1)  # (B, D)
        if self.head_drop is not None:
            x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) -> logits (B, K), the same as ``forward_head(forward_features(images))``.

        With class-token pooling the head reads one node, so the last block computes that node's
        output only: its query still attends to every node, but the other nodes' queries, output
        projections and MLPs in the last layer (about a sixth of a 6-layer model's work) are skipped.
        """
        if self.pool != "cls":
            return self.forward_head(self.forward_features(images))
        x = self._embed(images)
        *blocks, last = self.encoder.blocks
        for block in blocks:
            x = block(x)
        return self.forward_head(self.encoder.norm(_class_node_output(last, x)))  # (B, 1, D) -> (B, K)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_image(self, image_size: Size) -> float:
        """Training FLOPs of one image (matmuls only; backward = 2 x forward; the encoder sees the
        patch nodes ``patch_dropout`` keeps)."""
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
    projection, so the result equals row 0 of ``block(x)``.
    """
    assert block.norm_first and block.cross_attn is None, "ViT builds pre-norm blocks without cross-attention"
    h = block.attn_norm(x)
    h = block.attn(h[:, :1], h)  # (B, 1, D)
    x = x[:, :1] + (block.attn_out(h) if block.attn_out is not None else h)
    h = block.feed_forward(block.ff_norm(x))
    return x + (block.ff_out(h) if block.ff_out is not None else h)


# --- named sizes ------------------------------------------------------------------------------


def vit_tiny(num_classes: int, **kwargs: Any) -> ViT:
    """DeiT-Ti: width 192, 12 layers, 3 heads (5.7 M parameters at 224 px)."""
    return ViT(num_classes, **{"dim": 192, "depth": 12, "num_heads": 3, **kwargs})


def vit_small(num_classes: int, **kwargs: Any) -> ViT:
    """DeiT-S: width 384, 12 layers, 6 heads (22 M parameters)."""
    return ViT(num_classes, **{"dim": 384, "depth": 12, "num_heads": 6, **kwargs})


def vit_base(num_classes: int, **kwargs: Any) -> ViT:
    """ViT-B: width 768, 12 layers, 12 heads (86 M parameters)."""
    return ViT(num_classes, **{"dim": 768, "depth": 12, "num_heads": 12, **kwargs})


SIZES: dict[str, Callable[..., ViT]] = {"tiny": vit_tiny, "small": vit_small, "base": vit_base}

