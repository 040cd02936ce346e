"""The exporters to other libraries' layouts refuse the options those layouts cannot hold (QK-norm,
squared ReLU, Conformer blocks, an untied head, logit soft-capping), naming the option and the value they need,
instead of writing weights that load into a different model."""

import pytest

from tzoo.core import TransformerConfig


def stack(**fields):
    return TransformerConfig(**{"dim": 16, "depth": 1, "num_heads": 2, **fields})


@pytest.mark.parametrize(
    ("net", "transformer", "message"),
    [
        (dict(tie_embeddings=False), {}, r"GPT-2's layout has no place for net.tie_embeddings=False: only a model with net.tie_embeddings=True"),
        (dict(logit_softcap=30.0), {}, r"net.logit_softcap=30.0: only a model with net.logit_softcap=None"),
        ({}, dict(qk_norm=True), r"net.transformer.qk_norm=True: only a model with net.transformer.qk_norm=False"),
        ({}, dict(feed_forward="squared_relu"), r"a GELU/ReLU MLP.*feed_forward='squared_relu'"),
    ],
)
def test_gpt2_export_refuses(net, transformer, message):
    from tzoo.tasks.lm.gpt2 import _hf_json
    from tzoo.tasks.lm.model import GPTConfig

    with pytest.raises(ValueError, match=message):
        _hf_json(GPTConfig(30, block_size=8, transformer=stack(**transformer), **net))


@pytest.mark.parametrize(("transformer", "message"), [(dict(qk_norm=True), r"or qk_norm\)"), (dict(feed_forward="squared_relu"), r"feed_forward='squared_relu'")])
def test_decision_transformer_export_refuses(transformer, message):
    from tzoo.tasks.decision.hf_dt import _hf_json
    from tzoo.tasks.decision.model import DecisionTransformerModel, DTConfig

    model = DecisionTransformerModel(DTConfig(obs_dim=3, act_dim=2, discrete=False, context_length=4, max_timestep=10, transformer=stack(**transformer)))
    with pytest.raises(ValueError, match=message):
        _hf_json(model, None)


def test_whisper_export_refuses_qk_norm():
    from tzoo.tasks.speech.model import SpeechConfig
    from tzoo.tasks.speech.whisper import _check_exportable

    cfg = SpeechConfig(frontend="whisper", subsampling=2, encoder_position="whisper", decoder_position="learned", encoder=stack(), decoder=stack(qk_norm=True))
    with pytest.raises(ValueError, match=r"Whisper's layout needs net.decoder.qk_norm=False, this model has True"):
        _check_exportable(cfg)


def test_timm_export_refuses_qk_norm():
    from tzoo.tasks.vision.model import ViT, ViTConfig
    from tzoo.tasks.vision.timm_vit import to_timm_state

    model = ViT(ViTConfig(4, 8, 1, patch_size=4, position="learned", transformer=stack(qk_norm=True)))
    with pytest.raises(ValueError, match=r"net.transformer.qk_norm=True has no place in timm's layout.*only qk_norm=False exports"):
        to_timm_state(model)


def test_whisper_export_refuses_a_conformer_encoder():
    from tzoo.tasks.speech.model import SpeechConfig
    from tzoo.tasks.speech.whisper import _check_exportable

    cfg = SpeechConfig(frontend="whisper", subsampling=2, encoder_position="whisper", decoder_position="learned",
                       encoder=stack(block="conformer"), decoder=stack())  # fmt: skip
    with pytest.raises(ValueError, match=r"Whisper's layout needs net.encoder.block='transformer', this model has 'conformer'"):
        _check_exportable(cfg)


def test_timm_export_refuses_conformer_blocks():
    from tzoo.tasks.vision.model import ViT, ViTConfig
    from tzoo.tasks.vision.timm_vit import to_timm_state

    model = ViT(ViTConfig(4, 8, 1, patch_size=4, position="learned", transformer=stack(block="conformer")))
    with pytest.raises(ValueError, match=r"net.transformer.block='conformer' has no place in timm's ViT layout: only block='transformer' exports"):
        to_timm_state(model)
