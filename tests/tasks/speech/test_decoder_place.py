"""Attention greedy decoding that keeps its place: the cross-attention window around where the
previous character looked (``greedy(window=...)``, ``SpeechRecognizer(greedy_window=...)``)."""

import pytest
import torch

from tzoo.core import TransformerConfig, capture_attention
from tzoo.tasks.speech.decoding import _attention_position, _window_mask, greedy
from tzoo.tasks.speech.model import SpeechConfig, SpeechTransformer

STACK = dict(dim=32, depth=2, num_heads=2, dropout=0.0)


def _model():
    torch.manual_seed(0)
    cfg = SpeechConfig(alphabet="abcdefghi", subsampling=2, encoder=TransformerConfig(**STACK),
                       decoder=TransformerConfig(**STACK, position="rope"))  # fmt: skip
    model = SpeechTransformer(cfg).eval()
    with torch.no_grad():  # sharper scores: no near-ties between tokens, and long outputs (no early </s>)
        model.head.weight.mul_(8)
    return model


def _encoded(model):
    return model.encode(torch.randn(2, 12000), torch.tensor([12000, 7000]))  # (2, N, D): the second padded


def test_the_median_of_the_attention_and_the_window_around_it():
    weights = torch.zeros(2, 2, 1, 10)  # (B, H, 1, N)
    weights[0, :, 0, 3] = 1.0  # all on node 3
    weights[1, 0, 0, 2], weights[1, 1, 0, 8] = 1.0, 1.0  # half on 2, half on 8: the median is 2
    assert _attention_position(weights).tolist() == [3, 2]
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 4:] = False  # the second utterance has 4 real nodes
    allowed = _window_mask(torch.tensor([3, 2]), 10, (1, 2), mask)
    assert allowed[0].nonzero().flatten().tolist() == [2, 3, 4, 5]
    assert allowed[1].nonzero().flatten().tolist() == [1, 2, 3]  # never a padded node


def test_windowed_greedy_agrees_with_and_without_the_cache_and_a_wide_window_changes_nothing():
    model = _model()
    encoded, mask = _encoded(model)
    N = encoded.shape[1]
    plain = greedy(model, encoded, mask, max_len=12)
    assert greedy(model, encoded, mask, max_len=12, window=(N, N)) == plain  # a window over everything
    narrow = greedy(model, encoded, mask, max_len=12, window=(1, 2))
    assert narrow == greedy(model, encoded, mask, max_len=12, window=(1, 2), use_cache=False)


def test_after_the_first_character_the_cross_attention_stays_inside_the_window():
    model = _model()
    encoded, mask = _encoded(model)
    names = [f"decoder.blocks.{i}.cross_attn" for i in range(2)]
    with capture_attention(model, names) as maps:
        out = greedy(model, encoded[1:], mask[1:], max_len=10, window=(1, 2))[0]
    steps = [torch.stack([maps[n][t][0, :, -1] for n in names]).mean((0, 1)) for t in range(len(maps[names[0]]))]  # (N,) each
    assert len(steps) >= 3 and len(out) >= 2
    real = int(mask[1].sum())
    assert steps[0][:real].gt(0).sum() > 4  # the first character looks everywhere
    for before, now in zip(steps, steps[1:]):
        centre = int((before.cumsum(-1) < 0.5).sum())
        seen = now.nonzero().flatten()
        assert seen.min() >= centre - 1 and seen.max() <= centre + 2 and seen.max() < real


def test_a_bad_window_is_refused():
    model = _model()
    encoded, mask = _encoded(model)
    for bad in ((0, 0), (-1, 3), (2,)):
        with pytest.raises(ValueError, match=r"window must be \(back, forward\) nodes"):
            greedy(model, encoded, mask, max_len=4, window=bad)


def test_the_recognizer_turns_greedy_window_seconds_into_nodes():
    from tzoo.tasks.speech.module import SpeechRecognizer

    net = SpeechConfig(alphabet="abcdefghi", subsampling=2, encoder=TransformerConfig(**STACK), decoder=TransformerConfig(**STACK))
    torch.manual_seed(0)
    rec = SpeechRecognizer(net, greedy_window=(0.04, 0.1)).eval()
    assert rec.greedy_window == (0.04, 0.1)
    encoded, mask = rec.model.encode(torch.randn(2, 12000), torch.tensor([12000, 7000]))
    ids = greedy(rec.model, encoded, mask, max_len=min(300, encoded.shape[1] + 10), window=(2, 5))  # 20 ms nodes
    assert rec._decode(encoded, mask, method="greedy") == [rec.text(row) for row in ids]
    off = SpeechRecognizer(net, greedy_window=None)
    assert off.greedy_window is None
    with pytest.raises(ValueError, match=r"greedy_window must be \(back, forward\) seconds"):
        SpeechRecognizer(net, greedy_window=(0.0, 0.0))


def test_attention_jumps_count_re_reads_and_skips():
    from tzoo.tasks.speech.alignment import attention_jumps

    attention = torch.zeros(5, 60)
    for t, node in enumerate([2, 5, 1, 30, 32]):  # back by 4, then forward by 29
        attention[t, node] = 1.0
    assert attention_jumps(attention) == (1, 1)
    assert attention_jumps(attention, back=5, forward=30) == (0, 0)


def test_cross_position_tells_the_decoder_where_each_node_is_and_adds_no_weights():
    from tzoo.tasks.speech.decoding import beam_search

    plain = _model()
    torch.manual_seed(0)
    cfg = SpeechConfig(alphabet="abcdefghi", subsampling=2, cross_position="sinusoidal",
                       encoder=TransformerConfig(**STACK), decoder=TransformerConfig(**STACK, position="rope"))  # fmt: skip
    placed = SpeechTransformer(cfg).eval()
    assert SpeechConfig().cross_position == "none"  # a checkpoint saved before it decodes as it did
    assert placed.state_dict().keys() == plain.state_dict().keys()  # a fixed table: the same weights load
    placed.load_state_dict(plain.state_dict())
    wave, lengths, tokens = torch.randn(2, 8000), torch.tensor([8000, 5000]), torch.tensor([[1, 4, 5], [1, 6, 7]])
    ctc_a, _, dec_a, _ = plain(wave, lengths, tokens)
    ctc_b, _, dec_b, _ = placed(wave, lengths, tokens)
    assert torch.equal(ctc_a, ctc_b) and not torch.allclose(dec_a, dec_b)  # the CTC head reads no positions
    encoded, mask = placed.encode(wave, lengths)
    assert greedy(placed, encoded, mask, max_len=8) == greedy(placed, encoded, mask, max_len=8, use_cache=False)
    one = encoded[:1]
    assert beam_search(placed, one, beam=3, max_len=8) == beam_search(placed, one, beam=3, max_len=8, use_cache=False)
    with pytest.raises(ValueError, match=r"net.cross_position='learned' is not one of \('none', 'sinusoidal'\)"):
        SpeechConfig(cross_position="learned")
