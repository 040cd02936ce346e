"""Bert: the encoder sees both directions (the LM's decoder does not), padding is invisible, pooling,
too-long input, and copying an encoder between models."""

import pytest
import torch

from tzoo.core import TransformerConfig
from tzoo.tasks.bert.model import Bert, BertConfig
from tzoo.tasks.lm.model import GPT, GPTConfig


def _stack(**kw):
    return TransformerConfig(dim=32, depth=2, num_heads=4, **kw)


def _bert(objective="classify", **kw):
    torch.manual_seed(0)
    return Bert(BertConfig(vocab_size=50, num_classes=3, max_len=16, transformer=_stack(), **kw), objective=objective).eval()


def test_a_later_token_changes_an_earlier_nodes_output_unlike_the_lm():
    ids = torch.randint(5, 50, (2, 10))
    later = ids.clone()
    later[:, 8] = (later[:, 8] + 1 - 5) % 45 + 5  # another token at node 8
    bert = _bert("mlm")
    with torch.no_grad():
        a, b = bert.features(ids), bert.features(later)
    assert (a[:, 2] - b[:, 2]).abs().max() > 1e-3  # node 2 saw node 8: bidirectional
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=50, block_size=16, transformer=_stack())).eval()
    with torch.no_grad():
        torch.testing.assert_close(gpt(ids)[:, :8], gpt(later)[:, :8])  # the LM's earlier nodes did not


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_padding_changes_nothing(pool):
    bert = _bert(pool=pool)
    ids = torch.randint(5, 50, (1, 7))
    padded = torch.cat([ids, torch.full((1, 5), 3)], dim=1)
    real = torch.arange(12)[None] < 7
    with torch.no_grad():
        torch.testing.assert_close(bert(padded, real), bert(ids), atol=1e-5, rtol=1e-5)


def test_mean_pooling_is_the_mean_over_real_nodes():
    bert = _bert(pool="mean")
    h = torch.randn(2, 5, 32)
    real = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(bert.pooled(h, real), torch.stack([h[0, :3].mean(0), h[1].mean(0)]))
    assert torch.equal(_bert(pool="cls").pooled(h, real), h[:, 0])


def test_mlm_head_is_tied_to_the_embedding():
    bert = _bert("mlm")
    assert bert.mlm.decoder.weight is bert.embed.weight and bert.classifier is None
    assert bert(torch.randint(0, 50, (2, 6))).shape == (2, 6, 50)


def test_input_longer_than_the_positions_is_an_error_naming_the_limit():
    with pytest.raises(ValueError, match=r"17 nodes exceed the model's max_len=16 \(its positions\); cut the text to 16 nodes"):
        _bert()(torch.zeros(1, 17, dtype=torch.long))


def test_load_encoder_copies_the_body_and_leaves_the_head():
    source, target = _bert("mlm"), Bert(BertConfig(vocab_size=50, num_classes=3, max_len=16, transformer=_stack()))
    head = target.classifier.weight.clone()
    loaded = target.load_encoder(source.state_dict(), where="src")
    assert "embed.weight" in loaded and "pos.weight" in loaded and any(k.startswith("encoder.blocks.1.") for k in loaded)
    assert not any(k.startswith(("mlm.", "classifier.")) for k in loaded)
    for name, value in source.state_dict().items():
        if name.startswith(("embed.", "pos.", "encoder.")):
            assert torch.equal(target.state_dict()[name], value), name
    assert torch.equal(target.classifier.weight, head)


def test_load_encoder_refuses_another_vocabulary_or_width():
    target = _bert()
    other_vocab = Bert(BertConfig(vocab_size=60, num_classes=3, max_len=16, transformer=_stack()))
    with pytest.raises(ValueError, match=r"src has a vocabulary of 60 tokens, this model 50"):
        target.load_encoder(other_vocab.state_dict(), where="src")
    wider = Bert(BertConfig(vocab_size=50, num_classes=3, max_len=16, transformer=TransformerConfig(dim=64, depth=2, num_heads=4)))
    with pytest.raises(ValueError, match=r"src has width dim=64, this model dim=32"):
        target.load_encoder(wider.state_dict(), where="src")
    deeper = Bert(BertConfig(vocab_size=50, num_classes=3, max_len=16, transformer=TransformerConfig(dim=32, depth=3, num_heads=4)))
    with pytest.raises(ValueError, match=r"src does not hold this encoder's weights: it has \['encoder.blocks.2"):
        target.load_encoder(deeper.state_dict(), where="src")


def test_a_classifier_needs_its_classes():
    with pytest.raises(ValueError, match="net.num_classes is not set"):
        Bert(BertConfig(vocab_size=50), objective="classify")
