"""bert data: masking statistics, the split by play, labelled files and their bad inputs, cut texts,
the tokenizer shared by pretraining and classification."""

import json
import re

import numpy as np
import pytest

from tzoo.tasks.bert.corpus import GENRES, PLAY_SPLIT, genre_passages, play_genres, read_labelled, read_predict_texts
from tzoo.tasks.bert.data import LabelledTextDataModule, MaskedTextDataModule
from tzoo.tasks.bert.tokenizer import (
    IGNORE,
    SPECIALS,
    build_tokenizer,
    encode_text,
    load_text_tokenizer,
    mask_tokens,
    special_ids,
    tokenizer_to_dict,
)
from tzoo.tasks.text import CharTokenizer


# --- masking ------------------------------------------------------------------------------------


def test_masking_rate_and_80_10_10_split_never_touch_specials_or_padding():
    rng = np.random.default_rng(0)
    V, specials = 1000, np.arange(5)
    ids = rng.integers(5, V, size=(512, 128))
    ids[:, 0], ids[:, 100] = 1, 0  # [CLS] first, [SEP] at 100, then padding
    ids[:, 101:] = 3
    ids[::7, 50] = 4  # a few [UNK]
    maskable = ~np.isin(ids, specials)
    inputs, targets = mask_tokens(ids, maskable=maskable, mask_id=2, random_ids=np.arange(5, V), rng=rng, rate=0.15)
    chosen = targets != IGNORE
    assert not chosen[~maskable].any()  # no special token, no padding is ever chosen ...
    assert (inputs[~maskable] == ids[~maskable]).all()  # ... nor changed
    assert (targets[chosen] == ids[chosen]).all()  # the target is the original token
    assert chosen[maskable].mean() == pytest.approx(0.15, abs=0.005)  # ~63k maskable tokens: sd 0.0014
    masked = chosen & (inputs == 2)
    kept = chosen & (inputs == ids)
    swapped = chosen & ~masked & ~kept
    n = chosen.sum()
    assert masked.sum() / n == pytest.approx(0.8, abs=0.015)
    assert swapped.sum() / n == pytest.approx(0.1, abs=0.01)
    assert kept.sum() / n == pytest.approx(0.1, abs=0.01)
    assert not np.isin(inputs[swapped], specials).any()  # random replacements are never special tokens


def test_every_row_gets_a_chosen_token_and_masks_are_keyed_by_the_batch(tmp_path):
    rng = np.random.default_rng(1)
    ids = np.full((200, 4), 7)
    ids[:, 0], ids[:, -1] = 1, 0
    _, targets = mask_tokens(ids, maskable=~np.isin(ids, [0, 1]), mask_id=2, random_ids=np.arange(5, 9), rng=rng)
    assert ((targets != IGNORE).sum(axis=1) >= 1).all()  # short rows too: a loss in every row
    (tmp_path / "c.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    data = MaskedTextDataModule(str(tmp_path / "c.txt"), block_size=32, batch_size=4, val_batches=2, cache_dir=str(tmp_path / "cache"))
    data.setup("fit")
    val = [b for b in data.val_dataloader()]
    again = [b for b in data.val_dataloader()]
    for (a, ra, ta), (b, rb, tb) in zip(val, again):  # the same validation masks at every evaluation
        assert (a == b).all() and (ta == tb).all() and ra.all()
    inputs, real, targets = val[0]
    ids = special_ids(data.tokenizer)
    assert inputs.shape == (4, 32) and (inputs[:, 0] == ids.cls).all() and (inputs[:, -1] == ids.sep).all()
    assert (targets[:, [0, -1]] == IGNORE).all()  # [CLS] and [SEP] are never chosen


# --- the Shakespeare genre split ----------------------------------------------------------------


def test_split_puts_no_play_in_two_splits_and_every_genre_in_every_split():
    plays = play_genres()
    assert len(plays) == 38 and set(PLAY_SPLIT) <= set(plays)
    seen: dict[str, str] = {}
    for split in ("train", "val", "test"):
        passages = genre_passages(split, lines=4, genres="six")
        for play in {p.source for p in passages}:
            assert seen.setdefault(play, split) == split, f"{play} is in {seen[play]} and {split}"
        for genres, mapping in GENRES.items():  # both labellings have every genre in this split
            labels = {mapping[plays[p.source]] for p in passages}
            assert labels == set(mapping.values()), (split, genres, labels)
    assert set(seen) == set(plays)  # every play is used, once
    # the reference: the fixed split as documented, the other 25 plays training plays
    assert sorted(p for p, s in seen.items() if s != "train") == sorted(PLAY_SPLIT)
    assert sum(s == "train" for s in seen.values()) == 25


def test_passages_are_lines_of_speech_of_one_play():
    passages = genre_passages("val", lines=3)
    assert all(p.text.count("\n") == 2 for p in passages)
    assert {p.label for p in passages} == {"comedy", "history", "tragedy"}
    assert all(p.source in PLAY_SPLIT and PLAY_SPLIT[p.source] == "val" for p in passages)
    assert not any(re.match(r"^[A-Z][A-Z ]+:$", line) for p in passages[:500] for line in p.text.splitlines())  # no speaker lines


# --- labelled files -----------------------------------------------------------------------------


def _write(path, rows, kind):
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        sep = "," if kind == "csv" else "\t"
        keys = list(rows[0])
        path.write_text(sep.join(keys) + "\n" + "".join(sep.join(str(r[k]) for k in keys) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl"])
def test_labelled_files_read_in_order(tmp_path, kind):
    rows = [{"text": "a fine day", "label": "pos"}, {"text": 'a "dire" day', "label": "neg"}, {"text": "meh", "label": 1}]
    if kind == "csv":
        (tmp_path / "f.csv").write_text('text,label\na fine day,pos\n"a ""dire"" day",neg\nmeh,1\n')
        path = tmp_path / "f.csv"
    else:
        path = _write(tmp_path / f"f.{kind}", rows, kind)
    examples = read_labelled(path)
    assert [(e.text, e.label) for e in examples] == [("a fine day", "pos"), ('a "dire" day', "neg"), ("meh", "1")]


def test_label_file_with_an_empty_text_names_the_line(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("text,label\nhello,a\n  ,b\n")
    with pytest.raises(ValueError, match=r"line 3 of .*f\.csv' has an empty text \(text='  '\): every example needs a text"):
        read_labelled(path)


def test_label_file_without_the_label_column_names_the_columns(tmp_path):
    path = _write(tmp_path / "f.tsv", [{"text": "hello", "sentiment": "a"}], "tsv")
    with pytest.raises(ValueError, match=r"f\.tsv' has no 'label' column \(its columns: 'text', 'sentiment'\); name the columns with data.init_args.text_column / label_column"):
        read_labelled(path)
    assert read_labelled(path, label_column="sentiment")[0].label == "a"


def _data(tmp_path, train, test=None, **kwargs):
    files = {"dataset": str(_write(tmp_path / "train.jsonl", train, "jsonl"))}
    if test is not None:
        files["test"] = files["val"] = str(_write(tmp_path / "test.jsonl", test, "jsonl"))
    return LabelledTextDataModule(**files, batch_size=2, **kwargs)


def test_labels_unseen_in_training_are_named(tmp_path):
    train = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(6)]
    data = _data(tmp_path, train, [{"text": "x", "label": "a"}, {"text": "y", "label": "zebra"}])
    with pytest.raises(ValueError, match=r"the val set of .* has labels the training set never has: \['zebra'\] \(first at .*test\.jsonl:2\); training labels: \['a', 'b'\]"):
        data.num_classes


def test_a_single_class_training_set_is_refused(tmp_path):
    data = _data(tmp_path, [{"text": f"t{i}", "label": "only"} for i in range(6)])
    with pytest.raises(ValueError, match=r"has a single class \('only', 5 examples\): a classifier needs at least two labels"):
        data.num_classes


def test_texts_longer_than_max_len_are_cut_with_a_note(tmp_path):
    train = [{"text": "word " * 50 if i == 0 else "short", "label": "ab"[i % 2]} for i in range(8)]
    data = _data(tmp_path, train, train[:2], tokenizer="char", max_len=12)
    with pytest.warns(UserWarning, match=r"note: 1 of 8 train texts are longer than max_len=12 nodes \(\[CLS\] \+ 10 tokens \+ \[SEP\]\) and were cut .* \(the longest has 250\)"):
        data.setup("fit")
    ids, real, labels = next(iter(data.val_dataloader()))
    ids_sp = special_ids(data.tokenizer)
    assert ids.shape[1] == 12 and ids[0, -1] == ids_sp.sep and data.tokenizer.decode(ids[0, 1:-1]) == "word word "


def test_char_tokenizer_turns_unknown_characters_into_unk():
    tokenizer = build_tokenizer("char", "abc ")
    ids = special_ids(tokenizer)
    encoded, n = encode_text(tokenizer, "ab—c", ids, 16)
    assert encoded == [ids.cls, *tokenizer.encode("ab"), ids.unk, *tokenizer.encode("c"), ids.sep] and n == 4


def test_a_tokenizer_of_another_task_is_refused(tmp_path):
    CharTokenizer.from_text("abc").save(tmp_path / "lm_tokenizer.json")  # the LM's: <|endoftext|> only
    with pytest.raises(ValueError, match=r"has no \[SEP\], \[CLS\], \[MASK\], \[PAD\], \[UNK\] token .* use a tokenizer of this task \(bert\)"):
        load_text_tokenizer(tmp_path / "lm_tokenizer.json")


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_pretraining_and_genre_data_build_the_same_tokenizer(tmp_path, kind):
    genre = LabelledTextDataModule(tokenizer=kind, bpe_vocab_size=300)
    mlm = MaskedTextDataModule(tokenizer=kind, bpe_vocab_size=300, cache_dir=str(tmp_path))
    assert tokenizer_to_dict(mlm.tokenizer) == tokenizer_to_dict(genre.tokenizer)
    assert mlm.tokenizer.special_tokens == SPECIALS


def test_predict_texts_from_lines_or_jsonl(tmp_path):
    (tmp_path / "p.txt").write_text("first line\n\n second\n")
    assert read_predict_texts(tmp_path / "p.txt") == [(1, "first line"), (3, " second")]
    _write(tmp_path / "p.jsonl", [{"text": "x", "label": "a"}, {"text": "y"}], "jsonl")
    assert read_predict_texts(tmp_path / "p.jsonl") == [(1, "x"), (2, "y")]
