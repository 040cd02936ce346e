"""Image -> patch nodes: the vision task's tokenizer.

An image is cut into a grid of (possibly overlapping) patches; each patch is projected to one node
of width D and given its grid position. Optional class and register nodes go in front of the
patch nodes, without positions: they are not part of the grid.

Shape legend: B batch, C channels, H, W image height and width, p patch size, s stride,
h, w grid rows and columns (h = (H - p) / s + 1), N = h*w patch nodes, P prefix nodes
(class + registers), D width.

Images must tile exactly: an image whose size leaves a remainder past the last patch is an error
(no padding, which would invent pixels the model never saw in training).

``stem="conv"`` replaces the one-matmul patch projection by a small convolutional stem (Xiao et
al. 2021, "Early Convolutions Help Transformers See Better"): log2(p) 3x3 stride-2 convolutions
with batch norm and ReLU, widths doubling up to D, then a 1x1 convolution to D. The nodes and the
grid are the same as ``stem="patch"`` with stride p; it trains much faster from scratch on small
datasets, for ~10% more compute at patch 4.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from tzoo.core import SinCos2DPositionalEncoding

__all__ = ["ConvStem", "PatchTokenizer", "grid_size", "patchify", "unpatchify"]

Size = int | tuple[int, int]


def _pair(value: Size, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a (height, width) pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


def grid_size(image_size: Size, patch_size: Size, stride: Size | None = None) -> tuple[int, int]:
    """The (h, w) patch grid of an image, or a ValueError naming the valid image sizes."""
    (H, W), (ph, pw) = _pair(image_size, "image_size"), _pair(patch_size, "patch_size")
    sh, sw = _pair(stride, "stride") if stride is not None else (ph, pw)
    grid = []
    for axis, size, p, s in (("height", H, ph, sh), ("width", W, pw, sw)):
        if size < p or (size - p) % s:
            valid = f"a multiple of {p}" if s == p else f"{p} + a multiple of {s}"
            near = max(p, p + (size - p) // s * s)
            raise ValueError(
                f"image {axis} {size} does not tile into patches of {p} with stride {s}: "
                f"valid {axis}s are {valid} (e.g. {near} or {near + s}); resize or crop the images"
            )
        grid.append((size - p) // s + 1)
    return grid[0], grid[1]


def patchify(images: Tensor, patch_size: Size) -> Tensor:
    """Non-overlapping patches, each flattened channel-major (the layout of a Conv2d kernel):
    (B, C, H, W) -> (B, N, C*ph*pw)."""
    ph, pw = _pair(patch_size, "patch_size")
    grid_size(images.shape[-2:], (ph, pw))  # the same error as the tokenizer for sizes that don't tile
    return rearrange(images, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=ph, pw=pw)


def unpatchify(patches: Tensor, grid: tuple[int, int], patch_size: Size, channels: int) -> Tensor:
    """Inverse of ``patchify``: (B, N, C*ph*pw) -> (B, C, h*ph, w*pw)."""
    ph, pw = _pair(patch_size, "patch_size")
    h, w = grid
    if patches.shape[1] != h * w or patches.shape[2] != channels * ph * pw:
        raise ValueError(
            f"patches of shape {tuple(patches.shape)} do not fit a {h}x{w} grid of {channels}-channel "
            f"{ph}x{pw} patches: expected (B, {h * w}, {channels * ph * pw})"
        )
    return rearrange(patches, "b (h w) (c ph pw) -> b c (h ph) (w pw)", h=h, w=w, c=channels, ph=ph, pw=pw)


class ConvStem(nn.Sequential):
    """(B, C, H, W) -> (B, D, H/p, W/p) with log2(p) 3x3 stride-2 convolutions (BN, ReLU), widths
    doubling up to D, and a final 1x1 convolution to D. p must be a power of two >= 2."""

    def __init__(self, in_channels: int, dim: int, patch_size: tuple[int, int]) -> None:
        p = patch_size[0]
        if patch_size[0] != patch_size[1] or p < 2 or p & (p - 1):
            raise ValueError(
                f"stem='conv' needs a square power-of-two patch size (2, 4, 8, 16, ...), got {patch_size}; "
                f"use stem='patch' for other patch sizes"
            )
        depth = p.bit_length() - 1
        widths = [max(dim >> (depth - i), 8) for i in range(1, depth + 1)]  # e.g. p=4, D=96: 48, 96
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        layers.append(nn.Conv2d(c, dim, 1))
        super().__init__(*layers)


class PatchTokenizer(nn.Module):
    """(B, C, H, W) images -> ((B, P + N, D) nodes, (h, w) grid).

    ``position``: ``"sincos"`` fixed 2-D sin-cos positions, regenerated for any grid; ``"learned"``
    one vector per patch of the ``image_size`` grid, resized bicubically for another grid.
    ``class_token`` adds one node in front (read out by class-token pooling); ``num_registers``
    adds scratch nodes after it ("Vision Transformers Need Registers", Darcet et al. 2023).
    """

    def __init__(
        self,
        dim: int,
        *,
        patch_size: Size = 4,
        stride: Size | None = None,
        in_channels: int = 3,
        image_size: Size | None = None,
        position: Literal["sincos", "learned"] = "sincos",
        class_token: bool = True,
        num_registers: int = 0,
        stem: Literal["patch", "conv"] = "patch",
    ) -> None:
        super().__init__()
        self.patch_size = _pair(patch_size, "patch_size")
        self.stride = _pair(stride, "stride") if stride is not None else self.patch_size
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if num_registers < 0:
            raise ValueError(f"num_registers must be >= 0, got {num_registers}")
        if position not in ("sincos", "learned"):
            raise ValueError(f"position={position!r} is not one of ('sincos', 'learned')")
        if stem not in ("patch", "conv"):
            raise ValueError(f"stem={stem!r} is not one of ('patch', 'conv')")
        if stem == "conv" and self.stride != self.patch_size:
            raise ValueError(
                f"stem='conv' makes disjoint patches: stride {self.stride} must equal patch_size {self.patch_size} (or be left unset)"
            )
        self.dim, self.in_channels, self.position, self.stem = dim, in_channels, position, stem
        self.image_size = _pair(image_size, "image_size") if image_size is not None else None
        self.grid = grid_size(self.image_size, self.patch_size, self.stride) if self.image_size else None
        # a kernel-p, stride-s convolution is a linear map applied to every patch
        self.proj: nn.Module = (
            nn.Conv2d(in_channels, dim, kernel_size=self.patch_size, stride=self.stride)
            if stem == "patch"
            else ConvStem(in_channels, dim, self.patch_size)
        )
        self.cls = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        self.registers = nn.Parameter(torch.zeros(1, num_registers, dim)) if num_registers else None
        self.sincos: SinCos2DPositionalEncoding | None = None
        self.pos: nn.Parameter | None = None
        if position == "sincos":
            self.sincos = SinCos2DPositionalEncoding(dim)
        else:
            if self.grid is None:
                raise ValueError("learned positions need the training image_size (their grid); pass image_size=")
            self.pos = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], dim))
            nn.init.trunc_normal_(self.pos, std=0.02)
        for token in (self.cls, self.registers):
            if token is not None:
                nn.init.normal_(token, std=0.02)

    @property
    def num_prefix(self) -> int:
        """Nodes in front of the patch nodes: the class token and the registers."""
        return (self.cls is not None) + (self.registers.shape[1] if self.registers is not None else 0)

    def forward(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """images (B, C, H, W) -> nodes (B, P + N, D) and the patch grid (h, w)."""
        if images.dim() != 4:
            raise ValueError(f"images must be (B, C, H, W), got a tensor of shape {tuple(images.shape)}")
        if images.shape[1] != self.in_channels:
            raise ValueError(
                f"images have {images.shape[1]} channels but the model takes {self.in_channels} "
                f"(in_channels={self.in_channels}); convert them (e.g. grayscale <-> RGB) first"
            )
        if not images.is_floating_point():
            raise ValueError(
                f"images must be a floating-point tensor, got {images.dtype}; convert them first "
                f"(e.g. uint8 pixels: images.float() / 255, then the dataset's normalisation)"
            )
        grid = grid_size(tuple(images.shape[-2:]), self.patch_size, self.stride)
        dtype = next(self.proj.parameters()).dtype
        if images.dtype != dtype and not torch.is_autocast_enabled(images.device.type):
            images = images.to(dtype)  # float64 / float16 input to a float32 model
        x = self.proj(images).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, N, D)
        x = self.sincos(x, grid) if self.sincos is not None else x + self.learned_positions(grid)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls, self.registers) if t is not None]
        if prefix:
            x = torch.cat([*prefix, x], dim=1)  # (B, P + N, D)
        return x, grid

    def learned_positions(self, grid: tuple[int, int]) -> Tensor:
        """The learned positions for a (h, w) grid, (1, h*w, D): the trained table itself on its own
        grid, else resized with bicubic interpolation (as timm and DeiT do for a new resolution)."""
        assert self.pos is not None and self.grid is not None
        if grid == self.grid:
            return self.pos
        table = rearrange(self.pos, "1 (h w) d -> 1 d h w", h=self.grid[0], w=self.grid[1])
        # as timm's resample_abs_pos_embed: bicubic with antialias (PIL's kernel, which also averages
        # away detail a smaller grid cannot hold), so imported timm ViTs resize exactly as in timm
        table = F.interpolate(table, size=grid, mode="bicubic", align_corners=False, antialias=True)
        return rearrange(table, "1 d h w -> 1 (h w) d")
