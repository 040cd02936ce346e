"""The generated corpus's coloured noise (a one-pole low-pass of white noise) through torchaudio's
lfilter equals the recursion written out here and scipy's lfilter, which it replaced, to 1e-6."""

import numpy as np
import pytest

from tzoo.tasks.speech.corpus import CorpusSpec, _noise, _one_pole_lowpass


def recursion(x, pole):
    """y[t] = (1 - pole) x[t] + pole y[t-1]: the filter, one sample at a time, in float64."""
    y, previous = np.empty(len(x)), 0.0
    for t, value in enumerate(np.asarray(x, dtype=np.float64)):
        previous = (1.0 - pole) * value + pole * previous
        y[t] = previous
    return y.astype(np.float32)


@pytest.mark.parametrize("pole", [0.0, 0.3, 0.9, 0.95])
def test_lowpass_equals_the_recursion(pole):
    white = np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 3  # beyond [-1, 1]: no clamping
    out = _one_pole_lowpass(white, pole)
    assert out.dtype == np.float32 and out.shape == white.shape
    np.testing.assert_allclose(out, recursion(white, pole), rtol=0, atol=1e-6)


def test_corpus_noise_equals_scipys_lfilter():
    signal = pytest.importorskip("scipy.signal")  # the implementation this replaced, where installed
    spec = CorpusSpec()
    for seed in range(5):
        ours = _noise(np.random.default_rng(seed), 16_000, spec)
        rng = np.random.default_rng(seed)  # the same draws, filtered by scipy
        white = rng.standard_normal(16_000).astype(np.float32)
        pole = float(rng.uniform(0.0, 0.95))
        theirs = signal.lfilter([1.0 - pole], [1.0, -pole], white).astype(np.float32)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
