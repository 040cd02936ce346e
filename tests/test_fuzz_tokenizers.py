"""Fuzzing the tokenizers (hypothesis): arbitrary input never fails with anything but the
documented errors, and text tokenizers round-trip."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tzoo.tasks.text import EOT, BPETokenizer, CharTokenizer
from tzoo.tasks.vision.tokenizer import PatchTokenizer

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# any code point, surrogates included: a Python str may hold a lone surrogate (from a bad decode)
ANY_TEXT = st.text(st.characters(codec=None) | st.characters(categories=["Cs"]), max_size=200)


@functools.cache
def bpe() -> BPETokenizer:
    return BPETokenizer.train("To be, or not to be, that is the question.\n" * 30 + "ünïcödé 日本語 🙂", vocab_size=300)


# --- character tokenizer ------------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=300))
def test_char_round_trips_any_text_of_its_alphabet(text):
    tok = CharTokenizer.from_text(text + "x")
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode(tok.encode(text + EOT + text)) == text + EOT + text  # the special token too


@FUZZ
@given(ANY_TEXT)
def test_char_encode_of_arbitrary_text_is_ids_or_the_documented_error(text):
    tok = CharTokenizer.from_text("abc \n")
    try:
        ids = tok.encode(text)
    except ValueError as err:
        assert "cannot encode character(s)" in str(err) and "not in this tokenizer's vocabulary" in str(err)
    else:
        assert tok.decode(ids) == text


@FUZZ
@given(st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=50))
def test_decode_of_arbitrary_ids_is_text_or_the_documented_error(ids):
    for tok in (CharTokenizer.from_text("abc"), bpe()):
        try:
            text = tok.decode(ids)
        except ValueError as err:
            assert f"valid ids are 0..{tok.vocab_size - 1}" in str(err)
            assert any(not 0 <= i < tok.vocab_size for i in ids)
        else:
            assert isinstance(text, str)


# --- byte-level BPE -----------------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=300))
def test_bpe_round_trips_any_text(text):
    tok = bpe()
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


@FUZZ
@given(ANY_TEXT)
def test_bpe_encode_of_arbitrary_strings_round_trips_or_names_the_surrogate(text):
    tok = bpe()
    try:
        ids = tok.encode(text)
    except ValueError as err:
        assert "a lone surrogate is not valid Unicode text" in str(err)
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    else:
        assert tok.decode(ids) == text


# --- vision patch tokenizer ---------------------------------------------------------------------

PATCH = PatchTokenizer(8, patch_size=2, in_channels=1)
ANY_SHAPE = st.lists(st.integers(min_value=0, max_value=6), min_size=0, max_size=5).map(tuple)
IMAGE_SHAPE = st.tuples(st.integers(0, 3), st.integers(1, 2), st.integers(0, 4).map(lambda h: 2 * h), st.integers(0, 4).map(lambda w: 2 * w))
SHAPES = ANY_SHAPE | IMAGE_SHAPE
DTYPES = st.sampled_from(["float32", "float64", "float16", "uint8", "int64", "bool"])


@FUZZ
@given(SHAPES.flatmap(lambda shape: DTYPES.flatmap(lambda dtype: arrays(dtype, shape))))
def test_patch_tokenizer_takes_any_array_or_gives_the_documented_error(array):
    images = torch.from_numpy(array)
    try:
        with torch.no_grad():
            nodes, grid = PATCH(images)
    except ValueError as err:
        message = str(err)
        assert any(
            part in message
            for part in ("images must be (B, C, H, W)", "channels but the model takes", "does not tile", "image_size must be a positive int",
                         "images must be a floating-point tensor")
        ), message
    else:
        B, _, H, W = images.shape
        assert grid == (H // 2, W // 2) and nodes.shape == (B, 1 + grid[0] * grid[1], 8)
        assert nodes.dtype == torch.float32


@pytest.mark.parametrize("size", [(1, 1, 2, 2), (3, 1, 6, 4)])
def test_patch_tokenizer_keeps_nan_where_the_input_has_it(size):
    images = torch.zeros(size)
    images[0, 0, 0, 0] = float("nan")
    nodes, _ = PATCH(images)
    assert torch.isnan(nodes[0, 1]).all() and torch.isfinite(nodes[1:]).all()
