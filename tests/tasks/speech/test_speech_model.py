"""Audio tokenizer shapes and masks, CTC collapse, greedy and beam search with and without the KV
cache, padding that never matters, the maximum length, and the alignment picture."""

import pytest
import torch

from tzoo.tasks.speech.alignment import alignment_figure, cross_attention
from tzoo.tasks.speech.decoding import beam_search, ctc_greedy, ctc_log_likelihood, greedy
from tzoo.tasks.speech.model import SpeechTransformer
from tzoo.tasks.speech.tokenizer import BLANK, BOS, EOS, AudioTokenizer, LogMel, text_tokenizer

SMALL = dict(dim=32, encoder_depth=2, decoder_depth=2, num_heads=2, dropout=0.0)


def _model(**kwargs):
    torch.manual_seed(0)
    return SpeechTransformer(12, **{**SMALL, **kwargs}).eval()


def test_logmel_and_subsampling_shapes_and_masks():
    lengths = torch.tensor([16000, 8000, 1234])
    wave = torch.randn(3, 16000)
    mel, frames = LogMel()(wave, lengths)
    assert mel.shape == (3, 80, 101) and frames.tolist() == [101, 51, 8]
    assert (mel[1, :, 51:] == 0).all()  # padded frames are zero
    tok = AudioTokenizer(24).eval()
    nodes, mask = tok(wave, lengths)
    assert nodes.shape == (3, 26, 24)  # 101 frames -> 51 -> 26 nodes: x4 in time
    assert mask.sum(-1).tolist() == [26, 13, 2] == tok.subsampled(frames).tolist()
    assert tok.num_nodes(8000) == 13



def test_subsampling_by_two_keeps_twice_the_nodes_and_padding_never_matters():
    lengths = torch.tensor([16000, 8000, 1234])
    wave = torch.randn(3, 16000)
    tok = AudioTokenizer(24, subsampling=2).eval()
    nodes, mask = tok(wave, lengths)
    assert nodes.shape == (3, 51, 24)  # 101 frames -> 51 nodes: x2 in time, 20 ms per node
    assert mask.sum(-1).tolist() == [51, 26, 4] == tok.subsampled(torch.tensor([101, 51, 8])).tolist()
    assert tok.node_seconds == pytest.approx(0.02)
    noisy = wave.clone()
    noisy[1, 8000:] = 100.0  # what pads the shorter waveform never reaches its nodes
    assert torch.allclose(tok(noisy, lengths)[0][1, :26], nodes[1, :26], atol=1e-5)
    with pytest.raises(ValueError, match=r"subsampling=3 is not one of \(2, 4\)"):
        AudioTokenizer(24, subsampling=3)

def test_specaugment_masks_only_in_training():
    tok = AudioTokenizer(16, time_mask_ratio=0.5)
    wave, lengths = torch.randn(2, 16000), torch.tensor([16000, 16000])
    tok.eval()
    assert torch.equal(tok(wave, lengths)[0], tok(wave, lengths)[0])
    tok.train()
    torch.manual_seed(0)
    assert not torch.equal(tok(wave, lengths)[0], tok.eval()(wave, lengths)[0])


def test_text_tokenizer_specials_come_first():
    tok = text_tokenizer("ab ")
    assert (BLANK, BOS, EOS) == (0, 1, 2) and tok.vocab_size == 6
    assert tok.decode(tok.encode("ab ba")) == "ab ba"
    with pytest.raises(ValueError, match="distinct characters"):
        text_tokenizer("aab")


def test_ctc_greedy_merges_repeats_and_drops_blanks():
    path = torch.tensor([[5, 5, BLANK, 5, 6, 6, BLANK, BLANK, 7, 9]])
    logits = torch.nn.functional.one_hot(path, 12).float()
    assert ctc_greedy(logits, torch.ones(1, 10, dtype=torch.bool)) == [[5, 5, 6, 7, 9]]
    assert ctc_greedy(logits, (torch.arange(10) < 8)[None]) == [[5, 5, 6]]  # padded frames are not read


def test_greedy_and_beam_search_agree_with_and_without_cache():
    model = _model()
    memory, mask = model.encode(torch.randn(2, 12000), torch.tensor([12000, 7000]))
    assert greedy(model, memory, mask, max_len=12) == greedy(model, memory, mask, max_len=12, use_cache=False)
    one = memory[:1]
    for beam in (1, 3):
        cached = beam_search(model, one, beam=beam, max_len=12)
        assert cached == beam_search(model, one, beam=beam, max_len=12, use_cache=False)
    assert beam_search(model, one, beam=1, max_len=12) == greedy(model, one, mask[:1], max_len=12)[0]


def test_beam_search_finds_at_least_the_greedy_score():
    model = _model()
    memory, _ = model.encode(torch.randn(1, 8000), torch.tensor([8000]))

    def score(ids):
        tokens = torch.tensor([[BOS, *ids, EOS]])
        logp = model.decode(tokens[:, :-1], memory, None).log_softmax(-1)
        return logp[0].gather(1, tokens[0, 1:, None]).sum().item()

    best = beam_search(model, memory, beam=4, max_len=8)
    first = greedy(model, memory, torch.ones(1, memory.shape[1], dtype=torch.bool), max_len=8)[0]
    if len(first) < 8:  # greedy ended within max_len: a complete hypothesis the beam also saw
        assert score(best) >= score(first) - 1e-5


def test_ctc_log_likelihood_sums_every_alignment():
    import itertools
    import math

    torch.manual_seed(0)
    logits = torch.randn(4, 3)  # 4 nodes, blank + 2 tokens
    logp = logits.log_softmax(-1)
    hyps = [[1], [1, 2], [2, 2], [], [1, 2, 1, 2, 1]]  # the last cannot fit in 4 nodes
    expected = []
    for hyp in hyps:
        total = 0.0
        for path in itertools.product(range(3), repeat=4):
            if ctc_greedy(torch.nn.functional.one_hot(torch.tensor([path]), 3).float(), torch.ones(1, 4, dtype=torch.bool))[0] == hyp:
                total += math.exp(sum(logp[t, c].item() for t, c in enumerate(path)))
        expected.append(math.log(total) if total else float("-inf"))
    got = ctc_log_likelihood(logits, hyps).tolist()
    assert got[:4] == pytest.approx(expected[:4], abs=1e-4)
    assert got[4] == float("-inf") == expected[4]


def test_ctc_rescoring_picks_among_the_ended_hypotheses(monkeypatch):
    from tzoo.tasks.speech import decoding

    model = _model()
    memory, _ = model.encode(torch.randn(1, 8000), torch.tensor([8000]))
    ctc_logits = model.ctc_head(memory[0])
    seen = []

    def spy(logits, hypotheses):
        scores = ctc_log_likelihood(logits, hypotheses)
        seen.append((hypotheses, scores))
        return scores

    monkeypatch.setattr(decoding, "ctc_log_likelihood", spy)
    plain = beam_search(model, memory, beam=4, max_len=8)
    assert beam_search(model, memory, beam=4, max_len=8, ctc_logits=ctc_logits, ctc_weight=0.0) == plain
    assert not seen  # weight 0: the decoder's score alone, CTC never computed
    rescored = beam_search(model, memory, beam=4, max_len=8, ctc_logits=ctc_logits, ctc_weight=1.0)
    ((hypotheses, scores),) = seen
    assert plain in hypotheses and len(hypotheses) > 1  # the ended hypotheses, the plain pick among them
    assert rescored == hypotheses[int(scores.argmax())]  # weight 1: the CTC head alone ranks them
    with pytest.raises(ValueError, match=r"ctc_weight must be in \[0, 1\].*got 1.5"):
        beam_search(model, memory, ctc_logits=ctc_logits, ctc_weight=1.5)


def test_cross_attention_ignores_padded_frames():
    model = _model()
    wave, lengths = torch.randn(2, 16000), torch.tensor([16000, 9000])
    tokens = torch.tensor([[BOS, 4, 5, 6], [BOS, 7, 8, 9]])
    with torch.no_grad():
        ctc, mask, logits = model(wave, lengths, tokens)
        noisy = wave.clone()
        noisy[1, 9000:] = torch.randn(7000) * 10  # what the batch pads with
        ctc2, _, logits2 = model(noisy, lengths, tokens)
        assert torch.allclose(logits, logits2, atol=1e-5)
        n = int(mask[1].sum())
        assert torch.allclose(ctc[1, :n], ctc2[1, :n], atol=1e-5)
        # and at the decoder itself: encoder output at padded nodes never reaches the text
        memory, mask = model.encode(wave, lengths)
        changed = memory.clone()
        changed[1, n:] = 100.0
        assert torch.allclose(model.decode(tokens, memory, mask), model.decode(tokens, changed, mask), atol=1e-5)
        assert not torch.allclose(model.decode(tokens, memory, None)[1], model.decode(tokens, changed, None)[1])


def test_audio_longer_than_the_maximum_is_a_clear_error():
    model = _model(max_frames=20)
    with pytest.raises(ValueError, match=r"audio of 26 frames \(~1\.0 s\) is longer than the model's maximum of 20 frames.*not chunked"):
        model.encode(torch.randn(1, 16000), torch.tensor([16000]))


def test_bad_model_settings():
    with pytest.raises(ValueError, match="encoder_position='learned' is not one of"):
        SpeechTransformer(12, encoder_position="learned")
    with pytest.raises(ValueError, match="beam must be >= 1"):
        beam_search(_model(), torch.zeros(1, 3, 32), beam=0)


def test_alignment_figure_from_captured_cross_attention(tmp_path):
    model = _model()
    wave = torch.randn(8000)
    attention = cross_attention(model, wave, [4, 5, 6])
    assert attention.shape == (4, 13) and torch.allclose(attention.sum(-1), torch.ones(4))
    path = alignment_figure(model, wave, [4, 5, 6], ["a", "b", " "], tmp_path / "align.png", title="t")
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match=r"decoder layers \[5\] do not exist"):
        cross_attention(model, wave, [4], layers=[5])
