"""tzoo.core — the shared transformer core: attention, positional encodings, blocks, stacks.

Pure PyTorch (no Lightning). Import it as ``tzoo.core``.
"""

if __name__ != "tzoo.core":  # imported as a bare `core` from the repository root: two copies of every class
    raise ImportError(
        f"this package was imported as {__name__!r}; import it as 'tzoo.core' "
        "(install tzoo with `pip install -e .` and don't put the repository root's core/ on sys.path)"
    )

from tzoo.core.attention import MultiHeadAttention, capture_attention
from tzoo.core.banded import banded_attention
from tzoo.core.cache import KVCache, LayerCache, LinearAttentionState, RollingKVCache
from tzoo.core.linear_attention import LinearAttention, linear_attention, linear_attention_recurrent
from tzoo.core.blocks import MLP, DropPath, LayerScale, SwiGLU, TransformerBlock
from tzoo.core.conformer import ConformerBlock, ConvModule
from tzoo.core.positional import (
    ALiBi,
    LearnedPositionalEmbedding,
    RelativePosition,
    RotaryEmbedding,
    SinCos2DPositionalEncoding,
    SinusoidalPositionalEncoding,
    sincos_1d,
    sincos_2d,
)
from tzoo.core.transformer import Decoder, Encoder, TransformerConfig, init_gpt2

__all__ = [
    "ALiBi",
    "ConformerBlock",
    "ConvModule",
    "Decoder",
    "DropPath",
    "Encoder",
    "KVCache",
    "LayerScale",
    "LayerCache",
    "LearnedPositionalEmbedding",
    "LinearAttention",
    "LinearAttentionState",
    "MLP",
    "MultiHeadAttention",
    "RelativePosition",
    "RollingKVCache",
    "RotaryEmbedding",
    "SinCos2DPositionalEncoding",
    "SinusoidalPositionalEncoding",
    "SwiGLU",
    "TransformerBlock",
    "TransformerConfig",
    "banded_attention",
    "capture_attention",
    "init_gpt2",
    "linear_attention",
    "linear_attention_recurrent",
    "sincos_1d",
    "sincos_2d",
]
