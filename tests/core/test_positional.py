"""Positional encodings against their formulas."""

import math

import pytest
import torch

from tzoo.core import (
    ALiBi,
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinCos2DPositionalEncoding,
    SinusoidalPositionalEncoding,
    sincos_2d,
)


def test_sinusoidal_matches_the_formula_and_offsets():
    pe = SinusoidalPositionalEncoding(8, max_len=50)
    x = torch.zeros(1, 5, 8)
    out = pe(x, offset=3)
    for pos in range(5):
        for i in range(4):
            angle = (pos + 3) / 10000 ** (2 * i / 8)
            assert out[0, pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert out[0, pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


@pytest.mark.parametrize("module", [SinusoidalPositionalEncoding(8, max_len=10), LearnedPositionalEmbedding(10, 8)])
def test_absolute_encodings_refuse_positions_past_max_len(module):
    with pytest.raises(ValueError, match=r"positions 0..9, but positions 4..11 were asked for"):
        module(torch.zeros(1, 8, 8), offset=4)


def test_learned_adds_one_vector_per_position():
    pe = LearnedPositionalEmbedding(10, 4)
    x = torch.randn(2, 3, 4)
    assert torch.equal(pe(x, offset=2), x + pe.weight[2:5])


def test_sincos_2d_rows_and_columns():
    table = sincos_2d(3, 4, 16)
    assert table.shape == (12, 16)
    # row-major: nodes in the same row share the row half, same column share the column half
    assert torch.equal(table[0, :8], table[3, :8]) and not torch.equal(table[0, :8], table[4, :8])
    assert torch.equal(table[1, 8:], table[5, 8:]) and not torch.equal(table[1, 8:], table[2, 8:])
    enc = SinCos2DPositionalEncoding(16)
    assert torch.equal(enc(torch.zeros(1, 12, 16), (3, 4))[0], table)
    assert enc(torch.zeros(1, 30, 16), (5, 6)).shape == (1, 30, 16)  # any grid, regenerated
    with pytest.raises(ValueError, match=r"x has 12 nodes but the grid 5x6 has 30"):
        enc(torch.zeros(1, 12, 16), (5, 6))
    with pytest.raises(ValueError, match=r"divisible by 4, got dim=6"):
        sincos_2d(2, 2, 6)


def test_rope_preserves_norms_and_rotates_pairs():
    rope = RotaryEmbedding(8, max_len=4)
    x = torch.randn(1, 2, 10, 8)
    out = rope.rotate(x, offset=0)  # grows past max_len=4 without failing
    assert torch.allclose(out.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.equal(out[..., 0, :], x[..., 0, :])  # position 0: no rotation
    with pytest.raises(ValueError, match="even head width, got head_dim=7"):
        RotaryEmbedding(7)


def test_alibi_slopes_and_bias():
    alibi = ALiBi(8)
    assert torch.allclose(alibi.slopes, torch.tensor([2 ** (-(h + 1)) for h in range(8)]))
    bias = alibi.bias(2, 5, offset=3)  # queries at positions 3, 4
    assert bias.shape == (8, 2, 5)
    assert bias[0, 0].tolist() == pytest.approx([-1.5, -1.0, -0.5, 0.0, -0.5])
    assert ALiBi(6).slopes.shape == (6,)  # not a power of two
