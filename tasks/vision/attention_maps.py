"""What a ViT looks at: attention over the patch grid, drawn over the image.

Two maps per image, both distributions over the (h, w) patch grid (they sum to 1):
- ``last``: the last layer's attention from the read-out node (the class token; with mean pooling,
  the patch nodes' attention averaged), averaged over heads;
- ``rollout``: attention rollout (Abnar & Zuidema 2020): each layer's head-averaged attention,
  with the residual connection as half of it (0.5 A + 0.5 I), multiplied through all layers, so
  attention paid to a node that itself attended elsewhere flows on to where that node looked.

The weights come from ``tzoo.core.capture_attention``: the model runs on its fast path and the
chosen layers also hand out softmax(q kᵀ) of the same queries and keys.

Shape legend: B batch, C channels, H, W image size, h, w patch grid, P prefix nodes,
N = P + h*w nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from tzoo.core import MultiHeadAttention, capture_attention
from tzoo.tasks.vision.model import ViT
from tzoo.tasks.vision.tokenizer import grid_size

__all__ = ["attention_figure", "attention_maps", "rollout"]


def rollout(weights: Sequence[Tensor]) -> Tensor:
    """Attention rollout of head-averaged weights (B, N, N) per layer (first layer first) -> (B, N, N)."""
    eye = torch.eye(weights[0].shape[-1], dtype=weights[0].dtype, device=weights[0].device)
    joint = eye.expand_as(weights[0])
    for attention in weights:
        mixed = 0.5 * attention + 0.5 * eye  # the residual stream carries half of each node forward
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        joint = mixed @ joint  # (B, N, N)
    return joint


@torch.no_grad()
def attention_maps(model: ViT, images: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """images (B, C, H, W) -> ({"last": (B, h, w), "rollout": (B, h, w)}, logits (B, K))."""
    was_training = model.training
    model.eval()
    layers = [name for name, m in model.named_modules() if isinstance(m, MultiHeadAttention)]
    with capture_attention(model, layers) as captured:
        # every node through every layer (not forward's class-node shortcut): rollout needs the
        # last layer's full (N, N) attention
        logits = model.forward_head(model.forward_features(images))
    model.train(was_training)
    h, w = grid_size(tuple(images.shape[-2:]), model.tokenizer.patch_size, model.tokenizer.stride)
    P = model.num_prefix
    N = P + h * w
    # (B, N, N) each, heads averaged; learned memory nodes (the first columns, not nodes of the
    # image) left out and each row renormalised over the image's nodes
    weights = [captured[name][-1].float().mean(dim=1)[..., -N:] for name in layers]
    weights = [a / a.sum(dim=-1, keepdim=True) for a in weights]

    def read_out(attention: Tensor) -> Tensor:
        # the row of the node the head reads: the class token, or the mean of the patch nodes
        row = attention[:, 0] if model.pool == "cls" else attention[:, P:].mean(dim=1)  # (B, N)
        patches = row[:, P:]  # attention to prefix nodes is not a place in the image
        patches = patches / patches.sum(dim=-1, keepdim=True)
        return patches.reshape(-1, h, w)  # (B, h, w)

    return {"last": read_out(weights[-1]), "rollout": read_out(rollout(weights))}, logits


def attention_figure(
    model: ViT,
    images: Tensor,
    path: str | Path,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    labels: Tensor | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """A PNG with one row per image: the image, the last layer's read-out attention over it, and
    the attention rollout over it. ``images`` (B, C, H, W) are normalised with ``mean``/``std``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    maps, logits = attention_maps(model, images)
    predicted = logits.argmax(dim=-1).tolist()
    stats = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    pixels = (images.detach().float().cpu() * stats[1] + stats[0]).clamp(0, 1)  # (B, C, H, W) in [0, 1]
    name = (lambda k: class_names[k]) if class_names else str
    B, C, H, W = pixels.shape
    (ph, pw), (sh, sw) = model.tokenizer.patch_size, model.tokenizer.stride
    h, w = maps["last"].shape[1:]
    # each grid cell drawn over its patch's centre, one stride wide (patches may overlap)
    cells = (pw / 2 - sw / 2, pw / 2 + (w - 0.5) * sw, ph / 2 + (h - 0.5) * sh, ph / 2 - sh / 2)
    figure = Figure(figsize=(6.6, 2.2 * B), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(B, 3, squeeze=False)
    for i in range(B):
        image = pixels[i, 0].numpy() if C == 1 else pixels[i].permute(1, 2, 0).numpy()
        title = f"predicted {name(predicted[i])}"
        if labels is not None:
            title = f"label {name(int(labels[i]))}, {title}"
        for j, (heading, grid) in enumerate((("image", None), ("last layer", maps["last"][i]), ("rollout", maps["rollout"][i]))):
            ax = axes[i, j]
            ax.imshow(image, cmap="gray" if C == 1 else None, extent=(0, W, H, 0), interpolation="nearest")
            if grid is not None:  # the picture showing through
                ax.imshow(grid.cpu().numpy(), cmap="inferno", alpha=0.6, extent=cells, interpolation="bilinear")
                ax.set_xlim(0, W), ax.set_ylim(H, 0)
            ax.set_title(title if j == 0 else heading, fontsize=8)
            ax.set_axis_off()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
