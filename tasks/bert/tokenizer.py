"""The encoder's tokens: the special tokens, text -> ``[CLS] tokens [SEP]`` ids, and BERT's masking.

The tokenizers are the shared char / byte-level BPE ones (``tzoo.tasks.text``) with ``SPECIALS``
first in the vocabulary. A char tokenizer turns a character outside its alphabet into ``[UNK]`` (a
byte-level BPE has none: every byte is in its vocabulary). ``tokenizer`` options name ``char``,
``bpe``, or a tokenizer file (``tokenizer.json`` of a run) or a checkpoint of this task, whose
tokenizer is used as it is.

**Masking** (Devlin et al. 2019): each token that is not a special token (nor padding) is chosen
with probability ``rate`` (at least one per row); a chosen token becomes ``[MASK]`` 80% of the
time, a random non-special token 10%, and stays itself 10%; the loss is taken on the chosen ones.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tzoo.tasks.reliability import read_checkpoint
from tzoo.tasks.text import BPETokenizer, CharTokenizer, Tokenizer, load_tokenizer

__all__ = [
    "IGNORE",
    "SPECIALS",
    "SpecialIds",
    "build_tokenizer",
    "encode_text",
    "load_text_tokenizer",
    "mask_tokens",
    "special_ids",
    "tokenizer_from_dict",
    "tokenizer_to_dict",
]

SPECIALS = ("[SEP]", "[CLS]", "[MASK]", "[PAD]", "[UNK]")  # [SEP] first: it ends a text
IGNORE = -100  # the target of a node the loss skips (PyTorch's cross_entropy default)


# --- tokenizers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecialIds:
    sep: int
    cls: int
    mask: int
    pad: int
    unk: int

    @property
    def all(self) -> tuple[int, ...]:
        return (self.sep, self.cls, self.mask, self.pad, self.unk)


def special_ids(tokenizer: Tokenizer, *, where: str = "the tokenizer") -> SpecialIds:
    """The ids of ``SPECIALS``; a tokenizer without them (one of the LM, say) is a ValueError."""
    missing = [s for s in SPECIALS if s not in tokenizer.special_tokens]
    if missing:
        raise ValueError(
            f"{where} has no {', '.join(missing)} token (its special tokens: {list(tokenizer.special_tokens)}): "
            f"the encoder needs {list(SPECIALS)}; use a tokenizer of this task (bert), not one of another task"
        )
    ids = [tokenizer.encode(s) for s in SPECIALS]
    assert all(len(i) == 1 for i in ids), ids  # a special token's string encodes as its one id
    return SpecialIds(*(i[0] for i in ids))


def build_tokenizer(kind: str, text: str, *, bpe_vocab_size: int = 1024) -> Tokenizer:
    """A char tokenizer of ``text``'s characters, or a byte-level BPE trained on it, with ``SPECIALS``."""
    if kind == "char":
        return CharTokenizer.from_text(text, special_tokens=SPECIALS)
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size=bpe_vocab_size, special_tokens=SPECIALS)
    raise ValueError(f"tokenizer={kind!r} is not 'char', 'bpe', or a tokenizer file / checkpoint of this task")


def tokenizer_to_dict(tokenizer: Tokenizer) -> dict[str, Any]:
    """The tokenizer's JSON document (what ``save`` writes), for a checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        tokenizer.save(path)
        return json.loads(path.read_text(encoding="utf-8"))


def tokenizer_from_dict(document: dict[str, Any]) -> Tokenizer:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        return load_tokenizer(path)


def load_text_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """A tokenizer from a ``tokenizer.json`` or from a checkpoint of this task; it must hold ``SPECIALS``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer {str(path)!r} is not 'char', 'bpe' or an existing tokenizer file / checkpoint")
    if not zipfile.is_zipfile(path):  # not a checkpoint (torch's zip archive): a tokenizer file, or an error saying why not
        tokenizer = load_tokenizer(path)
    else:
        checkpoint = read_checkpoint(path, mmap=True)
        task = (checkpoint.get("tzoo") or {}).get("task") if isinstance(checkpoint, dict) else None
        if not isinstance(checkpoint, dict) or "tokenizer" not in checkpoint or task != "bert":
            raise ValueError(
                f"checkpoint {str(path)!r} was written by the {task!r} task, not by bert: give a bert checkpoint "
                f"or its run's tokenizer.json as the tokenizer"
            )
        tokenizer = tokenizer_from_dict(checkpoint["tokenizer"])
    special_ids(tokenizer, where=f"tokenizer {str(path)!r}")
    return tokenizer


def encode_text(tokenizer: Tokenizer, text: str, ids: SpecialIds, max_len: int) -> tuple[list[int], int]:
    """``[CLS] tokens [SEP]`` cut to ``max_len`` nodes; (the ids, how many tokens the text had)."""
    if isinstance(tokenizer, CharTokenizer):
        known = frozenset(tokenizer.chars)
        if not known.issuperset(text):
            text = "".join(c if c in known else "[UNK]" for c in text)
    tokens = tokenizer.encode(text)
    return [ids.cls, *tokens[: max_len - 2], ids.sep], len(tokens)


# --- masking ------------------------------------------------------------------------------------


def mask_tokens(
    ids: np.ndarray, *, maskable: np.ndarray, mask_id: int, random_ids: np.ndarray, rng: np.random.Generator, rate: float = 0.15
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's masking of ids (B, N) -> (inputs (B, N), targets (B, N), ``IGNORE`` where not chosen).

    Each ``maskable`` node is chosen with probability ``rate`` (a row with maskable nodes and none
    chosen gets one, uniformly); a chosen node becomes ``mask_id`` with probability 0.8, one of
    ``random_ids`` with 0.1, and keeps its id with 0.1."""
    chosen = (rng.random(ids.shape) < rate) & maskable
    empty = ~chosen.any(axis=1) & maskable.any(axis=1)
    for row in np.flatnonzero(empty):  # rare except in very short rows
        chosen[row, rng.choice(np.flatnonzero(maskable[row]))] = True
    targets = np.where(chosen, ids, IGNORE)
    roll = rng.random(ids.shape)
    inputs = ids.copy()
    inputs[chosen & (roll < 0.8)] = mask_id
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = rng.choice(random_ids, size=int(swap.sum()))
    return inputs, targets
