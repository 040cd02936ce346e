"""Pictures of a text classifier after each validation: the confusion matrix, and what the read-out
node attends to in a few validation passages.

The attention comes from ``tzoo.core.capture_attention`` on the encoder's last layer: the model runs
on its fast path and that layer also hands out softmax(q kᵀ) of the same queries and keys. The row
drawn is the ``[CLS]`` node's (``pool="cls"``: the node the classifier reads), or the mean of the real
nodes' rows (``pool="mean"``), averaged over heads, over the passage's real nodes.

Shape legend: B passages, N nodes, H heads, K classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from tzoo.core import MultiHeadAttention, capture_attention
from tzoo.tasks.bert.model import Bert

__all__ = ["attention_figure", "cls_attention", "confusion_figure"]

UNIFORM_TIMES = 5.0  # the attention figure's full colour: this many times uniform attention


def _figure(width: float, height: float):  # noqa: ANN202 - a matplotlib Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | Path) -> Path:  # noqa: ANN001
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def confusion_figure(matrix: Tensor, class_names: Sequence[str], path: str | Path, *, title: str = "") -> Path:
    """A PNG of a (K, K) confusion matrix (rows: true class, columns: predicted), each cell its count,
    shaded by its share of the row."""
    counts = matrix.detach().cpu().long()
    K = counts.shape[0]
    share = counts.float() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    size = 1.2 + 0.55 * K
    figure = _figure(size + 1.0, size)
    ax = figure.subplots()
    ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(K):
        for j in range(K):
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8, color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(K), list(class_names), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(K), list(class_names), fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


@torch.no_grad()
def cls_attention(model: Bert, ids: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
    """ids, real (B, N) -> (the read-out node's last-layer attention over the nodes (B, N), each row
    summing to 1 over the real nodes; the class logits (B, K))."""
    layers = [name for name, m in model.named_modules() if isinstance(m, MultiHeadAttention) and name.startswith("encoder.")]
    was_training = model.training
    model.eval()
    with capture_attention(model, layers[-1]) as captured:
        logits = model(ids, real)
    model.train(was_training)
    N = ids.shape[1]
    weights = captured[layers[-1]][-1].float().mean(dim=1)[..., -N:]  # (B, N, N): heads averaged, memory nodes left out
    row = weights[:, 0] if model.pool == "cls" else (weights * real[..., None]).sum(dim=1) / real.sum(dim=1, keepdim=True)
    row = row * real  # (B, N): attention to padding is not a place in the text
    return row / row.sum(dim=-1, keepdim=True).clamp(min=1e-12), logits


def _shown(token: str) -> str:
    return token.replace("\n", "⏎").replace("\t", "⇥") or "∅"


def attention_figure(
    model: Bert,
    ids: Tensor,
    real: Tensor,
    tokens: Sequence[Sequence[str]],
    path: str | Path,
    *,
    labels: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    width: int = 64,
) -> Path:
    """A PNG with one panel per passage: its tokens in reading order, wrapped at ``width`` characters,
    each on a box shaded by the read-out node's attention to it (white: none; full colour:
    ``UNIFORM_TIMES`` times the attention of a uniform spread, or more). ``tokens[b]`` are the strings of
    passage b's real nodes ([CLS] first)."""
    attention, logits = cls_attention(model, ids, real)
    predicted = logits.argmax(dim=-1).tolist()
    name = (lambda k: class_names[k]) if class_names else str
    layouts = []  # per passage: [(x, row, width, text, weight)]
    for b, strings in enumerate(tokens):
        # shaded by the attention relative to uniform attention over the passage (1 / nodes):
        # white at none, full colour at UNIFORM_TIMES times uniform or more
        relative = attention[b, : len(strings)].cpu() * len(strings) / UNIFORM_TIMES
        x, line, boxes = 0, 0, []
        for text, shade in zip(strings, relative.clamp(max=1).tolist()):
            shown = _shown(text)
            if x + len(shown) > width and x > 0:
                x, line = 0, line + 1
            boxes.append((x, line, len(shown), shown, shade))
            x += len(shown)
        layouts.append(boxes)
    heights = [1 + max(box[1] for box in boxes) for boxes in layouts]
    figure = _figure(0.11 * width + 0.4, sum(0.2 * h + 0.45 for h in heights))
    axes = figure.subplots(len(layouts), 1, squeeze=False, height_ratios=[h + 2 for h in heights])[:, 0]
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    cmap = colormaps["Oranges"]
    for b, (ax, boxes) in enumerate(zip(axes, layouts)):
        for x, line, w, text, weight in boxes:
            ax.add_patch(Rectangle((x, line), w, 1, facecolor=cmap(weight), edgecolor="none"))
            ax.text(x + w / 2, line + 0.5, text, ha="center", va="center", family="monospace", fontsize=7)
        ax.set_xlim(0, width)
        ax.set_ylim(heights[b], 0)
        ax.set_axis_off()
        title = f"predicted {name(predicted[b])}"
        if labels is not None:
            title = f"label {name(int(labels[b]))}, {title}"
        if sources is not None:
            title = f"{sources[b]}: {title}"
        read_out = "[CLS]" if model.pool == "cls" else "mean of the nodes"
        ax.set_title(f"{title} ({read_out}'s last-layer attention; full colour: {UNIFORM_TIMES:g}x uniform)", fontsize=8, loc="left")
    figure.tight_layout()
    return _save(figure, path)
