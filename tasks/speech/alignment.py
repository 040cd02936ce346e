"""The alignment picture: the decoder's cross-attention (text tokens x audio frames) under the
log-mel spectrogram of the same utterance, captured with the core's ``capture_attention``."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from tzoo.core import capture_attention
from tzoo.tasks.speech.model import SpeechTransformer
from tzoo.tasks.speech.tokenizer import BOS

__all__ = ["alignment_figure", "attention_jumps", "attention_median", "cross_attention"]


@torch.inference_mode()
def cross_attention(model: SpeechTransformer, wave: Tensor, ids: list[int], *, layers: list[int] | None = None) -> Tensor:
    """One waveform (S,) and its token ids -> cross-attention (T + 1, N): for each decoder input
    (<s> and the tokens) the attention over audio nodes, averaged over heads and ``layers``
    (default: every decoder layer)."""
    was_training = model.training
    model.eval()
    depth = len(model.decoder.blocks)
    chosen = list(range(depth)) if layers is None else layers
    bad = [i for i in chosen if not -depth <= i < depth]
    if bad:
        raise ValueError(f"decoder layers {bad} do not exist; the decoder has layers 0..{depth - 1}")
    names = [f"decoder.blocks.{i % depth}.cross_attn" for i in chosen]
    encoded, _ = model.encode(wave[None], torch.tensor([len(wave)]))
    tokens = torch.tensor([[BOS, *ids]])
    with capture_attention(model, names) as maps:
        model.decode(tokens, encoded, None)
    model.train(was_training)
    return torch.stack([maps[n][0][0].float().mean(0) for n in names]).mean(0)  # (T + 1, N)


def attention_median(attention: Tensor) -> Tensor:
    """Attention rows (..., N) -> (...,) the node where half of each row's attention is reached
    (robust to a head or a node that takes a share elsewhere, unlike the argmax)."""
    return (attention.float().cumsum(-1) < 0.5).sum(-1)


def attention_jumps(attention: Tensor, *, back: int = 3, forward: int = 20) -> tuple[int, int]:
    """Cross-attention (T, N) -> how many steps from one token to the next move the median of the
    attention back by more than ``back`` nodes (a phrase read again) and forward by more than
    ``forward`` nodes (words skipped). A decoder that keeps its place moves forward in small steps."""
    median = attention_median(attention)  # (T,)
    step = median[1:] - median[:-1]  # (T - 1,)
    return int((step < -back).sum()), int((step > forward).sum())


def alignment_figure(
    model: SpeechTransformer,
    wave: Tensor,
    ids: list[int],
    labels: list[str],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    layers: list[int] | None = None,
) -> Path:
    """Draw the log-mel (top) and the cross-attention of each output character over the audio
    frames (bottom, same time axis) into ``path`` (PNG). ``labels``: the character of each id.
    ``layers``: the decoder layers whose attention is drawn (averaged), default the last one: the
    aligned one (a trained model's first layer spreads its attention over the whole utterance and
    would blur the picture). The title counts the attention's jumps (``attention_jumps``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the row of input <s> c1 .. c_t is where the decoder looked to predict c_{t+1}: label it c_{t+1}
    attention = cross_attention(model, wave, ids, layers=[-1] if layers is None else layers)[: len(ids)]  # (T, N)
    back, skips = attention_jumps(attention)
    mel, frames = model.frontend.logmel(wave[None], torch.tensor([len(wave)]))
    seconds = len(wave) / model.sample_rate
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 2.2 + 0.14 * len(ids)), sharex=True,
                                      gridspec_kw={"height_ratios": [1, max(1.5, 0.06 * len(ids))]})  # fmt: skip
    top.imshow(mel[0].numpy(), origin="lower", aspect="auto", extent=(0, seconds, 0, mel.shape[1]), cmap="magma")
    top.set_ylabel("mel band")
    top.set_title((title or "log-mel and decoder cross-attention") + f"\nattention jumps back {back}, far forward {skips}")
    bottom.imshow(attention.numpy(), aspect="auto", extent=(0, attention.shape[1] * model.frontend.node_seconds, max(len(ids), 1) - 0.5, -0.5),
                  cmap="viridis", interpolation="nearest")  # fmt: skip
    bottom.set_yticks(range(len(ids)))
    bottom.set_yticklabels([repr(c)[1:-1] if c != " " else "␣" for c in labels], fontsize=7, family="monospace")
    bottom.set_xlabel("time (s)")
    bottom.set_ylabel("output character")
    bottom.set_xlim(0, seconds)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
