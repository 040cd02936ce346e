"""Text -> token ids: a character tokenizer and a byte-level BPE tokenizer, shared by every task
that reads text (the LM, speech transcripts, any plugin).

Both share one interface (``Tokenizer``): ``encode``/``decode``, ``vocab_size``, ``eot_id``,
``special_tokens``, and ``save``/``load`` to ONE JSON file. ``load_tokenizer`` reads either kind
back; loading only parses JSON, it never runs code (unlike a pickle).

Special tokens come first in the vocabulary (ids 0, 1, ...); the first one marks end of text.
A special token's string inside the text is encoded as its special id.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from tzoo.tasks.files import atomic_write

__all__ = ["BPETokenizer", "CharTokenizer", "Tokenizer", "load_tokenizer"]

EOT = "<|endoftext|>"
_VERSION = 1


@runtime_checkable
class Tokenizer(Protocol):
    """What the language model, the data module and the sampler rely on."""

    kind: str

    @property
    def vocab_size(self) -> int: ...

    @property
    def eot_id(self) -> int: ...

    @property
    def special_tokens(self) -> tuple[str, ...]: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Any) -> str: ...

    def save(self, path: str | os.PathLike[str]) -> None: ...


# --- character tokenizer ------------------------------------------------------------------------


class CharTokenizer:
    """One token per character of the corpus it was built from (plus the special tokens)."""

    kind = "char"

    def __init__(self, chars: Sequence[str], *, special_tokens: Sequence[str] = (EOT,)) -> None:
        self._specials = _check_special_tokens(special_tokens)
        bad = [c for c in chars if len(c) != 1]
        if bad:
            raise ValueError(f"chars must be single characters, got {bad[:5]!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("chars must not repeat a character")
        self._chars = tuple(chars)
        self._itos = self._specials + self._chars
        self._stoi = {c: i + len(self._specials) for i, c in enumerate(self._chars)}
        self._special_ids = {s: i for i, s in enumerate(self._specials)}
        # Longest first, so that a special token containing another one wins.
        longest_first = sorted(self._specials, key=len, reverse=True)
        self._special_pattern = re.compile("|".join(re.escape(token) for token in longest_first))

    @classmethod
    def from_text(cls, text: str, *, special_tokens: Sequence[str] = (EOT,)) -> CharTokenizer:
        """Vocabulary: the special tokens, then every distinct character of ``text``, sorted."""
        return cls(sorted(set(text)), special_tokens=special_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    @property
    def eot_id(self) -> int:
        return 0

    @property
    def special_tokens(self) -> tuple[str, ...]:
        return self._specials

    @property
    def chars(self) -> tuple[str, ...]:
        return self._chars

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece, is_special in self._split_specials(text):
            if is_special:
                ids.append(self._special_ids[piece])
                continue
            try:
                ids.extend([self._stoi[c] for c in piece])
            except KeyError:
                unknown = sorted({c for c in piece if c not in self._stoi})
                shown = ", ".join(repr(c) for c in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
                raise ValueError(
                    f"cannot encode character(s) {shown}: not in this tokenizer's vocabulary of "
                    f"{len(self._chars)} characters, which was built from its corpus "
                    f"(build it from a text containing them, or use the byte-level BPE tokenizer)"
                ) from None
        return ids

    def _split_specials(self, text: str) -> Iterator[tuple[str, bool]]:
        """text -> (piece, is it a special token), in order."""
        start = 0
        for match in self._special_pattern.finditer(text):
            yield text[start : match.start()], False
            yield match.group(), True
            start = match.end()
        yield text[start:], False

    def decode(self, ids: Any) -> str:
        ids = _as_id_list(ids)
        _check_ids(ids, self.vocab_size)
        return "".join([self._itos[i] for i in ids])

    def save(self, path: str | os.PathLike[str]) -> None:
        _write_json(
            path, {"kind": self.kind, "version": _VERSION, "chars": list(self._chars), "special_tokens": list(self._specials)}
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CharTokenizer:
        document = _read_document(path, expected_kind=cls.kind)
        try:
            return cls(document["chars"], special_tokens=document["special_tokens"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a valid tzoo char tokenizer file: {err!r}") from None


# --- byte-level BPE tokenizer -------------------------------------------------------------------


class BPETokenizer:
    """Byte-level BPE (GPT-2 style), trained with HF ``tokenizers``.

    Every byte is in the base alphabet, so any text encodes and decodes back exactly; there is no
    normalizer and no prefix space, and decoding keeps whitespace as it is.
    """

    kind = "bpe"

    def __init__(self, hf_tokenizer: HFTokenizer, *, special_tokens: Sequence[str] = (EOT,)) -> None:
        self._specials = _check_special_tokens(special_tokens)
        self._hf = hf_tokenizer
        ids = [hf_tokenizer.token_to_id(s) for s in self._specials]
        if any(i is None for i in ids):
            raise ValueError(f"special tokens {list(self._specials)} are not all in the BPE vocabulary")
        self._eot_id = ids[0]

    @classmethod
    def train(
        cls,
        text_or_iterator: str | Iterable[str],
        *,
        vocab_size: int = 1024,
        special_tokens: Sequence[str] = (EOT,),
    ) -> BPETokenizer:
        """Learn merges on the text until the vocabulary (256 bytes + specials + merges) has
        ``vocab_size`` entries, or fewer when the text runs out of pairs to merge."""
        specials = _check_special_tokens(special_tokens)
        if vocab_size < 256 + len(specials):
            raise ValueError(
                f"vocab_size={vocab_size} is too small for a byte-level BPE: it needs at least "
                f"256 (bytes) + {len(specials)} (special tokens) = {256 + len(specials)}"
            )
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(specials),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        texts = _chunks(text_or_iterator) if isinstance(text_or_iterator, str) else text_or_iterator
        hf.train_from_iterator(texts, trainer)
        return cls(hf, special_tokens=specials)

    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size()

    @property
    def eot_id(self) -> int:
        return self._eot_id

    @property
    def special_tokens(self) -> tuple[str, ...]:
        return self._specials

    def encode(self, text: str) -> list[int]:
        # Chunks are encoded in parallel; they are cut where the pre-tokenizer would split
        # anyway, so the ids equal those of encoding the whole text in one piece.
        chunks = list(_chunks(text))
        try:
            if len(chunks) <= 1:
                return self._hf.encode(text).ids
            return [i for encoding in self._hf.encode_batch(chunks) for i in encoding.ids]
        except TypeError:  # HF's "TextInputSequence must be str" for text that is not valid UTF-8
            _check_encodable(text)
            raise

    def decode(self, ids: Any) -> str:
        ids = _as_id_list(ids)
        _check_ids(ids, self.vocab_size)  # HF silently drops unknown ids
        return self._hf.decode(ids, skip_special_tokens=False)

    def save(self, path: str | os.PathLike[str]) -> None:
        document = {
            "kind": self.kind,
            "version": _VERSION,
            "special_tokens": list(self._specials),
            "tokenizer": json.loads(self._hf.to_str()),
        }
        _write_json(path, document)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        document = _read_document(path, expected_kind=cls.kind)
        try:
            hf = HFTokenizer.from_str(json.dumps(document["tokenizer"]))
            return cls(hf, special_tokens=document["special_tokens"])
        except Exception as err:  # KeyError, TypeError, or the HF parser's own exception
            raise ValueError(f"{path} is not a valid tzoo BPE tokenizer file: {err}") from None


# --- loading ------------------------------------------------------------------------------------

_KINDS: dict[str, type[CharTokenizer] | type[BPETokenizer]] = {"char": CharTokenizer, "bpe": BPETokenizer}


def load_tokenizer(path: str | os.PathLike[str]) -> CharTokenizer | BPETokenizer:
    """Read a tokenizer written by ``save``, whichever kind it is."""
    kind = _read_document(path)["kind"]
    return _KINDS[kind].load(path)


def _read_document(path: str | os.PathLike[str], expected_kind: str | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {str(path)!r} does not exist")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a tzoo tokenizer file (not JSON: {err})") from None
    kind = document.get("kind") if isinstance(document, dict) else None
    if kind not in _KINDS:
        raise ValueError(f"{path} is not a tzoo tokenizer file: its 'kind' is {kind!r}, not one of {sorted(_KINDS)}")
    if expected_kind is not None and kind != expected_kind:
        raise ValueError(f"{path} holds a {kind!r} tokenizer, not a {expected_kind!r} one: use load_tokenizer()")
    if document.get("version") != _VERSION:
        version = document.get("version")
        raise ValueError(f"{path} has tokenizer format version {version!r}; this tzoo reads version {_VERSION}")
    return document


def _write_json(path: str | os.PathLike[str], document: dict[str, Any]) -> None:
    """Write through a temporary file in the same folder, so a reader never sees half a file."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(document, f, ensure_ascii=False)


# --- helpers ------------------------------------------------------------------------------------


def _check_special_tokens(special_tokens: Sequence[str]) -> tuple[str, ...]:
    specials = tuple(special_tokens)
    if isinstance(special_tokens, str) or not specials:
        raise ValueError(
            f"special_tokens must be a non-empty sequence of strings (the first marks end of text), got {special_tokens!r}"
        )
    if not all(isinstance(s, str) and s for s in specials) or len(set(specials)) != len(specials):
        raise ValueError(f"special_tokens must be distinct non-empty strings, got {list(specials)!r}")
    return specials


# A newline between two non-space characters is a pre-token of its own for the GPT-2 split
# pattern, so cutting right after it changes no pre-token (and hence no token id).
_SAFE_CUT = re.compile(r"(?<=\S)\n(?=\S)")


def _chunks(text: str, size: int = 1 << 16) -> Iterator[str]:
    start = 0
    while start < len(text):
        match = _SAFE_CUT.search(text, start + size)
        end = match.end() if match else len(text)
        yield text[start:end]
        start = end


def _check_encodable(text: str) -> None:
    """A Python str can hold a lone surrogate (e.g. from ``bytes.decode(errors="surrogateescape")``),
    which is not Unicode text and has no UTF-8 bytes for a byte-level tokenizer to encode."""
    if not isinstance(text, str):
        raise ValueError(f"encode takes a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"cannot encode {text[err.start]!r} at index {err.start}: a lone surrogate is not valid Unicode text "
            f"(decode the bytes with errors='replace' instead)"
        ) from None


def _as_id_list(ids: Any) -> list[int]:
    """list / tuple / torch tensor / numpy array / int -> list of ints (no torch import needed)."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    ids = list(ids)
    if ids and not all(isinstance(i, int) for i in ids):
        raise ValueError(f"decode takes a flat sequence of integer ids, got elements like {ids[0]!r}")
    return ids


def _check_ids(ids: list[int], vocab_size: int) -> None:
    if ids and (min(ids) < 0 or max(ids) >= vocab_size):
        bad = [i for i in ids if not 0 <= i < vocab_size]
        raise ValueError(f"cannot decode id {bad[0]}: valid ids are 0..{vocab_size - 1} (vocab_size={vocab_size})")
