"""Text corpora -> token ids encoded once into a cache -> random (x, y) windows for next-token training.

A corpus is one of
- a built-in one, read from files already on this machine: ``"shakespeare"`` (the 38 plays shipped
  inside tzoo, ``tzoo.tasks.plays``) or ``"python-stdlib"`` (this interpreter's standard-library source);
- a named download, ``"tinyshakespeare"`` (the 1.1 M-character file of the char-rnn / nanoGPT
  reference runs), or any http(s) URL; downloaded once, SHA-256 checked when a digest is known;
- a local ``.txt`` file, or a folder whose ``*.txt`` files (recursively, sorted) are joined with
  a blank line. Names win over paths: pass ``./shakespeare`` for a folder called ``shakespeare``.

Cache layout (``cache_dir``, default ``$TZOO_CACHE/lm``, else ``~/.cache/tzoo/lm``)::

    downloads/<hash of url>-<file name>       a URL corpus, as downloaded
    <corpus>-<tokenizer>-<key>/tokens.npy      the whole corpus as token ids (uint16, or uint32 for
                                               vocabularies over 65,536), read memory-mapped
                              /tokenizer.json  the tokenizer (see tokenizer.py)
                              /meta.json       sizes and the train/val split; written last, so its
                                               presence marks a complete entry

``key`` hashes the corpus text, the tokenizer kind, the BPE vocabulary size (or a pretrained
tokenizer's files) and ``val_fraction``, so different settings never share an entry. Every file is written to a temporary name and moved
into place, so an interrupted run never leaves a half-written file under a final name.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import sysconfig
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tzoo.tasks.files import atomic_write
from tzoo.tasks.files import cache_dir as default_cache_dir  # the argument is called cache_dir
from tzoo.tasks.plays import load_plays
from tzoo.tasks.sampling import KeyedBatches, KeyedLoader, LoopPosition, Position, run_seed
from tzoo.tasks.text import BPETokenizer, CharTokenizer, Tokenizer, load_tokenizer

__all__ = [
    "NAMED_CORPORA",
    "KeyedStarts",
    "RandomStarts",
    "TextDataModule",
    "TokenWindows",
    "download",
    "encode_corpus",
    "python_stdlib_text",
    "shakespeare_text",
]

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
_URL_CORPORA = {"tinyshakespeare": (TINYSHAKESPEARE_URL, TINYSHAKESPEARE_SHA256)}
NAMED_CORPORA = ("shakespeare", "python-stdlib", *_URL_CORPORA)
_FORMAT = 1  # bump when the cache layout or the encoding changes, so old entries are not reused


# --- built-in corpora ---------------------------------------------------------------------------


def shakespeare_text() -> str:
    """Shakespeare's 38 plays, shipped inside tzoo (``tzoo.tasks.plays``), as tiny-Shakespeare-style
    plain text.

    Blocks of ``SPEAKER:`` then its lines then a blank line. Speaker names keep the edition's
    case, which is tiny Shakespeare's convention too: named characters in capitals (``ROMEO:``),
    generic ones in title case (``First Citizen:``). Headings (title, acts, scenes) and stage
    directions are dropped: they are not speech, and tiny Shakespeare has none either. Speech
    interrupted by a stage direction continues its speaker's block. About 4.8 M characters.
    """
    return "".join(play.text for play in load_plays().values())


_STDLIB_SKIP = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"}


def python_stdlib_text(max_chars: int = 8_000_000) -> str:
    """This interpreter's standard-library ``*.py`` files (no tests, idlelib, lib2to3 or installed
    packages), sorted by path, joined with a blank line, cut at ``max_chars``."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in _STDLIB_SKIP]  # prune: site-packages is big
        paths += [Path(folder, name) for name in files if name.endswith(".py")]
    parts, total = [], 0
    for path in sorted(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        total += len(text) + 2
        if total >= max_chars:
            break
    return "\n\n".join(parts)[:max_chars]


_BUILTIN_CORPORA = {"shakespeare": shakespeare_text, "python-stdlib": python_stdlib_text}


# --- files and downloads ------------------------------------------------------------------------


def _read_text_path(path: Path) -> str:
    """A text file, or a folder's ``*.txt`` files (recursively, sorted) joined with a blank line."""
    files = [path] if path.is_file() else sorted(path.rglob("*.txt"))
    if not files:
        raise ValueError(f"corpus folder {str(path)!r} has no *.txt files")
    return "\n\n".join(_read_utf8(file) for file in files)


def _read_utf8(file: Path) -> str:
    """A corpus file's text. A binary file, or bytes that are not UTF-8, are an error naming the file
    and the offset of the first bad byte (not characters for the tokenizer to learn)."""
    raw = file.read_bytes()
    nul = raw.find(b"\0")
    if nul != -1:
        raise ValueError(
            f"corpus file {str(file)!r} is not text: a NUL byte at offset {nul} (a binary file, or text in UTF-16 "
            f"or UTF-32); give a UTF-8 text file"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"corpus file {str(file)!r} is not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start} "
            f"({err.reason}); convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, folder: Path, sha256: str | None = None) -> Path:
    """Download ``url`` into ``folder`` once and return the file; check its SHA-256 when given."""
    name = re.sub(r"[^\w.-]", "_", url.rstrip("/").rsplit("/", 1)[-1])[-60:] or "corpus"
    path = folder / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"
    if not path.is_file():
        with atomic_write(path, "wb") as f:  # on any failure nothing is kept, partial or whole
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    while chunk := response.read(1 << 20):
                        f.write(chunk)
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as err:
                cause = " ".join(str(err).split())  # one line
                raise ConnectionError(
                    f"could not download the corpus {url} ({cause}); without network access give a local text file "
                    f"as the corpus (this URL's file, downloaded elsewhere), or a corpus that needs no network: "
                    f"'shakespeare' (the plays, installed with tzoo) or 'python-stdlib'"
                ) from err
            f.flush()
            _check_sha256(Path(f.name), sha256, url, "; the download was not kept")  # never under the final name
    else:
        try:
            _check_sha256(path, sha256, url, f"; removed the cached {path}, the next run downloads it again")
        except ValueError:
            path.unlink()
            raise
    return path


def _check_sha256(path: Path, expected: str | None, source: str, note: str = "") -> None:
    if expected is None:
        return
    actual = _sha256_file(path)
    if actual != expected.lower():
        raise ValueError(f"SHA-256 of {source} is {actual}, expected {expected.lower()}{note}")


# --- random windows -----------------------------------------------------------------------------


class TokenWindows(Dataset):
    """Windows of the token file read by their start offsets, a whole batch per item:
    ``dataset[starts]`` -> ``(x, y)``, each ``(B, N)`` int64, ``y`` = ``x`` shifted one token ahead."""

    def __init__(self, path: Path, *, block_size: int) -> None:
        # The path, not the array: each DataLoader worker maps the file itself instead of
        # receiving a pickled copy.
        self.path, self.block_size = path, block_size
        self._tokens: np.ndarray | None = None

    def __getitem__(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self._tokens is None:
            self._tokens = np.load(self.path, mmap_mode="r")
        index = starts[:, None] + np.arange(self.block_size)  # (B, N)
        x = torch.from_numpy(self._tokens[index].astype(np.int64))
        y = torch.from_numpy(self._tokens[index + 1].astype(np.int64))
        return x, y

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokens": None}


class RandomStarts(Sampler[np.ndarray]):
    """``num_batches`` arrays of ``batch_size`` window starts, uniform over the windows that fit
    in ``[start, stop)`` (nanoGPT's ``get_batch``).

    With a ``seed``, every pass draws the same starts (validation: losses compare across
    evaluations). Without, each pass draws fresh ones from torch's global RNG, which
    ``seed_everything`` seeds. Sampling happens in the main process, so the windows do not
    depend on the number of workers, and Lightning's distributed sampler wrapper deals each
    rank different batches.
    """

    def __init__(
        self, start: int, stop: int, *, block_size: int, batch_size: int, num_batches: int, seed: int | None
    ) -> None:
        assert stop - start >= block_size + 1, "the data module checks the split sizes"
        self.start, self.stop, self.block_size = start, stop, block_size
        self.batch_size, self.num_batches, self.seed = batch_size, num_batches, seed

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[np.ndarray]:
        high = self.stop - self.block_size  # exclusive: the last window's target ends at stop
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)
        for _ in range(self.num_batches):
            yield torch.randint(self.start, high, (self.batch_size,), generator=generator).numpy()


class KeyedStarts(KeyedBatches):
    """Training window starts, resumable and rank-aware (``tzoo.tasks.sampling``): uniform over
    the windows that fit in ``[start, stop)``, batch ``i`` of epoch ``e`` keyed by
    ``(*seed, e, i)``."""

    def __init__(
        self,
        start: int,
        stop: int,
        *,
        block_size: int,
        batch_size: int,
        num_batches: int,
        seed: tuple[int, ...],
        position: Callable[[], Position],
    ) -> None:
        assert stop - start >= block_size + 1, "the data module checks the split sizes"
        self.start, self.stop, self.block_size = start, stop, block_size
        super().__init__(batch_size=batch_size, num_batches=num_batches, key=seed, position=position, draw=self._draw)

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(self.start, self.stop - self.block_size, n, dtype=np.int64)


# --- the data module ----------------------------------------------------------------------------


class TextDataModule(pl.LightningDataModule):
    """Random token windows of a text corpus: train on the first ``1 - val_fraction`` of it,
    validate (and test) on the rest.

    The corpus is split by characters, then each part is encoded (as nanoGPT's ``prepare.py``
    does), so the BPE tokenizer, trained on the train part only, never sees validation text; the
    char tokenizer's alphabet is that of the whole corpus. ``vocab_size``, ``tokenizer`` and
    ``tokenizer_path`` prepare the data (download, tokenizer, encoding) when first read.
    """

    model_links = ("vocab_size",)  # attributes the tzoo CLI copies into the model's arguments

    def __init__(
        self,
        corpus: str = "shakespeare",
        *,
        tokenizer: str = "char",
        bpe_vocab_size: int = 1024,
        block_size: int = 256,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        cache_dir: str | None = None,
        sha256: str | None = None,
        num_workers: int = 0,
        val_batches: int = 20,
        train_batches: int = 1000,
        seed: int = 1337,
        predict_prompts: str | None = None,
    ) -> None:
        """``bpe_vocab_size`` is the BPE vocabulary to train (ignored for ``char``); ``sha256`` checks
        a URL or single-file corpus; ``train_batches`` is the length of a training epoch (windows
        are drawn at random, so an epoch is only a unit of progress). ``batch_size`` is per process:
        under data parallelism with W processes a step trains on the W * batch_size windows one
        process with that batch size would draw, and an epoch is ``train_batches`` steps at any W.
        The training windows are keyed by ``seed`` and ``seed_everything``'s seed, so a resumed run
        draws the same ones as an uninterrupted run (see ``KeyedStarts``). ``predict_prompts``: a UTF-8
        text file of prompts, one a line (blank lines skipped), for ``tzoo predict``. ``tokenizer``:
        ``char``, ``bpe`` (trained on the corpus, ``bpe_vocab_size``), or a GPT-2 folder / hub id whose
        byte-level BPE encodes the corpus (for ``model.init_args.pretrained``: the same folder)."""
        super().__init__()
        if not isinstance(corpus, str) or not corpus:
            raise ValueError(f"corpus must be a name {list(NAMED_CORPORA)}, an http(s) URL or a path, got {corpus!r}")
        if tokenizer not in ("char", "bpe") and not _pretrained_tokenizer(tokenizer):
            raise ValueError(
                f"tokenizer={tokenizer!r} is not one of ('char', 'bpe'), an existing GPT-2 folder or a hub id (owner/name)"
            )
        if tokenizer == "bpe" and bpe_vocab_size < 257:
            raise ValueError(
                f"bpe_vocab_size={bpe_vocab_size} is too small for byte-level BPE: it needs >= 257 (256 bytes + end of text)"
            )
        counts = dict(block_size=block_size, batch_size=batch_size, val_batches=val_batches, train_batches=train_batches)
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
        if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
        if predict_prompts is not None and not Path(predict_prompts).expanduser().is_file():
            raise FileNotFoundError(
                f"predict_prompts={predict_prompts!r} is not a file: give a text file of prompts, one a line"
            )
        self.save_hyperparameters()
        self.predict_prompts = predict_prompts
        self.corpus, self.tokenizer_kind, self.bpe_vocab_size = corpus, tokenizer, bpe_vocab_size
        self.block_size, self.batch_size, self.val_fraction = block_size, batch_size, val_fraction
        self.val_batches, self.train_batches = val_batches, train_batches
        self.num_workers, self.seed = num_workers, seed
        self.sha256 = sha256
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir("lm")
        self._entry: Path | None = None  # the cache folder, once prepared
        self._tokenizer: Tokenizer | None = None
        self._windows: TokenWindows | None = None  # set, with the two samplers, by setup()
        self._train_starts: RandomStarts | None = None
        self._val_starts: RandomStarts | None = None
        self._position = LoopPosition(self, train_batches)  # where a training pass starts

    # --- what the model needs ---------------------------------------------------------------

    @property
    def tokenizer_path(self) -> Path:
        """The saved tokenizer JSON (prepares the data on first use)."""
        return self._prepared() / "tokenizer.json"

    @property
    def tokenizer(self) -> Tokenizer:
        """The corpus tokenizer (prepares the data on first use)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_path)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary size, linked into the model by the CLI (prepares the data
        on first use: on every rank when the CLI builds the model, which the atomic cache writes
        make safe)."""
        return self.tokenizer.vocab_size

    # --- Lightning hooks --------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Download, build the tokenizer and encode the corpus, unless the cache has it already."""
        self._prepared()

    def setup(self, stage: str | None = None) -> None:
        # Lightning runs prepare_data on one process per node only; _prepared() finds its result.
        entry = self._prepared()
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        n_train, n_val = meta["n_train"], meta["n_tokens"] - meta["n_train"]
        if min(n_train, n_val) < self.block_size + 1:
            raise ValueError(
                f"corpus {self.corpus!r} has {n_train} train and {n_val} validation tokens, but "
                f"block_size={self.block_size} needs at least {self.block_size + 1} in each; "
                f"use a longer corpus, a smaller block_size, or another val_fraction (now {self.val_fraction})"
            )
        self._windows = TokenWindows(entry / "tokens.npy", block_size=self.block_size)
        sizes = dict(block_size=self.block_size, batch_size=self.batch_size)
        # keyed by the data seed and seed_everything's seed (its PL_GLOBAL_SEED), like the rest of the run
        train_seed = (self.seed, run_seed())
        self._train_starts = KeyedStarts(
            0, n_train, num_batches=self.train_batches, seed=train_seed, position=self._position, **sizes
        )
        self._val_starts = RandomStarts(n_train, n_train + n_val, num_batches=self.val_batches, seed=self.seed, **sizes)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """The validation windows: this module holds no separate test split."""
        return self._loader("val")

    def predict_dataloader(self) -> DataLoader:
        """The prompts of ``predict_prompts`` in batches of ``{"index": (B,), "prompt": [B strings]}``."""
        prompts = self.read_prompts()
        items = [{"index": i, "prompt": p} for i, p in enumerate(prompts)]
        return DataLoader(items, batch_size=self.batch_size, shuffle=False)  # type: ignore[arg-type]

    def read_prompts(self) -> list[str]:
        """The prompts of ``predict_prompts``, each checked to encode with the corpus's tokenizer
        (ValueError naming the file, the line and the fault)."""
        if self.predict_prompts is None:
            raise ValueError(
                "tzoo predict for the lm task needs prompts: --data.init_args.predict_prompts FILE "
                "(a text file, one prompt a line); the generations are written to generations.jsonl in the run folder"
            )
        path = Path(self.predict_prompts).expanduser()
        lines = _read_utf8(path).splitlines()
        prompts = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                self.tokenizer.encode(line)
            except ValueError as err:
                raise ValueError(
                    f"predict_prompts {str(path)!r} line {number}: {line[:40]!r} cannot be encoded with the corpus's tokenizer: {err}"
                ) from None
            prompts.append(line)
        if not prompts:
            raise ValueError(f"predict_prompts {str(path)!r} holds no prompt (every line is blank): give one prompt a line")
        return prompts

    def _loader(self, split: str) -> DataLoader:
        if self._windows is None:
            self.setup()
        sampler = self._train_starts if split == "train" else self._val_starts
        # batch_size=None: each sampled item is a whole batch of starts, gathered with one
        # numpy index, which keeps the per-batch cost to tens of microseconds.
        workers = self.num_workers
        # Its own generator: otherwise each new iterator draws a worker seed from the global RNG,
        # and a resumed run (which makes one more iterator) would shift dropout's random stream.
        generator = torch.Generator().manual_seed(self.seed)
        return (KeyedLoader if split == "train" else DataLoader)(
            self._windows,
            sampler=sampler,
            batch_size=None,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=generator,
        )

    # --- preparation ------------------------------------------------------------------------

    def _prepared(self) -> Path:
        if self._entry is None or not (self._entry / "meta.json").is_file():
            self._entry = self._prepare()
        return self._entry

    def _prepare(self) -> Path:
        text, name = self._read_corpus()
        if not text.strip():
            raise ValueError(f"corpus {self.corpus!r} is empty (no characters other than whitespace)")
        pretrained, digest = None, None
        if self.tokenizer_kind not in ("char", "bpe"):  # a GPT-2 folder or hub id (downloaded here, once)
            from tzoo.tasks.lm.gpt2 import _TOKENIZER_FILES, gpt2_folder, load_gpt2_tokenizer

            folder = gpt2_folder(self.tokenizer_kind)
            pretrained = load_gpt2_tokenizer(folder)
            digest = hashlib.sha256(b"".join((folder / f).read_bytes() for f in _TOKENIZER_FILES if (folder / f).is_file())).hexdigest()
        identity = {
            "format": _FORMAT,
            "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "tokenizer": "pretrained" if pretrained is not None else self.tokenizer_kind,
            "vocab_size": self.bpe_vocab_size if self.tokenizer_kind == "bpe" else None,
            "val_fraction": self.val_fraction,
        }
        if digest is not None:
            identity["tokenizer_sha256"] = digest
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        label = {"bpe": f"bpe{self.bpe_vocab_size}", "char": "char"}.get(self.tokenizer_kind, "gpt2bpe")
        entry = self.cache_dir / f"{name}-{label}-{key}"
        if not (entry / "meta.json").is_file():
            encode_corpus(text, entry, identity, corpus=self.corpus, tokenizer=pretrained)
        return entry

    def _read_corpus(self) -> tuple[str, str]:
        """(the corpus text, a short name for its cache folder)."""
        corpus = self.corpus
        if corpus in _BUILTIN_CORPORA:
            if self.sha256 is not None:
                raise ValueError(f"sha256 checks a URL or file corpus; built-in corpus {corpus!r} has no file to check")
            return _BUILTIN_CORPORA[corpus](), corpus
        url, sha256, name = None, self.sha256, None
        if corpus in _URL_CORPORA:
            url, known = _URL_CORPORA[corpus]
            sha256, name = sha256 or known, corpus
        elif corpus.startswith(("http://", "https://")):
            url = corpus
        if url is not None:
            path = download(url, self.cache_dir / "downloads", sha256)
            return path.read_text(encoding="utf-8"), name or _slug(Path(urllib.parse.urlparse(url).path).stem)
        path = Path(corpus).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"corpus {corpus!r} is not a named corpus {list(NAMED_CORPORA)}, an http(s) URL, "
                f"or an existing file or folder"
            )
        if sha256 is not None:
            if not path.is_file():
                raise ValueError(f"sha256 checks a single file; corpus {corpus!r} is a folder")
            _check_sha256(path, sha256, str(path))
        return _read_text_path(path), _slug(path.resolve().stem if path.is_file() else path.resolve().name)


def _pretrained_tokenizer(tokenizer: str) -> bool:
    """A GPT-2 folder that exists, or what looks like a hub id (owner/name)."""
    return isinstance(tokenizer, str) and (Path(tokenizer).expanduser().is_dir() or re.fullmatch(r"[\w.-]+/[\w.-]+", tokenizer) is not None)


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name)[:40] or "corpus"


def encode_corpus(text: str, entry: Path, identity: dict[str, Any], *, corpus: str, tokenizer: Tokenizer | None = None) -> None:
    """Build the tokenizer (or take the ``tokenizer`` given: a pretrained one) and write
    ``tokens.npy``, ``tokenizer.json`` and, last, ``meta.json``."""
    cut = int(len(text) * (1 - identity["val_fraction"]))
    if tokenizer is None and identity["tokenizer"] == "char":
        tokenizer = CharTokenizer.from_text(text)
    elif tokenizer is None:
        tokenizer = BPETokenizer.train(text[:cut], vocab_size=identity["vocab_size"])
    train, val = tokenizer.encode(text[:cut]), tokenizer.encode(text[cut:])
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    tokens = np.array(train + val, dtype=dtype)
    with atomic_write(entry / "tokens.npy", "wb") as f:
        np.save(f, tokens)
    tokenizer.save(entry / "tokenizer.json")
    meta = {
        "identity": identity,
        "corpus": corpus,
        "characters": len(text),
        "vocab_size": tokenizer.vocab_size,
        "n_tokens": len(tokens),
        "n_train": len(train),
        "dtype": np.dtype(dtype).name,
    }
    with atomic_write(entry / "meta.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(meta, indent=1))
