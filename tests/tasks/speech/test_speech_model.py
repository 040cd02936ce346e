"""Audio tokenizer shapes and masks, CTC collapse, greedy and beam search with and without the KV
cache (under every core attention option of the decoder), padding that never matters, the maximum
length, the model's config, and the alignment picture."""

import math

import pytest
import torch

from tzoo.core import TransformerConfig
from tzoo.tasks.speech.alignment import alignment_figure, cross_attention
from tzoo.tasks.speech.decoding import CTCPrefixScorer, beam_search, ctc_greedy, ctc_log_likelihood, greedy
from tzoo.tasks.speech.model import SpeechConfig, SpeechTransformer
from tzoo.tasks.speech.tokenizer import BLANK, BOS, EOS, AudioTokenizer, LogMel, text_tokenizer

STACK = dict(dim=32, depth=2, num_heads=2, dropout=0.0)


def _config(*, encoder=None, decoder=None, **kwargs):
    """A small model of 12 tokens (3 special ones and 9 characters)."""
    return SpeechConfig(
        alphabet="abcdefghi",
        encoder=TransformerConfig(**{**STACK, **(encoder or {})}),
        decoder=TransformerConfig(**{**STACK, "position": "rope", **(decoder or {})}),
        **kwargs,
    )


def _model(**kwargs):
    torch.manual_seed(0)
    return SpeechTransformer(_config(**kwargs)).eval()


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



def test_logmel_ignores_the_recording_level_except_at_the_log_floor():
    """Why gain augmentation teaches the model almost nothing (benchmarks/speech_level.py): a gain
    shifts every log-mel value by the same amount, which the per-band normalisation removes; only
    values clamped at the floor (digital silence) move."""
    torch.manual_seed(0)
    wave = 0.1 * torch.randn(1, 16000)
    lengths = torch.tensor([16000])
    mel, _ = LogMel()(wave, lengths)
    for db in (-12.0, 6.0):
        louder, _ = LogMel()(wave * 10 ** (db / 20), lengths)
        assert (louder - mel).abs().max() < 1e-3, db
    gapped = wave.clone()
    gapped[:, 4000:8000] = 0.0  # a quarter second of digital silence: its mel power sits at the floor
    a, _ = LogMel()(gapped, lengths)
    b, _ = LogMel()(gapped * 10 ** (-12 / 20), lengths)
    assert (a - b).abs().max() > 0.1


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


CORE_OPTIONS = {
    "plain": {},
    "window": {"window": 2},
    "top_k": {"top_k": 2},
    "num_memory": {"num_memory": 2},
    "alibi": {"position": "alibi"},
    "no_position": {"position": "none"},
    "gqa": {"num_kv_heads": 1},
    "linear": {"attention": "linear"},  # the beam reorders linear attention's fixed-size state too
}


@pytest.mark.parametrize("option", list(CORE_OPTIONS))
def test_greedy_and_beam_search_agree_with_and_without_cache(option):
    # every core option of the decoder (and of the encoder) works with the KV-cache decoding: the
    # cached search finds exactly what recomputing every step finds
    torch.manual_seed(1)
    model = _model(encoder=CORE_OPTIONS[option], decoder=CORE_OPTIONS[option])
    with torch.no_grad():  # an untrained decoder: sharper scores leave no near-ties between hypotheses
        model.head.weight.mul_(8)
    encoded, mask = model.encode(torch.randn(2, 12000), torch.tensor([12000, 7000]))
    assert greedy(model, encoded, mask, max_len=12) == greedy(model, encoded, mask, max_len=12, use_cache=False)
    one = encoded[:1]
    for beam in (1, 3):
        cached = beam_search(model, one, beam=beam, max_len=12)
        assert cached == beam_search(model, one, beam=beam, max_len=12, use_cache=False)
    assert beam_search(model, one, beam=1, max_len=12) == greedy(model, one, mask[:1], max_len=12)[0]
    ctc = model.ctc_head(one[0])
    joint = [beam_search(model, one, beam=3, max_len=12, ctc_logits=ctc, ctc_weight=0.5, use_cache=c) for c in (True, False)]
    assert joint[0] == joint[1]


def test_the_config_reaches_both_stacks():
    from tzoo.core.positional import ALiBi, RotaryEmbedding

    model = _model(encoder={"window": 3, "position": "alibi"}, decoder={"top_k": 4, "num_memory": 2}, encoder_position="none")
    enc, dec = model.encoder.blocks[0].attn, model.decoder.blocks[0].attn
    assert (enc.window, enc.top_k, isinstance(enc.pos, ALiBi), model.enc_pos) == (3, None, True, None)
    assert (dec.window, dec.top_k, dec.memory.shape[2], isinstance(dec.pos, RotaryEmbedding)) == (None, 4, 2, True)
    assert model.decoder.blocks[0].cross_attn.top_k is None  # the options shape self-attention only
    assert model.vocab_size == 12 and model.ctc_head.out_features == 12


@pytest.mark.parametrize("conv_norm", ["layernorm", "batchnorm"])
def test_a_conformer_encoder_encodes_an_utterance_the_same_alone_and_in_a_batch(conv_norm):
    """Front end and Conformer encoder together: the convolution never reads a neighbour's padding
    (eval mode: BatchNorm uses its running statistics)."""
    from tzoo.core import ConformerBlock

    model = _model(encoder={"block": "conformer", "feed_forward": "silu", "conv_kernel": 7, "conv_norm": conv_norm, "position": "rope"},
                   encoder_position="none", subsampling=2)  # fmt: skip
    assert isinstance(model.encoder.blocks[0], ConformerBlock)
    lengths = torch.tensor([16000, 9731, 3000])
    wave = torch.randn(3, 16000) * 0.3
    encoded, mask = model.encode(wave, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone, alone_mask = model.encode(wave[i : i + 1, :n], lengths[i : i + 1])
        real = int(alone_mask.sum())
        assert real == int(mask[i].sum())
        assert (encoded[i, :real] - alone[0]).abs().max().item() < 1e-4, i


def test_a_decoder_narrower_than_the_encoder_cross_attends_to_it():
    model = _model(encoder={"dim": 48, "num_heads": 4}, decoder={"dim": 16})
    encoded, mask = model.encode(torch.randn(2, 8000), torch.tensor([8000, 5000]))
    assert encoded.shape[-1] == 48
    ctc, _, logits, _ = model(torch.randn(2, 8000), torch.tensor([8000, 5000]), torch.tensor([[BOS, 4], [BOS, 5]]))
    assert ctc.shape[-1] == logits.shape[-1] == 12 and model.embed.weight.shape == (12, 16)
    assert greedy(model, encoded, mask, max_len=6) == greedy(model, encoded, mask, max_len=6, use_cache=False)


def test_beam_search_runs_without_autograd(monkeypatch):
    """beam_search builds no graph however it is called (torch.inference_mode), as greedy does."""
    model = _model()
    encoded, _ = model.encode(torch.randn(1, 8000), torch.tensor([8000]))
    seen = []
    decode = model.decode

    def recording(*args, **kwargs):
        seen.append(torch.is_inference_mode_enabled())
        return decode(*args, **kwargs)

    monkeypatch.setattr(model, "decode", recording)
    beam_search(model, encoded, beam=2, max_len=4)
    assert seen and all(seen)


def test_beam_search_finds_at_least_the_greedy_score():
    model = _model()
    encoded, _ = model.encode(torch.randn(1, 8000), torch.tensor([8000]))

    def score(ids):
        tokens = torch.tensor([[BOS, *ids, EOS]])
        logp = model.decode(tokens[:, :-1], encoded, None).log_softmax(-1)
        return logp[0].gather(1, tokens[0, 1:, None]).sum().item()

    best = beam_search(model, encoded, beam=4, max_len=8)
    first = greedy(model, encoded, torch.ones(1, encoded.shape[1], dtype=torch.bool), max_len=8)[0]
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


def _assert_warps_in_training_only(**warp: float) -> None:
    """An AudioTokenizer with the given warp changes its output in training, and in evaluation
    gives exactly what one without the warp gives."""
    tok = AudioTokenizer(16, freq_masks=0, time_masks=0, **warp)
    wave, lengths = torch.randn(2, 8000), torch.tensor([8000, 6000])
    a, _ = tok.train()(wave, lengths)
    b, _ = tok.eval()(wave, lengths)
    assert not torch.allclose(a, b)  # training warps
    plain = AudioTokenizer(16, freq_masks=0, time_masks=0)
    plain.load_state_dict(tok.state_dict())
    assert torch.equal(plain.eval()(wave, lengths)[0], b)  # evaluation never warps


def test_vtlp_warp_moves_a_tone_by_the_factor_and_only_in_training():
    from tzoo.tasks.speech.tokenizer import vtlp_warp

    sr, F = 16000, 257
    t = torch.arange(sr) / sr
    spec = torch.stft(torch.sin(2 * torch.pi * 1000 * t), 512, 160, window=torch.hann_window(512), return_complex=True).abs() ** 2
    spec = spec[None]  # (1, F, T): a 1 kHz tone
    hz = torch.linspace(0, sr / 2, F)
    peak = lambda s: float(hz[s[0].mean(-1).argmax()])  # noqa: E731
    assert peak(spec) == pytest.approx(1000, abs=20)
    assert torch.allclose(vtlp_warp(spec, torch.tensor([1.0]), sr), spec, atol=1e-6 * float(spec.max()))
    for alpha in (0.9, 1.1, 1.2):
        assert peak(vtlp_warp(spec, torch.tensor([alpha]), sr)) == pytest.approx(1000 * alpha, abs=20)
    # the whole band stays covered: the top bin maps to the top bin
    ramp = hz[None, :, None].expand(2, F, 3)
    warped = vtlp_warp(ramp, torch.tensor([0.9, 1.1]), sr)
    assert torch.allclose(warped[:, -1], torch.full((2, 3), sr / 2)) and (warped.diff(dim=1) >= 0).all()

    _assert_warps_in_training_only(freq_warp=0.1)
    with pytest.raises(ValueError, match=r"freq_warp must be in \[0, 0.5\).*got 0.7"):
        AudioTokenizer(16, freq_warp=0.7)


@pytest.mark.parametrize("scale", [1.0, 400.0])  # 400: logits so far apart that a product of probabilities underflows
def test_ctc_prefix_scores_sum_every_path_that_starts_with_the_prefix(scale):
    import itertools

    torch.manual_seed(0)
    N, V = 4, 5  # 4 nodes; blank, <s>, </s> and two letters (3, 4)
    logits = torch.randn(N, V) * scale
    logp = logits.double().log_softmax(-1)

    def collapse(path):
        out, previous = [], None
        for c in path:
            if c != previous and c != BLANK:
                out.append(c)
            previous = c
        return out

    paths = [(collapse(p), sum(logp[t, c] for t, c in enumerate(p))) for p in itertools.product(range(V), repeat=N)]

    def brute(prefix, whole=False):  # log of the summed probability of the paths that start with (or are) prefix
        chosen = [lp for out, lp in paths if (out == prefix if whole else out[: len(prefix)] == prefix)]
        return torch.logsumexp(torch.stack(chosen), 0).item() if chosen else float("-inf")

    scorer = CTCPrefixScorer(logits)
    state, last, prefix = scorer.initial()[None], torch.tensor([-1]), []
    candidates = torch.tensor([[4, EOS, 3, BLANK, BOS]])  # any order, any subset
    for token in (3, 4, 4):  # a repeat too: 4 4 needs a blank between
        psi, states = scorer.extend(state, last, candidates)
        kept = 2 if token == 3 else 0
        assert psi[0, 2].item() == pytest.approx(brute(prefix + [3]), rel=1e-12, abs=1e-9)
        assert psi[0, 0].item() == pytest.approx(brute(prefix + [4]), rel=1e-12, abs=1e-9)
        assert psi[0, 1].item() == pytest.approx(brute(prefix, whole=True), rel=1e-12, abs=1e-9)
        if scale == 1.0:
            assert psi[0, 1].item() == pytest.approx(ctc_log_likelihood(logits, [prefix]).item(), abs=1e-5)
        assert psi[0, 3].item() == psi[0, 4].item() == float("-inf")  # blank and <s> are never emitted
        state, last, prefix = states(torch.tensor([0]), torch.tensor([kept])), torch.tensor([token]), prefix + [token]
        assert state.shape == (1, 2, N)
    with pytest.raises(ValueError, match=r"CTC logits \(N, V\) with N >= 1, got \(0, 5\)"):
        CTCPrefixScorer(torch.zeros(0, 5))


def test_joint_ctc_beam_search_follows_a_confident_ctc_head(monkeypatch):
    from tzoo.tasks.speech import decoding

    model = _model()  # untrained: its decoder has no idea what was said
    encoded, _ = model.encode(torch.randn(1, 8000), torch.tensor([8000]))
    n = encoded.shape[1]
    spoken = [3, 7, 7, 5]
    ctc_logits = torch.zeros(n, 12)  # a CTC head sure of "3 7 7 5": each token, then blanks
    frames = [3, BLANK, 7, BLANK, 7, BLANK, 5] + [BLANK] * (n - 7)
    ctc_logits[torch.arange(n), torch.tensor(frames)] = 30.0
    calls = []
    original = decoding.CTCPrefixScorer.extend
    monkeypatch.setattr(decoding.CTCPrefixScorer, "extend", lambda self, *a: calls.append(1) or original(self, *a))

    plain = beam_search(model, encoded, beam=4, max_len=10)
    assert beam_search(model, encoded, beam=4, max_len=10, ctc_logits=ctc_logits, ctc_weight=0.0) == plain
    assert not calls and plain != spoken  # weight 0: the decoder alone, CTC never computed
    for weight, pre_beam in ((0.5, 12), (1.0, None)):  # every token scored: the decoder cannot hide one
        for use_cache in (True, False):
            got = beam_search(model, encoded, beam=4, max_len=10, ctc_logits=ctc_logits, ctc_weight=weight,
                              pre_beam=pre_beam, use_cache=use_cache)  # fmt: skip
            assert got == spoken, (weight, use_cache)
    assert calls
    # the default pre-beam (6 of 12 tokens) scores only the decoder's favourites: same with/without cache
    pruned = [beam_search(model, encoded, beam=4, max_len=10, ctc_logits=ctc_logits, ctc_weight=0.5, use_cache=c) for c in (True, False)]
    assert pruned[0] == pruned[1]
    with pytest.raises(ValueError, match=r"ctc_weight must be in \[0, 1\].*got 1.5"):
        beam_search(model, encoded, ctc_logits=ctc_logits, ctc_weight=1.5)
    with pytest.raises(ValueError, match=r"pre_beam must be >= 1.*got 0"):
        beam_search(model, encoded, ctc_logits=ctc_logits, ctc_weight=0.5, pre_beam=0)


class _ScriptedDecoder:
    """A decoder whose next-token log-probabilities depend only on the prefix: "3 4 5 6" then the end,
    each at log 0.7 (an end instead at log 0.3; after "6" the end at log 0.95)."""

    def decode(self, tokens, encoded, mask):
        script = {(): 3, (3,): 4, (3, 4): 5, (3, 4, 5): 6, (3, 4, 5, 6): EOS}
        logits = torch.full((len(tokens), tokens.shape[1], 12), -30.0)
        for row, hyp in enumerate(tokens.tolist()):
            nxt = script.get(tuple(hyp[1:]), EOS)
            logp = {EOS: math.log(0.95)} if nxt == EOS else {nxt: math.log(0.7), EOS: math.log(0.3)}
            for token, value in logp.items():
                logits[row, -1, token] = value  # log_softmax leaves them (the rest is ~e^-30)
        return logits


def test_a_length_penalty_ranks_ended_hypotheses_per_token_and_keeps_a_full_reading():
    model, encoded = _ScriptedDecoder(), torch.zeros(1, 20, 16)
    # summed: the early end (log 0.3 = -1.20) beats the reading (4 x log 0.7 + log 0.95 = -1.48)
    assert beam_search(model, encoded, beam=4, max_len=10, use_cache=False) == []
    for penalty in (0.5, 1.0):  # normalised (a = 1: -1.48 / 5 = -0.30 against -1.20 / 1) the reading wins
        assert beam_search(model, encoded, beam=4, max_len=10, use_cache=False, length_penalty=penalty) == [3, 4, 5, 6]
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=rf"length_penalty must be a finite number >= 0.*got {bad}"):
            beam_search(model, encoded, length_penalty=bad)
    from tzoo.tasks.speech.module import SpeechRecognizer

    with pytest.raises(ValueError, match=r"beam_length_penalty must be a finite number >= 0 \(ended hypotheses ranked by score / \(length \+ 1\) \*\* it; 0: none\), got -1"):
        SpeechRecognizer(beam_length_penalty=-1)
    with pytest.raises(ValueError, match=r"beam_length_penalty must be a finite number >= 0 .*got True"):
        SpeechRecognizer(beam_length_penalty=True)


def test_cross_attention_ignores_padded_frames():
    model = _model()
    wave, lengths = torch.randn(2, 16000), torch.tensor([16000, 9000])
    tokens = torch.tensor([[BOS, 4, 5, 6], [BOS, 7, 8, 9]])
    with torch.no_grad():
        ctc, mask, logits, _ = model(wave, lengths, tokens)
        noisy = wave.clone()
        noisy[1, 9000:] = torch.randn(7000) * 10  # what the batch pads with
        ctc2, _, logits2, _ = model(noisy, lengths, tokens)
        assert torch.allclose(logits, logits2, atol=1e-5)
        n = int(mask[1].sum())
        assert torch.allclose(ctc[1, :n], ctc2[1, :n], atol=1e-5)
        # and at the decoder itself: encoder output at padded nodes never reaches the text
        encoded, mask = model.encode(wave, lengths)
        changed = encoded.clone()
        changed[1, n:] = 100.0
        assert torch.allclose(model.decode(tokens, encoded, mask), model.decode(tokens, changed, mask), atol=1e-5)
        assert not torch.allclose(model.decode(tokens, encoded, None)[1], model.decode(tokens, changed, None)[1])


@pytest.mark.parametrize("samples", [1, 100, 256, 257])
def test_a_clip_shorter_than_the_fft_window_is_transcribed(samples):
    # (center=True pads 256 samples by reflection at each end: 256 or fewer crashed in torch's padding)
    model = _model()
    encoded, mask = model.encode(torch.randn(1, samples) * 0.1, torch.tensor([samples]))
    assert encoded.shape[:2] == mask.shape and mask.all() and torch.isfinite(encoded).all()
    assert isinstance(greedy(model, encoded, mask, max_len=4)[0], list)
    # its frames come from its true length, not from the padded one
    mel, frames = LogMel()(torch.randn(1, samples), torch.tensor([samples]))
    assert mel.shape[-1] >= frames.item() == samples // 160 + 1


def test_audio_longer_than_the_maximum_is_a_clear_error():
    model = _model(max_frames=20)
    with pytest.raises(ValueError, match=r"audio of 26 frames \(~1\.0 s\) is longer than the model's maximum of 20 frames.*not chunked"):
        model.encode(torch.randn(1, 16000), torch.tensor([16000]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(encoder_position="learned"), r"net.encoder_position='learned' is not one of \('sinusoidal', 'whisper', 'none'\)"),
    (dict(encoder_position="rope"), r"net.encoder_position='rope' is not one of .*relative positions are net.encoder.position \('rope', 'alibi'\)"),
    (dict(alphabet="aab"), r"net.alphabet must be distinct characters \(at least one\), got 'aab'"),
    (dict(alphabet=""), r"net.alphabet must be distinct characters"),
    (dict(sample_rate=0), r"net.sample_rate must be an integer >= 1, got 0"),
    (dict(max_frames=0), r"net.max_frames must be an integer >= 1, got 0"),
    (dict(freq_masks=-1), r"net.freq_masks must be an integer >= 0, got -1"),
    (dict(subsampling=3), r"net.subsampling=3 is not one of \(2, 4\)"),
])
def test_bad_model_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpeechConfig(**kwargs)


def test_bad_beam_width():
    with pytest.raises(ValueError, match="beam must be >= 1"):
        beam_search(_model(), torch.zeros(1, 3, 32), beam=0)


def test_alignment_figure_from_captured_cross_attention(tmp_path):
    model = _model()
    wave = torch.randn(8000)
    attention = cross_attention(model, wave, [4, 5, 6])
    assert attention.shape == (4, 13) and torch.allclose(attention.sum(-1), torch.ones(4))
    path = alignment_figure(model, wave, [4, 5, 6], ["a", "b", " "], tmp_path / "align.png", title="t")
    assert path.stat().st_size > 1000
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty transcript draws without matplotlib's identical-limits warning
        assert alignment_figure(model, wave, [], [], tmp_path / "empty.png").stat().st_size > 1000
    with pytest.raises(ValueError, match=r"decoder layers \[5\] do not exist"):
        cross_attention(model, wave, [4], layers=[5])


def test_formant_warp_moves_each_formant_region_by_its_own_factor():
    from tzoo.tasks.speech.tokenizer import FORMANT_KNOTS_HZ, vtlp_warp

    sr, F = 16000, 513
    hz = torch.linspace(0, sr / 2, F)
    # two tones, at the first and the third knot (500 Hz and 2.5 kHz), as (1, F, 1) power spectra
    tones = torch.stack([torch.exp(-0.5 * ((hz - f) / 15) ** 2) for f in (FORMANT_KNOTS_HZ[0], FORMANT_KNOTS_HZ[2])])
    spec = tones.sum(0)[None, :, None]
    peaks = lambda s: [float(hz[(s[0, :, 0] * (abs(hz - f) < 700)).argmax()]) for f in (500, 2500)]  # noqa: E731
    ones = torch.ones(1, 3)
    assert torch.allclose(vtlp_warp(spec, torch.tensor([1.0]), sr, formants=ones), spec, atol=1e-5)
    moved = vtlp_warp(spec, torch.tensor([1.0]), sr, formants=torch.tensor([[0.8, 1.0, 1.15]]))
    first, third = peaks(moved)
    assert first == pytest.approx(400, abs=20) and third == pytest.approx(2875, abs=20)  # each by its own factor
    with_global = vtlp_warp(spec, torch.tensor([1.1]), sr, formants=torch.tensor([[0.8, 1.0, 1.15]]))
    assert peaks(with_global)[0] == pytest.approx(440, abs=20)  # on top of the global factor
    # any factors keep the warp monotone and the band covered
    ramp = hz[None, :, None].expand(4, F, 2)
    warped = vtlp_warp(ramp, torch.tensor([0.8, 1.2, 0.9, 1.2]), sr, formants=torch.tensor([[1.4, 0.6, 1.4]] * 4))
    assert (warped.diff(dim=1) >= -1e-3).all() and torch.allclose(warped[:, -1], torch.full((4, 2), sr / 2))

    _assert_warps_in_training_only(formant_warp=0.15)
    with pytest.raises(ValueError, match=r"formant_warp must be in \[0, 0.5\).*got -0.1"):
        AudioTokenizer(16, formant_warp=-0.1)


def test_intermediate_ctc_reads_the_named_encoder_layers_with_the_output_head():
    """net.inter_ctc: the CTC head's logits on the encoder's nodes after the named blocks, through
    the stack's final norm (Lee & Watanabe 2021); encode() and inference do not change."""
    model = _model(encoder={"depth": 3}, inter_ctc=[1, 2])
    wave, lengths, tokens = torch.randn(2, 9000), torch.tensor([9000, 6000]), torch.tensor([[BOS, 4, 5], [BOS, 6, 7]])
    with torch.no_grad():
        out = model(wave, lengths, tokens)
        nodes, mask = model.frontend(wave, lengths)
        x = model.enc_pos(nodes)
        by_hand = []
        for block in model.encoder.blocks:
            x = block(x, key_padding_mask=mask)
            by_hand.append(model.ctc_head(model.encoder.norm(x)))
        assert len(out.inter_ctc) == 2
        for ours, theirs in zip(out.inter_ctc, by_hand[:2]):
            assert torch.allclose(ours, theirs, atol=1e-5)
        assert torch.allclose(out.ctc, by_hand[2], atol=1e-5)
        assert (out.inter_ctc[0] - out.ctc).abs().max() > 1e-4  # another layer, other logits
        encoded, _ = model.encode(wave, lengths)
        assert torch.equal(model.ctc_head(encoded), out.ctc)
        assert _model(encoder={"depth": 3})(wave, lengths, tokens).inter_ctc == []


def test_self_conditioned_ctc_feeds_each_named_layers_prediction_to_the_next_layer():
    """net.inter_ctc_condition: after a named layer, the nodes go on as x + W softmax(ctc_head(norm(x)))
    (Nozaki & Komatsu 2021), in encode() (inference) as in training."""
    model = _model(encoder={"depth": 3}, inter_ctc=[1], inter_ctc_condition=True)
    wave, lengths, tokens = torch.randn(2, 9000), torch.tensor([9000, 6000]), torch.tensor([[BOS, 4, 5], [BOS, 6, 7]])
    with torch.no_grad():
        out = model(wave, lengths, tokens)
        nodes, mask = model.frontend(wave, lengths)
        x = model.encoder.blocks[0](model.enc_pos(nodes), key_padding_mask=mask)
        h = model.encoder.norm(x)
        x = x + model.condition(model.ctc_head(h).softmax(-1))
        for block in model.encoder.blocks[1:]:
            x = block(x, key_padding_mask=mask)
        assert torch.allclose(out.inter_ctc[0], model.ctc_head(h), atol=1e-5)
        assert torch.allclose(out.ctc, model.ctc_head(model.encoder.norm(x)), atol=1e-5)
        encoded, _ = model.encode(wave, lengths)  # inference conditions too
        assert torch.allclose(model.ctc_head(encoded), out.ctc, atol=1e-6)
        plain = _model(encoder={"depth": 3}, inter_ctc=[1])
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("condition.")})
        assert (plain.encode(wave, lengths)[0] - encoded).abs().max() > 1e-4  # the conditioning changed the output


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"inter_ctc_condition": True}, r"net.inter_ctc_condition=True conditions on the layers net.inter_ctc names, and it names none"),
        ({"inter_ctc": [0]}, r"net.inter_ctc=\[0\] must be a list of encoder layers in 1..1 \(net.encoder.depth=2\)"),
        ({"inter_ctc": [2]}, r"net.inter_ctc=\[2\] must be a list of encoder layers in 1..1"),
        ({"inter_ctc": ["1"]}, r"net.inter_ctc=\['1'\] must be a list of encoder layers"),
        ({"inter_ctc": [1], "ctc": False}, r"net.inter_ctc=\[1\] needs the CTC head that reads them: set net.ctc=True or net.inter_ctc=\[\]"),
    ],
)
def test_bad_inter_ctc_layers_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _config(**kwargs)
