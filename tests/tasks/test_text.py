"""Char and byte-level BPE tokenizers: exact round trips, special tokens, save/load, errors."""

import json

import numpy as np
import pytest
import torch

from tzoo.tasks.lm.data import shakespeare_text
from tzoo.tasks.text import BPETokenizer, CharTokenizer, Tokenizer, load_tokenizer

# Unicode (accents, CJK, emoji), tabs, CRLF, runs of spaces and newlines, leading/trailing space.
TRICKY = "  Héllo,\twörld!  \n\n\n  日本語 😀 x\r\n   end  \n "


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return shakespeare_text()


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(TRICKY * 20 + "the quick brown fox jumps over the lazy dog\n" * 50, vocab_size=300)


def test_char_round_trip_is_exact():
    tok = CharTokenizer.from_text(TRICKY)
    ids = tok.encode(TRICKY)
    assert len(ids) == len(TRICKY)
    assert tok.decode(ids) == TRICKY
    assert tok.vocab_size == 1 + len(set(TRICKY))
    assert tok.chars == tuple(sorted(set(TRICKY)))


def test_bpe_round_trip_is_exact_even_on_unseen_text(bpe):
    assert bpe.decode(bpe.encode(TRICKY)) == TRICKY
    unseen = "Ωmega ∑ 🚀\u00a0nbsp \x00 tab\t\t"
    assert bpe.decode(bpe.encode(unseen)) == unseen
    assert bpe.encode("") == [] and bpe.decode([]) == ""


def test_char_round_trip_on_shakespeare(shakespeare):
    tok = CharTokenizer.from_text(shakespeare)
    assert tok.decode(tok.encode(shakespeare)) == shakespeare


def test_bpe_on_shakespeare_round_trips_and_compresses(shakespeare):
    tok = BPETokenizer.train(shakespeare[:200_000], vocab_size=512)
    assert tok.vocab_size == 512
    sample = shakespeare[-50_000:]  # not seen in training
    ids = tok.encode(sample)
    assert tok.decode(ids) == sample
    assert len(ids) < 0.6 * len(sample)
    # encode() cuts long texts into chunks; the ids are those of encoding it whole
    assert tok.encode(shakespeare[:200_000]) == tok._hf.encode(shakespeare[:200_000]).ids


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_special_token_in_text_is_its_id(kind, bpe):
    tok = CharTokenizer.from_text(TRICKY + "ab") if kind == "char" else bpe
    text = "a<|endoftext|>b"
    ids = tok.encode(text)
    assert tok.eot_id == 0 and tok.special_tokens == ("<|endoftext|>",)
    assert ids.count(tok.eot_id) == 1
    assert tok.decode(ids) == text


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_save_load_gives_identical_encodes(kind, bpe, tmp_path):
    tok = CharTokenizer.from_text(TRICKY) if kind == "char" else bpe
    path = tmp_path / "tok.json"
    tok.save(path)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["kind"] == kind and document["version"] == 1
    loaded = load_tokenizer(path)
    assert type(loaded) is type(tok) and isinstance(loaded, Tokenizer)
    assert loaded.encode(TRICKY) == tok.encode(TRICKY)
    assert loaded.vocab_size == tok.vocab_size and loaded.eot_id == tok.eot_id
    assert type(tok).load(path).encode(TRICKY) == tok.encode(TRICKY)
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]  # no temporary file left


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_decode_takes_lists_tensors_and_arrays(kind, bpe):
    tok = CharTokenizer.from_text(TRICKY) if kind == "char" else bpe
    ids = tok.encode(TRICKY)
    assert tok.decode(torch.tensor(ids)) == tok.decode(np.array(ids, dtype=np.uint16)) == TRICKY


def test_char_unknown_character_is_named():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"'z'.*vocabulary of 3 characters"):
        tok.encode("abz")


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_decode_unknown_id_names_it_and_the_range(kind, bpe):
    tok = CharTokenizer.from_text("abc") if kind == "char" else bpe
    with pytest.raises(ValueError, match=rf"id {tok.vocab_size}\b.*0\.\.{tok.vocab_size - 1}"):
        tok.decode([1, tok.vocab_size])
    with pytest.raises(ValueError, match="id -1"):
        tok.decode([-1])


def test_bpe_vocab_size_too_small():
    with pytest.raises(ValueError, match="vocab_size=100.*257"):
        BPETokenizer.train("hello", vocab_size=100)


def test_bad_special_tokens():
    with pytest.raises(ValueError, match="special_tokens"):
        CharTokenizer.from_text("abc", special_tokens=())


@pytest.mark.parametrize(
    "content", ["not json at all {", json.dumps({"kind": "wordpiece", "version": 1}), json.dumps([1, 2])]
)
def test_load_tokenizer_rejects_other_files(tmp_path, content):
    path = tmp_path / "garbage.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="garbage.json"):
        load_tokenizer(path)


def test_load_tokenizer_wrong_class(tmp_path):
    path = tmp_path / "char.json"
    CharTokenizer.from_text("abc").save(path)
    with pytest.raises(ValueError, match="'char' tokenizer, not a 'bpe'"):
        BPETokenizer.load(path)


def test_load_tokenizer_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_tokenizer(tmp_path / "nope.json")
