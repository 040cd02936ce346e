"""Reading audio: the bad inputs each give a clear error or a note that says what was done."""

import numpy as np
import pytest
import soundfile
import torch

from tzoo.tasks.speech.audio import load_audio


def test_reads_a_generated_wav_at_the_model_rate(tiny_corpus):
    wave = load_audio(tiny_corpus / "train" / "000000.wav")
    assert wave.dtype == torch.float32 and wave.dim() == 1 and 0 < wave.abs().max() <= 1


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"audio file '.*nothing\.wav' does not exist"):
        load_audio(tmp_path / "nothing.wav")


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"this is not a RIFF file at all")
    with pytest.raises(ValueError, match=r"cannot read audio file '.*noise\.wav'.*readable: WAV, FLAC"):
        load_audio(bad)


def test_empty_file_is_an_error(tmp_path):
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match=r"'.*empty\.wav' is empty \(0 samples\)"):
        load_audio(empty)


def test_other_sample_rate_is_resampled_with_a_note(tmp_path):
    path = tmp_path / "fast.wav"
    soundfile.write(path, np.sin(np.arange(44100) * 0.05).astype(np.float32) * 0.5, 44100)
    with pytest.warns(UserWarning, match="sample rate 44100 Hz resampled to the model's 16000 Hz"):
        wave = load_audio(path, 16000)
    assert len(wave) == 16000


def test_stereo_is_downmixed_with_a_note(tmp_path):
    path = tmp_path / "stereo.wav"
    left, right = np.full(1600, 0.5, dtype=np.float32), np.full(1600, -0.25, dtype=np.float32)
    soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    with pytest.warns(UserWarning, match="2 channels downmixed to mono"):
        wave = load_audio(path, 16000)
    assert wave.shape == (1600,) and torch.allclose(wave, torch.full((1600,), 0.125))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_float_file_with_nan_or_inf_samples_is_named(tmp_path, bad):
    # (a NaN sample made every frame NaN and the clip transcribed as an empty string)
    path = tmp_path / "glitch.wav"
    samples = np.sin(np.arange(1600) * 0.05).astype(np.float32) * 0.5
    samples[800:803] = bad
    soundfile.write(path, samples, 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"audio file '.*glitch\.wav' has 3 samples that are NaN or infinite \(the first at sample 800, 0\.050 s\)"):
        load_audio(path)


def test_an_utterances_features_are_the_same_alone_and_in_any_batch():
    """The front end pads each utterance with zeros past its own end and normalises over its real
    frames: batching (with longer or shorter neighbours) changes none of its features."""
    import torch

    from tzoo.tasks.speech.tokenizer import LogMel

    logmel = LogMel(16000, 80).eval()
    g = torch.Generator().manual_seed(0)
    lengths = [16000, 9_731, 4_000, 200]  # the last is shorter than the FFT window
    waves = [torch.randn(n, generator=g) * torch.linspace(0.2, 1.0, n) for n in lengths]
    batch = torch.zeros(len(waves), max(lengths))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    together, frames = logmel(batch, torch.tensor(lengths))
    for i, w in enumerate(waves):
        alone, n = logmel(w[None], torch.tensor([len(w)]))
        assert int(n) == int(frames[i])
        assert (together[i, :, : int(n)] - alone[0, :, : int(n)]).abs().max() < 1e-5, i
        assert not together[i, :, int(n) :].any()  # padded frames are 0
