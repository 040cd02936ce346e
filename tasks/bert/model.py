"""BERT: token nodes -> bidirectional core encoder (with key padding) -> a masked-LM head or a pooled
classification head.

Shape legend: B batch, N nodes (``[CLS]`` + tokens + ``[SEP]``, padded), V vocabulary, D width,
K classes, M chosen (masked) nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from tzoo.core import Encoder, LearnedPositionalEmbedding, TransformerConfig, init_gpt2

__all__ = ["BODY", "Bert", "BertConfig", "MLMHead"]

OBJECTIVES = ("mlm", "classify")
BODY = ("embed.", "pos.", "encoder.")  # the weights a pretraining hands to a classifier (not the heads)


def _bert_transformer() -> TransformerConfig:
    return TransformerConfig(dim=128, depth=4, num_heads=4)


@dataclass
class BertConfig:
    """The encoder model: its own fields and the core stack's ``TransformerConfig``.

    ``vocab_size`` and ``num_classes`` are linked from the data by the CLI (``num_classes`` only for
    classification). ``max_len``: the most nodes the model takes (its positions). ``position``:
    ``learned`` absolute positions, or ``none`` when ``transformer.position`` is ``rope`` / ``alibi``.
    ``pool``: what the classifier reads, the ``[CLS]`` node (``cls``) or the mean of the real nodes
    (``mean``)."""

    vocab_size: int | None = None
    num_classes: int | None = None
    max_len: int = 256
    position: Literal["learned", "none"] = "learned"
    pool: Literal["cls", "mean"] = "cls"
    transformer: TransformerConfig = field(default_factory=_bert_transformer)

    def __post_init__(self) -> None:
        if self.vocab_size is not None and self.vocab_size < 1:
            raise ValueError(f"net.vocab_size must be >= 1, got {self.vocab_size}")
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(f"net.num_classes must be >= 2 (a classifier tells classes apart), got {self.num_classes}")
        if not (isinstance(self.max_len, int) and self.max_len >= 3):
            raise ValueError(f"net.max_len must be an integer >= 3 ([CLS], a token, [SEP]), got {self.max_len!r}")
        if self.position not in ("learned", "none"):
            raise ValueError(
                f"net.position={self.position!r} is not one of ('learned', 'none'); relative positions are "
                f"net.transformer.position ('rope', 'alibi')"
            )
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"net.pool={self.pool!r} is not one of ('cls', 'mean')")


class MLMHead(nn.Module):
    """BERT's masked-LM head: dense + GELU + LayerNorm, then the output projection tied to the token
    embedding, plus a bias per token. (..., D) -> (..., V)."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        vocab_size, dim = embedding.weight.shape
        self.transform = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.decoder = nn.Linear(dim, vocab_size)
        self.decoder.weight = embedding.weight  # tied (Press & Wolf 2017)

    def forward(self, h: Tensor) -> Tensor:
        return self.decoder(self.transform(h))


class Bert(nn.Module):
    """Token embedding (+ learned positions, or RoPE / ALiBi inside attention) -> core ``Encoder``
    with key padding -> ``MLMHead`` (``objective="mlm"``) or a linear classifier over the pooled
    node (``objective="classify"``)."""

    def __init__(self, cfg: BertConfig, *, objective: str = "classify") -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective={objective!r} is not one of {OBJECTIVES}")
        if cfg.vocab_size is None:
            raise ValueError(
                "net.vocab_size is not set: the tzoo CLI links it from the data; when building the model "
                "yourself pass BertConfig(vocab_size=<the tokenizer's vocab_size>, ...)"
            )
        if objective == "classify" and cfg.num_classes is None:
            raise ValueError(
                "net.num_classes is not set: the tzoo CLI links it from labelled data; when building a classifier "
                "yourself pass BertConfig(num_classes=<the number of labels>, ...)"
            )
        self.cfg, self.objective = cfg, objective
        t = cfg.transformer
        self.vocab_size, self.max_len, self.pool = cfg.vocab_size, cfg.max_len, cfg.pool
        self.embed = nn.Embedding(cfg.vocab_size, t.dim)
        self.pos = LearnedPositionalEmbedding(cfg.max_len, t.dim) if cfg.position == "learned" else None
        self.drop = nn.Dropout(t.dropout) if t.dropout else None
        self.encoder = Encoder(t)
        self.mlm = MLMHead(self.embed) if objective == "mlm" else None
        self.classifier = nn.Linear(t.dim, cfg.num_classes) if objective == "classify" else None  # type: ignore[arg-type]
        init_gpt2(self, t.depth)

    def num_params(self, *, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - (self.pos.weight.numel() if non_embedding and self.pos is not None else 0)

    def features(self, ids: Tensor, real: Tensor | None = None) -> Tensor:
        """ids (B, N), real (B, N) bool (``True`` = not padding) -> encoded nodes (B, N, D)."""
        if ids.dim() != 2:
            raise ValueError(f"ids must be (B, N) token ids, got shape {tuple(ids.shape)}")
        if ids.shape[1] > self.max_len:
            raise ValueError(
                f"{ids.shape[1]} nodes exceed the model's max_len={self.max_len} (its positions); cut the text to "
                f"{self.max_len} nodes ([CLS] + {self.max_len - 2} tokens + [SEP]), as the data modules do"
            )
        x = self.embed(ids)  # (B, N, D)
        if self.pos is not None:
            x = self.pos(x)
        if self.drop is not None:
            x = self.drop(x)
        return self.encoder(x, key_padding_mask=real)

    def pooled(self, h: Tensor, real: Tensor | None = None) -> Tensor:
        """Encoded nodes (B, N, D) -> the node the classifier reads (B, D): ``[CLS]`` (node 0), or the
        mean over the real nodes."""
        if self.pool == "cls":
            return h[:, 0]
        if real is None:
            return h.mean(dim=1)
        weights = real.to(h.dtype).unsqueeze(-1)  # (B, N, 1)
        return (h * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)

    def mlm_logits(self, h: Tensor) -> Tensor:
        """Encoded nodes (..., D) -> token logits (..., V) (pass only the chosen nodes: (M, D))."""
        if self.mlm is None:
            raise ValueError("this model was built for objective='classify': it has no masked-LM head")
        return self.mlm(h)

    def forward(self, ids: Tensor, real: Tensor | None = None) -> Tensor:
        """ids (B, N), real (B, N) -> class logits (B, K) (classify) or token logits (B, N, V) (mlm)."""
        h = self.features(ids, real)
        if self.classifier is None:
            return self.mlm_logits(h)
        return self.classifier(self.pooled(h, real))

    def load_encoder(self, state: dict[str, Tensor], *, where: str) -> list[str]:
        """Copy the embedding, positions and encoder (``BODY``) from another ``Bert``'s state dict; the
        heads keep their own weights. A vocabulary, width or shape that differs is a ValueError naming
        it. Returns the names loaded."""
        ours = {k: v for k, v in self.state_dict().items() if k.startswith(BODY)}
        theirs = {k: v for k, v in state.items() if k.startswith(BODY)}
        V, D = self.embed.weight.shape
        if "embed.weight" in theirs:
            tv, td = theirs["embed.weight"].shape
            if tv != V:
                raise ValueError(
                    f"{where} has a vocabulary of {tv} tokens, this model {V}: the data must be encoded with the "
                    f"pretraining's tokenizer (data.init_args.tokenizer=<the checkpoint>)"
                )
            if td != D:
                raise ValueError(f"{where} has width dim={td}, this model dim={D}: set net.transformer.dim={td} (and its other sizes)")
        missing, unexpected = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
        if missing or unexpected:
            raise ValueError(
                f"{where} does not hold this encoder's weights: "
                + (f"it lacks {missing[:3]}" if missing else f"it has {unexpected[:3]} that this model lacks")
                + " (another depth, position scheme or option): build the model with the pretraining's net settings"
            )
        for name, tensor in ours.items():
            if theirs[name].shape != tensor.shape:
                raise ValueError(
                    f"{where}: {name} is {list(theirs[name].shape)} there and {list(tensor.shape)} here "
                    f"(another max_len or size): build the model with the pretraining's net settings"
                )
        with torch.no_grad():
            for name, tensor in ours.items():
                tensor.copy_(theirs[name])
        return sorted(ours)
