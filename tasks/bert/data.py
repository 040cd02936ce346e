"""The encoder's data modules: masked-LM pretraining windows and labelled texts.

- ``MaskedTextDataModule`` (pretraining): random windows of any corpus the LM reads (it is the LM's
  ``TextDataModule`` with the encoder's tokenizer and ``tokenizer.mask_tokens``), plus
  ``shakespeare-train-plays``: the training plays of the genre split (``corpus.genre_train_text``),
  so pretraining never reads a validation or test play. Each window is ``[CLS] tokens [SEP]``,
  ``block_size`` nodes in all. A batch's masks are drawn from an RNG keyed by the data seed and the
  batch's window starts, so the validation batches are the same at every evaluation and a resumed
  run masks as the first one did.
- ``LabelledTextDataModule`` (classification): Shakespeare passages labelled by genre
  (``dataset="shakespeare-genre"``, see ``corpus.py``), or labelled CSV / TSV / JSONL files or URLs.
  Each text is ``[CLS] tokens [SEP]``; a text longer than ``max_len`` nodes is **cut** to its first
  ``max_len - 2`` tokens, and a note (a ``UserWarning``) says how many texts of which split were cut.

Both build their ``char`` / ``bpe`` tokenizer from the training text only (the whole corpus for
pretraining; the training texts for classification), so ``shakespeare-train-plays`` pretraining and
``shakespeare-genre`` classification build the same tokenizer, and a classifier fine-tunes a
pretrained encoder on the same token ids.

Batches are ``(ids (B, N) int64, real (B, N) bool, targets)``: ``real`` marks the nodes that are not
padding; ``targets`` is ``(B, N)`` (the original id at chosen nodes, -100 elsewhere) for pretraining
and ``(B,)`` class indices for classification (-1 when unknown, in predict).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from tzoo.tasks.bert.corpus import GENRES, Example, check_labels, genre_passages, genre_train_text, read_labelled, read_predict_texts
from tzoo.tasks.bert.tokenizer import SPECIALS, SpecialIds, build_tokenizer, encode_text, load_text_tokenizer, mask_tokens, special_ids
from tzoo.tasks.files import atomic_write
from tzoo.tasks.lm.data import NAMED_CORPORA, TextDataModule, download
from tzoo.tasks.text import Tokenizer

__all__ = ["LabelledTextDataModule", "MaskedTextDataModule", "MaskedWindows", "pad_batch"]

TRAIN_PLAYS = "shakespeare-train-plays"
_FORMAT = 1  # bump when the pretraining cache's layout or encoding changes


# --- masked windows ------------------------------------------------------------------------------


class MaskedWindows(Dataset):
    """Windows of the token file read by their start offsets, a whole batch per item:
    ``dataset[starts]`` -> ``(inputs, real, targets)``, each ``(B, length + 2)``: ``[CLS]`` +
    ``length`` tokens + ``[SEP]``, masked by ``mask_tokens`` with an RNG keyed by ``(seed, *starts)``."""

    def __init__(self, path: Path, *, length: int, ids: SpecialIds, vocab_size: int, rate: float, seed: int) -> None:
        self.path, self.length, self.ids, self.rate, self.seed = path, length, ids, rate, seed
        self.random_ids = np.setdiff1d(np.arange(vocab_size), np.array(ids.all))
        self._tokens: np.ndarray | None = None

    def __getitem__(self, starts: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        if self._tokens is None:
            self._tokens = np.load(self.path, mmap_mode="r")
        window = self._tokens[starts[:, None] + np.arange(self.length)].astype(np.int64)  # (B, L)
        B = len(starts)
        ids = np.concatenate([np.full((B, 1), self.ids.cls), window, np.full((B, 1), self.ids.sep)], axis=1)  # (B, L + 2)
        maskable = ~np.isin(ids, self.ids.all)
        rng = np.random.default_rng([self.seed, *(int(s) for s in starts)])
        inputs, targets = mask_tokens(ids, maskable=maskable, mask_id=self.ids.mask, random_ids=self.random_ids, rng=rng, rate=self.rate)
        real = torch.ones(ids.shape, dtype=torch.bool)  # windows are never padded
        return torch.from_numpy(inputs), real, torch.from_numpy(targets)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokens": None}


# --- pretraining data ---------------------------------------------------------------------------


class MaskedTextDataModule(TextDataModule):
    """Masked-LM windows of a corpus: the LM's ``TextDataModule`` (its corpora, cache, splits and
    resumable sampling) with the encoder's tokenizer and ``mask_tokens``.

    ``corpus``: ``shakespeare-train-plays`` (the genre split's training plays), or any corpus the LM
    reads (``shakespeare``, ``python-stdlib``, ``tinyshakespeare``, a URL, a file, a folder).
    ``block_size``: nodes per window, ``[CLS]`` and ``[SEP]`` included. The tokenizer is built from
    the whole corpus; the last ``val_fraction`` of it is the validation windows. ``mask_rate``: the
    share of tokens chosen for the loss (0.15)."""

    model_links = ("vocab_size", "objective")
    objective = "mlm"

    def __init__(
        self,
        corpus: str = TRAIN_PLAYS,
        *,
        tokenizer: str = "char",
        bpe_vocab_size: int = 1024,
        block_size: int = 128,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        cache_dir: str | None = None,
        sha256: str | None = None,
        num_workers: int = 0,
        val_batches: int = 20,
        train_batches: int = 1000,
        seed: int = 1337,
        mask_rate: float = 0.15,
    ) -> None:
        if not (isinstance(block_size, int) and block_size >= 3):
            raise ValueError(f"block_size must be an integer >= 3 ([CLS], a token, [SEP]), got {block_size!r}")
        if not 0.0 < mask_rate < 1.0:
            raise ValueError(f"mask_rate must be in (0, 1) (BERT's is 0.15), got {mask_rate}")
        default = Path(os.environ.get("TZOO_CACHE") or Path.home() / ".cache" / "tzoo") / "bert"
        super().__init__(
            corpus,
            tokenizer=tokenizer,
            bpe_vocab_size=bpe_vocab_size,
            block_size=block_size,
            batch_size=batch_size,
            val_fraction=val_fraction,
            cache_dir=cache_dir if cache_dir is not None else str(default),
            sha256=sha256,
            num_workers=num_workers,
            val_batches=val_batches,
            train_batches=train_batches,
            seed=seed,
        )
        self.save_hyperparameters()
        self.mask_rate = mask_rate

    @property
    def max_len(self) -> int:
        """Nodes per window (the model needs at least this many positions)."""
        return self.block_size

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)  # the LM's windows and samplers; the windows are masked ones here
        tokenizer = self.tokenizer
        self._windows = MaskedWindows(  # type: ignore[assignment]
            self._prepared() / "tokens.npy",
            length=self.block_size - 2,
            ids=special_ids(tokenizer),
            vocab_size=tokenizer.vocab_size,
            rate=self.mask_rate,
            seed=self.seed,
        )

    def _read_corpus(self) -> tuple[str, str]:
        if self.corpus == TRAIN_PLAYS:
            if self.sha256 is not None:
                raise ValueError(f"sha256 checks a URL or file corpus; built-in corpus {self.corpus!r} has no file to check")
            return genre_train_text(), TRAIN_PLAYS
        corpus = self.corpus
        if corpus not in NAMED_CORPORA and not corpus.startswith(("http://", "https://")) and not Path(corpus).expanduser().exists():
            raise FileNotFoundError(
                f"corpus {corpus!r} is not a named corpus {[TRAIN_PLAYS, *NAMED_CORPORA]}, an http(s) URL, "
                f"or an existing file or folder"
            )
        return super()._read_corpus()

    def _prepare(self) -> Path:
        """The LM's cache layout (tokens.npy, tokenizer.json, meta.json last), under its own key:
        the tokenizer holds ``SPECIALS`` and is built from the whole corpus."""
        text, name = self._read_corpus()
        if not text.strip():
            raise ValueError(f"corpus {self.corpus!r} is empty (no characters other than whitespace)")
        identity = {
            "format": _FORMAT,
            "task": "bert",
            "specials": list(SPECIALS),
            "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "tokenizer": self.tokenizer_kind,
            "vocab_size": self.bpe_vocab_size if self.tokenizer_kind == "bpe" else None,
            "val_fraction": self.val_fraction,
        }
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        label = f"bpe{self.bpe_vocab_size}" if self.tokenizer_kind == "bpe" else "char"
        entry = self.cache_dir / f"{name}-{label}-{key}"
        if not (entry / "meta.json").is_file():
            _encode_corpus(text, entry, identity)
        return entry


def _encode_corpus(text: str, entry: Path, identity: dict[str, Any]) -> None:
    tokenizer = build_tokenizer(identity["tokenizer"], text, bpe_vocab_size=identity["vocab_size"] or 0)
    cut = int(len(text) * (1 - identity["val_fraction"]))
    train, val = tokenizer.encode(text[:cut]), tokenizer.encode(text[cut:])
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    tokens = np.array(train + val, dtype=dtype)
    with atomic_write(entry / "tokens.npy", "wb") as f:
        np.save(f, tokens)
    tokenizer.save(entry / "tokenizer.json")
    meta = {"identity": identity, "characters": len(text), "vocab_size": tokenizer.vocab_size, "n_tokens": len(tokens), "n_train": len(train)}
    with atomic_write(entry / "meta.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(meta, indent=1))


# --- classification data ------------------------------------------------------------------------


def pad_batch(items: Sequence[tuple[list[int], int]], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """[(ids, label)] -> ids (B, N) padded with ``pad_id``, real (B, N) bool, labels (B,)."""
    n = max(len(ids) for ids, _ in items)
    batch = torch.full((len(items), n), pad_id, dtype=torch.long)
    real = torch.zeros((len(items), n), dtype=torch.bool)
    for row, (ids, _) in enumerate(items):
        batch[row, : len(ids)] = torch.tensor(ids)
        real[row, : len(ids)] = True
    return batch, real, torch.tensor([label for _, label in items], dtype=torch.long)


class EncodedTexts(Dataset):
    """Texts as token ids with their class index: ``dataset[i]`` -> ``(ids, label)``."""

    def __init__(self, ids: list[list[int]], labels: list[int]) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[list[int], int]:
        return self.ids[i], self.labels[i]


class _Collate:
    """A picklable collate function (DataLoader workers)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[tuple[list[int], int]]) -> tuple[Tensor, Tensor, Tensor]:
        return pad_batch(items, self.pad_id)


class LabelledTextDataModule(pl.LightningDataModule):
    """Labelled texts -> ``[CLS] tokens [SEP]`` batches; links ``vocab_size``, ``num_classes`` and the
    objective into the model.

    ``dataset``: ``shakespeare-genre`` (``lines`` lines per passage, ``genres`` ``three`` or ``six``,
    the fixed split by play of ``corpus.py``), or the training file (a path or an http(s) URL) of a
    labelled ``.csv`` / ``.tsv`` / ``.jsonl``; then ``val`` and ``test`` name the other splits' files
    (without ``val``, a random ``val_fraction`` of the training rows is held out; without ``test``, test
    runs on the validation set). ``text_column`` / ``label_column`` name the columns. ``sha256``: URL ->
    its SHA-256 (URLs are downloaded once, in ``prepare_data``, into ``cache_dir``). ``tokenizer``:
    ``char``, ``bpe`` (``bpe_vocab_size``) or a tokenizer file / checkpoint of this task. ``max_len``:
    nodes per text, ``[CLS]`` and ``[SEP]`` included; longer texts are cut (with a note).
    ``predict_file``: a text file (a text per line) or a ``.jsonl`` (its ``text_column``) that
    ``tzoo predict`` classifies.
    """

    model_links = ("vocab_size", "num_classes", "objective")
    objective = "classify"

    def __init__(
        self,
        dataset: str = "shakespeare-genre",
        *,
        lines: int = 4,
        genres: str = "three",
        val: str | None = None,
        test: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        sha256: dict[str, str] | None = None,
        val_fraction: float = 0.1,
        tokenizer: str = "char",
        bpe_vocab_size: int = 1024,
        max_len: int = 256,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 1337,
        predict_file: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(dataset, str) or not dataset:
            raise ValueError(f"dataset must be 'shakespeare-genre' or a labelled file / URL, got {dataset!r}")
        if genres not in GENRES:
            raise ValueError(f"genres={genres!r} is not one of {tuple(GENRES)}")
        if not (isinstance(lines, int) and lines >= 1):
            raise ValueError(f"lines (per passage) must be an integer >= 1, got {lines!r}")
        if not (isinstance(max_len, int) and max_len >= 3):
            raise ValueError(f"max_len must be an integer >= 3 ([CLS], a token, [SEP]), got {max_len!r}")
        for name, value in dict(batch_size=batch_size, bpe_vocab_size=bpe_vocab_size).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
        for url, digest in (sha256 or {}).items():
            if not re.fullmatch(r"[0-9a-fA-F]{64}", str(digest)):
                raise ValueError(f"sha256[{url!r}] must be 64 hexadecimal digits, got {digest!r}")
        self.save_hyperparameters()
        self.dataset, self.lines, self.genres, self.val, self.test = dataset, lines, genres, val, test
        self.text_column, self.label_column, self.sha256 = text_column, label_column, dict(sha256 or {})
        self.val_fraction, self.tokenizer_kind, self.bpe_vocab_size = val_fraction, tokenizer, bpe_vocab_size
        self.max_len, self.batch_size, self.num_workers, self.seed = max_len, batch_size, num_workers, seed
        self.predict_file = predict_file
        default = Path(os.environ.get("TZOO_CACHE") or Path.home() / ".cache" / "tzoo") / "bert"
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default.expanduser()
        self._examples: dict[str, list[Example]] | None = None
        self._classes: tuple[str, ...] | None = None
        self._tokenizer: Tokenizer | None = None
        self._sets: dict[str, EncodedTexts] = {}
        self.predict_items: list[tuple[int, str]] = []

    # --- what the model needs ---------------------------------------------------------------

    @property
    def examples(self) -> dict[str, list[Example]]:
        """{"train", "val", "test"} -> examples (read on first use)."""
        if self._examples is None:
            self._examples = self._read()
            self._classes = check_labels(self._examples, where=self.describe())
        return self._examples

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names, sorted: class index i is ``classes[i]``."""
        self.examples  # noqa: B018 - reads the data
        assert self._classes is not None
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            if self.tokenizer_kind in ("char", "bpe"):
                self._tokenizer = build_tokenizer(self.tokenizer_kind, self._train_text(), bpe_vocab_size=self.bpe_vocab_size)
            else:
                self._tokenizer = load_text_tokenizer(self.tokenizer_kind)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def describe(self) -> str:
        return f"shakespeare-genre ({self.genres} genres)" if self.dataset == "shakespeare-genre" else repr(self.dataset)

    # --- reading ----------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Downloads the URL files once (``read`` finds them in the cache)."""
        for source in (self.dataset, self.val, self.test):
            if source is not None and source.startswith(("http://", "https://")):
                self._local(source)

    def _local(self, source: str) -> Path:
        if source.startswith(("http://", "https://")):
            return download(source, self.cache_dir / "downloads", self.sha256.get(source))
        return Path(source).expanduser()

    def _read(self) -> dict[str, list[Example]]:
        if self.dataset == "shakespeare-genre":
            if self.val is not None or self.test is not None:
                raise ValueError("dataset='shakespeare-genre' has its own fixed val and test plays: leave val and test unset")
            return {split: genre_passages(split, lines=self.lines, genres=self.genres) for split in ("train", "val", "test")}
        columns = dict(text_column=self.text_column, label_column=self.label_column)
        train = read_labelled(self._local(self.dataset), name=self.dataset, **columns)
        if self.val is not None:
            val = read_labelled(self._local(self.val), name=self.val, **columns)
        else:
            order = np.random.default_rng(self.seed).permutation(len(train))
            n_val = max(1, int(round(len(train) * self.val_fraction)))
            if n_val >= len(train):
                raise ValueError(f"{self.dataset!r} has {len(train)} examples: too few to hold out val_fraction={self.val_fraction}; give val=<file>")
            held = set(order[:n_val].tolist())
            val = [e for i, e in enumerate(train) if i in held]
            train = [e for i, e in enumerate(train) if i not in held]
        test = read_labelled(self._local(self.test), name=self.test, **columns) if self.test is not None else val
        return {"train": train, "val": val, "test": test}

    def _train_text(self) -> str:
        """The text a ``char`` / ``bpe`` tokenizer is built from: the training texts only."""
        if self.dataset == "shakespeare-genre":
            return genre_train_text()  # = the shakespeare-train-plays pretraining corpus
        return "\n".join(e.text for e in self.examples["train"])

    # --- Lightning hooks --------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        index = {name: i for i, name in enumerate(self.classes)}
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ()}.get(stage or "", ("train", "val", "test"))
        for split in wanted:
            if split not in self._sets:
                examples = self.examples[split]
                self._sets[split] = EncodedTexts(self._encode([e.text for e in examples], split), [index[e.label] for e in examples])
        if stage == "predict":
            if self.predict_file is None:
                raise ValueError("tzoo predict needs data.init_args.predict_file=<a text file (a text per line) or a .jsonl>")
            self.predict_items = read_predict_texts(self.predict_file, text_column=self.text_column)
            texts = [text for _, text in self.predict_items]
            self._sets["predict"] = EncodedTexts(self._encode(texts, "predict"), [-1] * len(texts))

    def _encode(self, texts: list[str], split: str) -> list[list[int]]:
        ids = special_ids(self.tokenizer)
        encoded, lengths = zip(*(encode_text(self.tokenizer, text, ids, self.max_len) for text in texts)) if texts else ((), ())
        cut = [n for n in lengths if n > self.max_len - 2]
        if cut:
            warnings.warn(
                f"note: {len(cut)} of {len(texts)} {split} texts are longer than max_len={self.max_len} nodes "
                f"([CLS] + {self.max_len - 2} tokens + [SEP]) and were cut to their first {self.max_len - 2} tokens "
                f"(the longest has {max(cut)}); raise data.init_args.max_len (and the model's net.max_len) to keep them whole",
                UserWarning,
                stacklevel=2,
            )
        return list(encoded)

    def _loader(self, split: str, *, shuffle: bool = False) -> DataLoader:
        if split not in self._sets:
            self.setup({"train": "fit", "val": "validate", "test": "test", "predict": "predict"}[split])
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self._sets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            collate_fn=_Collate(special_ids(self.tokenizer).pad),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")

    def example_batch(self, n: int) -> tuple[tuple[Tensor, Tensor, Tensor], list[str]]:
        """``n`` validation texts spread over the split (a fixed choice): (a batch, their sources)."""
        examples = self.examples["val"]
        picks = np.linspace(0, len(examples) - 1, num=min(n, len(examples))).round().astype(int).tolist()
        if "val" not in self._sets:
            self.setup("validate")
        dataset = self._sets["val"]
        return pad_batch([dataset[i] for i in picks], special_ids(self.tokenizer).pad), [examples[i].source for i in picks]

