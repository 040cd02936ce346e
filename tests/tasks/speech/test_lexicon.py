"""Lexicon-constrained beam search (``lexicon.py``): the trie's moves, the beam writing only the
lexicon's words (decoder alone, joint, CTC alone), and bad lexicons named (the module
option through ``tzoo predict``: test_speech_module.py)."""

import pytest
import torch

from tzoo.core import TransformerConfig
from tzoo.tasks.speech.corpus import WORDS
from tzoo.tasks.speech.decoding import beam_search
from tzoo.tasks.speech.lexicon import Lexicon, lexicon_words
from tzoo.tasks.speech.model import SpeechConfig, SpeechTransformer
from tzoo.tasks.speech.module import SpeechRecognizer
from tzoo.tasks.speech.tokenizer import BLANK, EOS, text_tokenizer

ALPHABET = " abcdefgh"  # ids: 3 is the space, a = 4 ... h = 11
TOKENS = text_tokenizer(ALPHABET)


def _ids(text):
    return TOKENS.encode(text)


def test_the_trie_allows_only_word_prefixes_and_ends_or_spaces_after_whole_words():
    lexicon = Lexicon(["bad", "ba", "cab", "bad"], TOKENS)  # a repeat counts once
    assert len(lexicon) == 3
    root = 0
    allowed = lexicon.allowed([root])[0]
    assert allowed.nonzero().flatten().tolist() == _ids("bc")  # no space, no end before a word
    node = lexicon.step(root, _ids("b")[0])
    assert lexicon.allowed([node])[0].nonzero().flatten().tolist() == _ids("a")  # "b" is no word
    node = lexicon.step(node, _ids("a")[0])  # "ba" is a word and a prefix of "bad"
    assert lexicon.allowed([node])[0].nonzero().flatten().tolist() == sorted([EOS, *_ids(" d")])
    assert lexicon.step(node, _ids(" ")[0]) == root
    assert not lexicon.allowed([root])[0, BLANK]
    assert lexicon.oov_rate(["bad dog", "cab"]) == pytest.approx(1 / 3)
    assert TOKENS.decode(lexicon.whole_words(_ids("bad ca"))) == "bad"  # cut back to the last whole word
    assert TOKENS.decode(lexicon.whole_words(_ids("ba"))) == "ba" and lexicon.whole_words(_ids("b")) == []


def _model():
    torch.manual_seed(0)
    stack = dict(dim=32, depth=2, num_heads=2, dropout=0.0)
    config = SpeechConfig(alphabet=ALPHABET, encoder=TransformerConfig(**stack), decoder=TransformerConfig(**stack, position="rope"))
    return SpeechTransformer(config).eval()


def _confident_ctc(n, text):
    """CTC logits (n, V) sure of ``text``: each character, then a blank."""
    frames = [t for token in _ids(text) for t in (token, BLANK)]
    logits = torch.zeros(n, TOKENS.vocab_size)
    logits[torch.arange(n), torch.tensor(frames + [BLANK] * (n - len(frames)))] = 30.0
    return logits


@pytest.mark.parametrize("use_cache", [True, False])
def test_the_beam_writes_the_nearest_lexicon_words_where_ctc_hears_a_word_it_lacks(use_cache):
    model = _model()
    encoded, _ = model.encode(torch.randn(1, 16000), torch.tensor([16000]))
    ctc = _confident_ctc(encoded.shape[1], "bad cag")  # "cag" is no word: "cab" is one substitution away
    lexicon = Lexicon(["bad", "cab", "fed"], TOKENS)
    free = beam_search(model, encoded, beam=4, max_len=20, ctc_logits=ctc, ctc_weight=1.0, use_cache=use_cache)
    assert TOKENS.decode(free) == "bad cag"
    for weight, pre_beam in ((1.0, None), (0.7, 12)):  # every token CTC-scored
        got = beam_search(model, encoded, beam=4, max_len=20, ctc_logits=ctc, ctc_weight=weight, pre_beam=pre_beam,
                          use_cache=use_cache, lexicon=lexicon)  # fmt: skip
        assert TOKENS.decode(got) == "bad cab", weight
    # a pre-beam of 2: the untrained decoder's two favourites among the allowed tokens (masked before
    # it picks, or it would pick tokens the lexicon forbids and be left with none)
    got = TOKENS.decode(beam_search(model, encoded, beam=4, max_len=20, ctc_logits=ctc, ctc_weight=0.7, pre_beam=2,
                                    use_cache=use_cache, lexicon=lexicon))  # fmt: skip
    assert got and set(got.split()) <= lexicon.words, got


def test_the_decoder_alone_writes_only_lexicon_words():
    model = _model()  # untrained: left to itself it spells nonsense
    lexicon = Lexicon(["bad", "cab", "fed", "he", "a"], TOKENS)
    for seed in range(4):
        torch.manual_seed(seed)
        encoded, _ = model.encode(torch.randn(1, 8000), torch.tensor([8000]))
        got = TOKENS.decode(beam_search(model, encoded, beam=3, max_len=30, lexicon=lexicon))
        assert got and got == got.strip() and "  " not in got
        assert set(got.split()) <= lexicon.words, got


def test_a_search_cut_short_by_max_len_returns_whole_words_only():
    model = _model()
    encoded, _ = model.encode(torch.randn(1, 16000), torch.tensor([16000]))
    ctc = _confident_ctc(encoded.shape[1], "bad cab")
    search = dict(beam=2, max_len=6, ctc_logits=ctc, ctc_weight=1.0)  # "bad ca" by then, not ended
    assert TOKENS.decode(beam_search(model, encoded, **search)) == "bad ca"
    assert TOKENS.decode(beam_search(model, encoded, **search, lexicon=Lexicon(["bad", "cab"], TOKENS))) == "bad"
    assert TOKENS.decode(beam_search(model, encoded, **search, lexicon=Lexicon(["bad", "cab", "ca"], TOKENS))) == "bad ca"


def test_named_lexicons_hold_the_corpus_words_and_the_training_plays_words():
    words, training = lexicon_words("words"), lexicon_words("training")
    assert set(words) == set(WORDS) | set("0123456789")
    assert set(words) < set(training) and "thou" in training and len(training) > 5 * len(words)
    with pytest.raises(ValueError, match=r"lexicon name 'plays' is not one of \('words', 'training'\)"):
        lexicon_words("plays")


def test_bad_lexicons_are_named_with_what_is_valid(tmp_path):
    with pytest.raises(ValueError, match="lexicon: word 'caf\u00e9' has character\\(s\\) \\['\u00e9'\\] outside the model's alphabet ' abcdefgh'"):
        Lexicon(["bad", "caf\u00e9"], TOKENS)
    with pytest.raises(ValueError, match=r"lexicon: word 'fig' has character\(s\) \['i'\] outside the model's alphabet"):
        Lexicon(["fig"], TOKENS)
    with pytest.raises(ValueError, match=r"lexicon: word 'a b' is empty or holds white space"):
        Lexicon(["a b"], TOKENS)
    with pytest.raises(ValueError, match="lexicon holds no words: a lexicon needs at least one"):
        Lexicon([], TOKENS)
    missing = tmp_path / "nowords.txt"
    with pytest.raises(FileNotFoundError, match=r"lexicon '.*nowords\.txt' is neither a word-list file nor one of the names \('words', 'training'\)"):
        Lexicon.load(missing, TOKENS)
    (tmp_path / "words.txt").write_text("bad\ncab fed\n")
    assert Lexicon.load(tmp_path / "words.txt", TOKENS).words == {"bad", "cab", "fed"}
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match=r"lexicon file '.*empty\.txt' holds no words: a lexicon needs at least one"):
        Lexicon.load(tmp_path / "empty.txt", TOKENS)
    (tmp_path / "odd.txt").write_text("bad\nhigh\n")
    with pytest.raises(ValueError, match=r"lexicon file '.*odd\.txt': word 'high' has character\(s\) \['i'\] outside"):
        Lexicon.load(tmp_path / "odd.txt", TOKENS)
    stack = dict(dim=32, depth=1, num_heads=2)
    net = SpeechConfig(alphabet=ALPHABET, encoder=TransformerConfig(**stack), decoder=TransformerConfig(**stack, position="rope"))
    with pytest.raises(ValueError, match=r"lexicon 'words': word 'the' has character\(s\) \['t'\] outside the model's alphabet"):
        SpeechRecognizer(net, lexicon="words")
    with pytest.raises(ValueError, match=r"lexicon='words' constrains the character beam; a Whisper model writes BPE tokens.*set lexicon=None"):
        SpeechRecognizer(net, pretrained="no/such/whisper", lexicon="words")  # refused before the folder is read

