"""Test-time frequency warping (``vtln.py``, ``SpeechRecognizer(warp_search=...)``): each utterance
keeps the encoding at the warp whose CTC best path is surest, batched or alone, or its speaker's
(``warp_search_by="speaker"``, pooled over the speaker's utterances); bad factors and scopes named."""

import pytest
import torch

from tzoo.core import TransformerConfig
from tzoo.tasks.speech.model import SpeechConfig, SpeechTransformer
from tzoo.tasks.speech.module import SpeechRecognizer
from tzoo.tasks.speech.corpus import speaker_of
from tzoo.tasks.speech.vtln import SpeakerWarps, check_alphas, check_scope, warp_search

STACK = dict(dim=32, depth=2, num_heads=2, dropout=0.0)
NET = SpeechConfig(alphabet=" abcdefgh", encoder=TransformerConfig(**STACK), decoder=TransformerConfig(**STACK, position="rope"))
ALPHAS = [0.85, 1.0, 1.15]


def _batch():
    torch.manual_seed(1)
    t = torch.arange(16000) / 16000
    # two "voices": harmonics of 120 and 210 Hz under different formant-like envelopes, and noise
    a = sum(torch.sin(2 * torch.pi * 120 * k * t) / k for k in range(1, 20)) + 0.1 * torch.randn(16000)
    b = sum(torch.sin(2 * torch.pi * 210 * k * t) * (1.0 if k in (3, 4, 11) else 0.2) for k in range(1, 12)) + 0.1 * torch.randn(16000)
    wave = torch.stack([a, b.clone()])
    lengths = torch.tensor([16000, 9000])
    wave[1, 9000:] = 0.7  # past its end: must not matter
    return wave, lengths


def _alone(model, wave, length, alpha):
    """One utterance at one warp, unbatched: its encoder output (1, N, D) and CTC confidence."""
    mel, frames = model.frontend.logmel(wave[None, :length], torch.tensor([length]), torch.tensor([alpha]), None)
    encoded, _ = model.encode_nodes(*model.frontend.from_logmel(mel, frames))
    confidence = model.ctc_head(encoded).log_softmax(-1).max(-1).values.mean()
    return encoded, float(confidence)


@torch.inference_mode()
def test_each_utterance_keeps_the_warp_its_ctc_head_is_surest_of_batched_as_alone():
    torch.manual_seed(0)
    model = SpeechTransformer(NET).eval()
    wave, lengths = _batch()
    encoded, mask, chosen = warp_search(model, wave, lengths, ALPHAS)
    for i in range(2):
        alone = [_alone(model, wave[i], int(lengths[i]), a) for a in ALPHAS]
        confidences = [c for _, c in alone]
        best = max(range(len(ALPHAS)), key=confidences.__getitem__)
        assert float(chosen[i]) == pytest.approx(ALPHAS[best]), (i, confidences)
        n = int(mask[i].sum())
        assert n == alone[best][0].shape[1]
        torch.testing.assert_close(encoded[i, :n], alone[best][0][0], atol=1e-5, rtol=1e-5)
    # the warps give different encodings (the search has something to choose among)
    assert not torch.allclose(_alone(model, wave[0], 16000, 0.85)[0], _alone(model, wave[0], 16000, 1.15)[0], atol=1e-3)


@torch.inference_mode()
def test_a_search_over_no_warp_is_the_plain_encoder():
    torch.manual_seed(0)
    model = SpeechTransformer(NET).eval()
    wave, lengths = _batch()
    plain, plain_mask = model.encode(wave, lengths)
    encoded, mask, chosen = warp_search(model, wave, lengths, [1.0])
    assert torch.equal(mask, plain_mask) and chosen.tolist() == [1.0, 1.0]
    # vtlp_warp at 1 reads each bin from a source bin a float rounding (~1e-6) away from it
    torch.testing.assert_close(encoded, plain, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_the_recognizer_decodes_the_searched_encoding_and_without_the_option_the_plain_one():
    torch.manual_seed(0)
    rec = SpeechRecognizer(NET, warp_search=ALPHAS, beam_size=2).eval()
    assert rec.warp_search == tuple(ALPHAS) and rec.hparams["warp_search"] == ALPHAS
    wave, lengths = _batch()
    encoded, mask, chosen = warp_search(rec.model, wave, lengths, ALPHAS)
    assert chosen.tolist() != [1.0, 1.0]  # else the searched and the plain encodings would be the same
    torch.testing.assert_close(rec.encode(wave, lengths)[0], encoded)
    plain_encoded, plain_mask = rec.model.encode(wave, lengths)
    assert not torch.allclose(encoded, plain_encoded, atol=1e-3)
    for method in ("beam", "greedy", "ctc"):
        assert rec.transcribe(wave, lengths, method=method) == rec._decode(encoded, mask, method=method)
    plain = SpeechRecognizer(NET, beam_size=2).eval()
    plain.load_state_dict(rec.state_dict())
    assert plain.warp_search is None
    torch.testing.assert_close(plain.encode(wave, lengths)[0], plain_encoded)
    assert plain.transcribe(wave, lengths, method="ctc") == plain._decode(plain_encoded, plain_mask, method="ctc")


@pytest.mark.parametrize(
    "bad, message",
    [
        ([], r"warp_search must be a non-empty list of frequency warp factors .*got \[\]"),
        ("0.9", r"warp_search must be a non-empty list .*got '0\.9'"),
        ([0.9, 2.0], r"warp_search factors must be numbers in \(0\.5, 1\.5\) \(1 = no warp\), got \[2\.0\] in \[0\.9, 2\.0\]"),
        ([float("nan")], r"warp_search factors must be numbers in \(0\.5, 1\.5\).*got \[nan\]"),
        ([0.5, 1.0], r"got \[0\.5\] in \[0\.5, 1\.0\]"),
        ([True, 1.0], r"got \[True\] in \[True, 1\.0\]"),
    ],
)
def test_bad_warp_factors_are_named_with_the_valid_range(bad, message):
    with pytest.raises(ValueError, match=message):
        check_alphas(bad)
    with pytest.raises(ValueError, match=message):
        SpeechRecognizer(NET, warp_search=bad)


def test_a_warp_search_needs_a_ctc_head_and_the_log_mel_front_end_and_whisper_models_refuse_it():
    no_ctc = SpeechConfig(ctc=False, encoder=TransformerConfig(**STACK), decoder=TransformerConfig(**STACK))
    with pytest.raises(ValueError, match=r"warp_search=\[0\.9, 1\.0\] chooses a warp by the CTC head's confidence; this model has no CTC head \(net\.ctc=False\): set warp_search=None"):
        SpeechRecognizer(no_ctc, ctc_weight=0.0, beam_ctc_weight=0.0, warp_search=[0.9, 1.0])
    whisper_front = SpeechConfig(frontend="whisper", n_mels=80, subsampling=2, encoder=TransformerConfig(**STACK), decoder=TransformerConfig(**STACK))
    with pytest.raises(ValueError, match=r"warp_search=\[0\.9, 1\.0\] warps the log-mel of net\.frontend='tzoo'; net\.frontend='whisper' takes no warp: set warp_search=None"):
        SpeechRecognizer(whisper_front, warp_search=[0.9, 1.0])
    # a pretrained Whisper's net (its front end, no CTC head): the front end is named
    whisper_net = SpeechConfig(frontend="whisper", n_mels=80, subsampling=2, ctc=False, encoder=TransformerConfig(**STACK), decoder=TransformerConfig(**STACK))
    with pytest.raises(ValueError, match=r"warp_search=\[0\.9, 1\.0\] warps the log-mel of net\.frontend='tzoo'; net\.frontend='whisper' takes no warp"):
        check_alphas([0.9, 1.0], whisper_net)


def test_a_speakers_warp_is_the_best_of_its_confidences_pooled_over_its_nodes_speakers_apart_unknown_alone():
    pool = SpeakerWarps()
    # speaker a: a long utterance sure at alpha 0, then a short one surer at alpha 2; b and unknown alone
    first = pool.choose(torch.tensor([[-0.2, -0.5, -0.6]]), torch.tensor([90]), ["a"])
    assert first.tolist() == [0]
    chosen = pool.choose(torch.tensor([[-0.9, -0.5, -0.1], [-0.9, -0.5, -0.1], [-0.9, -0.8, -0.3]]), torch.tensor([10, 10, 50]), ["a", "b", None])
    # a: (90 * -0.2 + 10 * -0.9) / 100 = -0.27 at 0, -0.5 at 1, -0.55 at 2 -> 0; b's own -> 2; unknown -> 2
    assert chosen.tolist() == [0, 2, 2]
    assert pool.best("a") == 0 and pool.best("b") == 2 and sorted(pool.totals) == ["a", "b"]  # the unknown is not pooled
    torch.testing.assert_close(pool.totals["a"] / 100, torch.tensor([-0.27, -0.5, -0.55]))  # over a's 100 nodes
    # enough of a's nodes at alpha 2 move a's choice there
    assert pool.choose(torch.tensor([[-1.0, -0.9, -0.05]]), torch.tensor([200]), ["a"]).tolist() == [2]
    # a batch is pooled before any of it is chosen: both of c's utterances get the pooled choice
    assert pool.choose(torch.tensor([[-0.1, -0.3, -0.3], [-0.5, -0.3, -0.3]]), torch.tensor([10, 40]), ["c", "c"]).tolist() == [1, 1]
    pool.reset()
    assert pool.totals == {}
    with pytest.raises(KeyError, match=r"speaker 'a' has no utterances pooled yet; pooled: \[\]"):
        pool.best("a")
    with pytest.raises(ValueError, match=r"speakers must name one speaker \(or None\) per utterance: 2 utterances, 1 speakers"):
        pool.choose(torch.zeros(2, 3), torch.ones(2), ["a"])


@torch.inference_mode()
def test_the_search_per_speaker_pools_each_utterances_confidence_weighted_by_its_nodes():
    torch.manual_seed(0)
    model = SpeechTransformer(NET).eval()
    wave, lengths = _batch()
    alone = [[_alone(model, wave[i], int(lengths[i]), a) for a in ALPHAS] for i in range(2)]
    nodes = [a[0][0].shape[1] for a in alone]
    # two speakers, each first seen: the same choice as per utterance
    per_utterance = warp_search(model, wave, lengths, ALPHAS)
    apart = warp_search(model, wave, lengths, ALPHAS, speakers=["a", "b"], pool=SpeakerWarps())
    assert apart[2].tolist() == per_utterance[2].tolist()
    torch.testing.assert_close(apart[0], per_utterance[0])
    # one speaker: both utterances at the alpha of the highest node-weighted mean confidence
    pooled = [sum(alone[i][k][1] * nodes[i] for i in range(2)) / sum(nodes) for k in range(len(ALPHAS))]
    best = max(range(len(ALPHAS)), key=pooled.__getitem__)
    encoded, mask, chosen = warp_search(model, wave, lengths, ALPHAS, speakers=["a", "a"], pool=SpeakerWarps())
    assert chosen.tolist() == [ALPHAS[best]] * 2
    for i in range(2):
        n = int(mask[i].sum())
        torch.testing.assert_close(encoded[i, :n], alone[i][best][0][0], atol=1e-5, rtol=1e-5)
    # the pooled choice differs from one utterance's own here (else this test would show nothing)
    assert per_utterance[2].tolist() != chosen.tolist()


@torch.inference_mode()
def test_the_recognizer_pools_per_speaker_across_test_batches_and_forgets_between_runs():
    torch.manual_seed(0)
    rec = SpeechRecognizer(NET, warp_search=ALPHAS, warp_search_by="speaker", beam_size=2).eval()
    assert rec.hparams["warp_search_by"] == "speaker"
    wave, lengths = _batch()
    first = rec.encode(wave[:1], lengths[:1], ["a"])  # a batch with the first utterance, then one with the second
    second = rec.encode(wave[1:], lengths[1:], ["a"])
    both = warp_search(rec.model, wave, lengths, ALPHAS, speakers=["a", "a"], pool=SpeakerWarps())
    n = int(second[1].sum())
    torch.testing.assert_close(second[0][0, :n], both[0][1, :n])  # the second at the pooled choice
    alone_first = warp_search(rec.model, wave[:1], lengths[:1], ALPHAS)
    torch.testing.assert_close(first[0], alone_first[0])  # the first chose on its own votes (nothing pooled yet)
    rec.on_test_epoch_start()
    assert rec.speaker_warps.totals == {}
    rec.encode(wave[:1], lengths[:1], ["a"])
    rec.on_predict_epoch_start()
    assert rec.speaker_warps.totals == {}
    # without speakers (transcribe's default) each utterance chooses alone
    torch.testing.assert_close(rec.encode(wave, lengths)[0], warp_search(rec.model, wave, lengths, ALPHAS)[0])


@pytest.mark.parametrize(
    "scope, alphas, message",
    [
        ("voice", ALPHAS, r"warp_search_by must be one of \('utterance', 'speaker'\) \(what one frequency warp is chosen for\), got 'voice'"),
        ("speaker", None, r"warp_search_by='speaker' pools the warp search over each speaker's utterances; warp_search=None searches nothing: give warp_search factors"),
    ],
)
def test_a_bad_warp_scope_is_named_with_what_is_valid(scope, alphas, message):
    with pytest.raises(ValueError, match=message):
        check_scope(scope, alphas)
    with pytest.raises(ValueError, match=message):
        SpeechRecognizer(NET, warp_search=alphas, warp_search_by=scope)


def test_the_speaker_of_an_entry_is_its_field_else_its_engine_and_voice_else_its_voice():
    assert speaker_of({"speaker": 84, "engine": "espeak", "voice": "en-US+m3"}) == "84"
    assert speaker_of({"engine": "espeak", "voice": "en-GB-x-rp+m3"}) == "espeak/m3"  # the variant: one speaker in 8 accents
    assert speaker_of({"engine": "festival", "voice": "cmu_us_slt_arctic_hts"}) == "festival/cmu_us_slt_arctic_hts"
    assert speaker_of({"voice": "1272"}) == "1272"  # read_librispeech: the speaker number
    assert speaker_of({"audio": "a.wav", "text": ""}) is None
