"""Banded sliding-window attention (tzoo.core.banded) against the masked window path it replaces on long inputs."""

import pytest
import torch
import torch.nn.functional as F

import tzoo.core.attention as attention_module
from tzoo.core import ALiBi, MultiHeadAttention, RotaryEmbedding, TransformerConfig, banded_attention, capture_attention
from tzoo.core.banded import block_size, keys_per_block, use_banded

D, H = 16, 4
TOL = 1e-5


def window_mask(n: int, window: int, causal: bool) -> torch.Tensor:
    i = torch.arange(n)
    allowed = (i[:, None] - i[None, :]).abs() < window
    return allowed & (i[None, :] <= i[:, None]) if causal else allowed  # (N, N)


def make(window: int, *, pos: str | None = None, num_kv_heads: int = H, num_memory: int = 0) -> MultiHeadAttention:
    torch.manual_seed(0)
    rel = RotaryEmbedding(D // H) if pos == "rope" else ALiBi(H) if pos == "alibi" else None
    m = MultiHeadAttention(D, H, num_kv_heads=num_kv_heads, window=window, num_memory=num_memory, pos=rel).eval()
    for p in m.parameters():  # weights of trained scale: differences must not hide below the tolerance
        torch.nn.init.normal_(p, std=0.3)
    return m


def masked_reference(m: MultiHeadAttention, x, **kw):
    """The same layer on the masked window path: capturing attention weights needs the (N, M) scores."""
    with capture_attention(m):
        return m(x, **kw)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "symmetric"])
@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(pos="rope"),
        dict(pos="alibi"),
        dict(num_kv_heads=2),
        dict(num_kv_heads=1, num_memory=3, pos="rope"),
        dict(num_memory=2, pos="alibi"),
    ],
    ids=["plain", "rope", "alibi", "gqa", "mqa-memory-rope", "memory-alibi"],
)
def test_banded_equals_the_masked_path_with_padding_and_gradients(causal, kw, monkeypatch):
    """A ragged last block (N = 2 blocks + 5), the first block's missing keys, right and left padding;
    outputs and every gradient within 1e-5."""
    window = 3
    n = 2 * keys_per_block(window, causal=False) + 5  # banded for causal and symmetric windows
    m = make(window, **kw)
    ref = MultiHeadAttention(D, H, num_kv_heads=m.num_kv_heads, num_memory=m.memory.shape[2] if m.memory is not None else 0, pos=m.pos).eval()
    ref.load_state_dict(m.state_dict())
    torch.manual_seed(1)
    x = torch.randn(3, n, D, requires_grad=True)
    padding = torch.ones(3, n, dtype=torch.bool)
    padding[1, n - 17 :] = False  # right padding
    padding[2, :9] = False  # left padding
    real = padding[:, :, None].float()
    calls = []
    original = attention_module.banded_attention
    monkeypatch.setattr(attention_module, "banded_attention", lambda *a, **k: calls.append(1) or original(*a, **k))
    out = m(x, is_causal=causal, key_padding_mask=padding)
    monkeypatch.undo()
    assert calls, "the long windowed call did not take the banded path"
    masked = masked_reference(m, x, is_causal=causal, key_padding_mask=padding)
    explicit = ref(x, mask=window_mask(n, window, causal), key_padding_mask=padding)  # today's path, written out
    torch.testing.assert_close(out * real, masked * real, atol=TOL, rtol=0)
    torch.testing.assert_close(out * real, explicit * real, atol=TOL, rtol=0)
    weights = torch.randn(out.shape) * real
    grads = torch.autograd.grad((out * weights).sum(), [x, *m.parameters()])
    ref_grads = torch.autograd.grad((masked * weights).sum(), [x, *m.parameters()])
    for g, r in zip(grads, ref_grads):  # parameter gradients sum ~1,600 terms: 1e-5 of the largest entry
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, r, atol=TOL * max(1.0, r.abs().max().item()), rtol=TOL)


@pytest.mark.parametrize("n", [40, 64, 128, 150, 213], ids=["one-ragged-block", "one-block", "two-blocks", "ragged", "four-blocks-ragged"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "symmetric"])
def test_banded_function_equals_sdpa_with_the_window_mask(n, causal):
    """Blocks shorter than the window (block 64, window 150: keys from three earlier blocks), GQA,
    straight against SDPA with the (N, N) window mask."""
    window = 150
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, n, 8), torch.randn(2, 2, n, 8), torch.randn(2, 2, n, 8)
    out = banded_attention(q, k, v, window=window, causal=causal)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=window_mask(n, window, causal), enable_gqa=True)
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)


def test_banded_is_chosen_only_when_cheaper():
    """From N = twice the keys of a block on: half the (query, key) pairs of the masked path or fewer."""
    assert block_size(3) == 64 and block_size(256) == 128 and block_size(1024) == 512
    assert keys_per_block(256, causal=True) == 128 + 255 and keys_per_block(256, causal=False) == 128 + 510
    assert not use_banded(765, 256, True) and use_banded(766, 256, True)
    assert not use_banded(1275, 256, False) and use_banded(1276, 256, False)


def test_banded_costs_memory_linear_in_n():
    """The bytes saved for backward grow like N·W, not N²: 4x the nodes, about 4x the bytes."""

    def saved_bytes(n: int) -> int:
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        q, k, v = (torch.randn(1, 2, n, 8, requires_grad=True) for _ in range(3))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            banded_attention(q, k, v, window=64, causal=True).sum()
        return total

    small, large = saved_bytes(512), saved_bytes(2048)
    assert large < 4.5 * small, (small, large)  # quadratic would be 16x


@pytest.mark.parametrize("window", [0, -2, 2.5, True, "4"])
def test_window_must_be_a_whole_number_at_least_one(window):
    with pytest.raises(ValueError, match=rf"window must be >= 1 node, a whole number .*got window={window!r}"):
        MultiHeadAttention(D, H, window=window)
    with pytest.raises(ValueError, match=rf"window must be an integer >= 1 or None \(no window\), got window={window!r}"):
        TransformerConfig(dim=D, num_heads=H, window=window)
