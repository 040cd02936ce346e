"""Test-time frequency warping (``vtln.py``, ``SpeechRecognizer(warp_search=...)``): each utterance
keeps the encoding at the warp whose CTC best path is surest, batched or alone; bad factors named."""

import pytest
import torch

from tzoo.core import TransformerConfig
from tzoo.tasks.speech.model import SpeechConfig, SpeechTransformer
from tzoo.tasks.speech.module import SpeechRecognizer
from tzoo.tasks.speech.vtln import check_alphas, warp_search

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
