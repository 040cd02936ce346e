"""Image -> patch nodes: the vision task's tokenizer.

An image is cut into a grid of (possibly overlapping) patches; each patch is projected to one node
of width D and given its grid position. Optional class and register nodes go in front of the
patch nodes, without positions: they are not part of the grid.

Shape legend: B batch, C channels, H, W image height and width, p patch size, s stride,
h, w grid rows and columns (h = (H - p) / s + 1), N = h*w patch nodes, P prefix nodes
(class + registers), D width.

Images must tile exactly: an image whose size leaves a remainder past the last patch is an error
(no padding, which would invent pixels the model never saw in training).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from tzoo.core import SinCos2DPositionalEncoding

__all__ = ["PatchTokenizer", "grid_size", "patchify", "unpatchify"]

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
        self.dim, self.in_channels, self.position = dim, in_channels, position
        self.image_size = _pair(image_size, "image_size") if image_size is not None else None
        self.grid = grid_size(self.image_size, self.patch_size, self.stride) if self.image_size else None
        # a kernel-p, stride-s convolution is a linear map applied to every patch
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=self.patch_size, stride=self.stride)
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
        grid = grid_size(tuple(images.shape[-2:]), self.patch_size, self.stride)
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
        # antialias only when shrinking: it averages away detail the smaller grid cannot hold
        shrink = grid[0] < self.grid[0] or grid[1] < self.grid[1]
        table = F.interpolate(table, size=grid, mode="bicubic", align_corners=False, antialias=shrink)
        return rearrange(table, "1 d h w -> 1 (h w) d")
