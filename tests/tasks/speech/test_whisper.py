"""Whisper in and out: an HF WhisperForConditionalGeneration with weights of trained scale, saved in
its own format, imported into tzoo's SpeechTransformer, gives the same encoder states and logits and
the same greedy tokens; tzoo's Whisper log-mel equals WhisperFeatureExtractor's on synthesized
speech; the export loads back into HF with the same outputs. Bad folders are named."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tzoo.tasks.speech.whisper import WhisperTextTokenizer, greedy_transcribe, load_whisper, save_whisper  # noqa: E402

VOCAB, START, EOS = 120, 3, 2


def _trained_scale(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights whose activations are of order 1 (LayerNorm gains around 1, biases non-zero); the
    encoder's sinusoid table stays Whisper's (it is fixed, never trained)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("encoder.embed_positions.weight"):
                continue
            if p.dim() == 1:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))


def _hf_whisper(d_model: int = 64) -> torch.nn.Module:
    """A tiny Whisper: 2 + 2 layers, 4 heads, 80 mels, 100 audio nodes (2 s, 200 mel frames)."""
    config = transformers.WhisperConfig(
        vocab_size=VOCAB, num_mel_bins=80, d_model=d_model, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=4 * d_model, decoder_ffn_dim=4 * d_model, max_source_positions=100,
        max_target_positions=40, pad_token_id=0, bos_token_id=1, eos_token_id=EOS, decoder_start_token_id=START,
        suppress_tokens=None, begin_suppress_tokens=None,
    )  # fmt: skip
    model = transformers.WhisperForConditionalGeneration(config).eval()
    _trained_scale(model)
    return model


MEL = torch.randn(2, 80, 200, generator=torch.Generator().manual_seed(1))
IDS = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(2))


def _ours(model, mel: torch.Tensor = MEL, ids: torch.Tensor = IDS) -> tuple[torch.Tensor, torch.Tensor]:
    """(encoder states, decoder logits) of tzoo's model for Whisper log-mel input and a token prefix."""
    with torch.no_grad():
        encoded, _ = model.encode_nodes(*model.frontend.from_logmel(mel, torch.full((len(mel),), mel.shape[-1])))
        return encoded, model.decode(ids, encoded, None)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    reference = _hf_whisper()
    path = tmp_path_factory.mktemp("whisper") / "hf"
    reference.save_pretrained(path)
    return reference, path


def test_whisper_imports_with_the_same_encoder_states_and_logits_and_exports_back(folder, tmp_path):
    reference, path = folder
    model = load_whisper(path)
    with torch.no_grad():
        theirs = reference(input_features=MEL, decoder_input_ids=IDS)
    encoded, logits = _ours(model)
    assert theirs.logits.abs().mean() > 0.5 and theirs.encoder_last_hidden_state.abs().mean() > 0.5  # trained scale
    assert (encoded - theirs.encoder_last_hidden_state).abs().max() <= 1e-4  # measured 0.0: the same arithmetic
    assert (logits - theirs.logits).abs().max() <= 1e-4  # measured 0.0

    save_whisper(model, tmp_path / "out", source=path)
    back = transformers.WhisperForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        assert (back(input_features=MEL, decoder_input_ids=IDS).logits - theirs.logits).abs().max() <= 1e-4
    assert back.config.decoder_start_token_id == START  # the source's token ids carried over
    assert (_ours(load_whisper(tmp_path / "out"))[1] - logits).abs().max() == 0  # export -> re-import is exact


def test_the_position_layout_matters_at_trained_scale(folder):
    """Guards the parity above: tzoo's own (interleaved) sinusoid table where Whisper's belongs is visible."""
    reference, path = folder
    model = load_whisper(path)
    from tzoo.core import sincos_1d

    model.enc_pos.table = sincos_1d(torch.arange(100), 64)
    with torch.no_grad():
        theirs = reference.model.encoder(MEL).last_hidden_state
    assert (_ours(model)[0] - theirs).abs().max() > 0.1


def test_greedy_decoding_with_the_kv_cache_equals_hf_generate(folder):
    """HF ``generate`` with no forced or suppressed tokens, one beam, no sampling, the decoder started
    from ``decoder_start_token_id`` alone: the tokens tzoo's cached greedy decoding picks."""
    reference, path = folder
    model = load_whisper(path)
    theirs = reference.generate(MEL[:1], decoder_input_ids=torch.tensor([[START]]), max_new_tokens=20, do_sample=False, num_beams=1)
    theirs = theirs[0].tolist()
    theirs = theirs[1:] if theirs[0] == START else theirs  # with or without the prompt, by transformers version
    ours = greedy_transcribe(model, mel=MEL[0], prompt=[START], eos=EOS, max_new_tokens=20)
    assert ours == theirs and len(set(ours)) > 1  # measured: 20 tokens, two distinct


def _speech() -> torch.Tensor:
    """About 1.3 s of eSpeak NG speech at 16 kHz (skips where no eSpeak NG is installed)."""
    from tzoo.tasks.speech.audio import to_model_rate
    from tzoo.tasks.speech.espeak import EspeakUnavailableError, Synthesizer

    try:
        synth = Synthesizer()
    except EspeakUnavailableError as exc:
        pytest.skip(str(exc))
    samples = synth.synthesize("the quick brown fox", "en-us")
    wave = torch.from_numpy(samples.astype("float32") / 32768)
    return to_model_rate(wave, synth.sample_rate, 16000)[:30000] if synth.sample_rate != 16000 else wave[:30000]


@pytest.mark.filterwarnings("ignore:.*resampled")
def test_the_whisper_front_end_equals_the_feature_extractor_on_speech(folder):
    reference, path = folder
    model = load_whisper(path)
    wave = _speech()
    short = wave[: len(wave) // 2]
    extractor = transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=2)  # 2 s: this model's 200 frames
    theirs = extractor([wave.numpy(), short.numpy()], sampling_rate=16000, return_tensors="pt").input_features
    batch = torch.stack([wave, torch.nn.functional.pad(short, (0, len(wave) - len(short)))])
    lengths = torch.tensor([len(wave), len(short)])
    ours, frames = model.frontend.logmel(batch, lengths)
    assert theirs.shape == ours.shape == (2, 80, 200) and frames.tolist() == [200, 200]
    assert (ours - theirs).abs().max() <= 1e-4  # measured 0.0
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision leaves the features in fp32
        assert torch.equal(model.frontend.logmel(batch, lengths)[0], ours)
    with torch.no_grad():  # the whole path: samples -> tzoo encoder vs extractor -> HF encoder
        encoded, mask = model.encode(batch, lengths)
        hf = reference.model.encoder(theirs).last_hidden_state
    assert bool(mask.all()) and (encoded - hf).abs().max() <= 1e-4
    with pytest.raises(ValueError, match=r"audio of 32001 samples is longer than the Whisper front end's 32000 samples"):
        model.encode(torch.zeros(1, 32001), torch.tensor([32001]))
    from tzoo.tasks.speech.tokenizer import WhisperLogMel

    large = transformers.WhisperFeatureExtractor(feature_size=128, chunk_length=2)  # large-v3's 128 mel bins
    theirs = large(wave.numpy(), sampling_rate=16000, return_tensors="pt").input_features
    assert (WhisperLogMel(32000, n_mels=128)(wave[None], lengths[:1])[0] - theirs).abs().max() <= 1e-4  # measured 0.0


def test_the_bpe_tokenizer_reads_either_file_layout_like_transformers(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    text = ["the quick brown fox jumps over the lazy dog", "a tiny whisper of speech", "quick quiet quotes"] * 20
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"])
    bpe.train_from_iterator(text, trainer)
    bpe.add_special_tokens(["<|startoftranscript|>"])
    (tmp_path / "json").mkdir()
    bpe.save(str(tmp_path / "json" / "tokenizer.json"))
    (tmp_path / "files").mkdir()
    bpe.model.save(str(tmp_path / "files"))  # vocab.json + merges.txt
    (tmp_path / "files" / "added_tokens.json").write_text(json.dumps({"<|startoftranscript|>": bpe.token_to_id("<|startoftranscript|>")}))
    sentence = "The quick whisper, quietly: über"
    hf = transformers.WhisperTokenizer(vocab=str(tmp_path / "files" / "vocab.json"), merges=str(tmp_path / "files" / "merges.txt"))
    expected = hf.encode(sentence, add_special_tokens=False)
    for layout in ("json", "files"):
        tok = WhisperTextTokenizer.load(tmp_path / layout)
        assert tok.encode(sentence) == expected and tok.decode(expected) == sentence
        assert tok.token_id("<|startoftranscript|>") == bpe.token_to_id("<|startoftranscript|>")
    with pytest.raises(FileNotFoundError, match=r"holds no Whisper tokenizer: tokenizer\.json, or vocab\.json and merges\.txt"):
        WhisperTextTokenizer.load(tmp_path)


# --- bad inputs -----------------------------------------------------------------------------------


def test_a_folder_without_weights_is_named(folder, tmp_path):
    _, path = folder
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"'.*w' holds no weights \(model\.safetensors or pytorch_model\.bin\)"):
        load_whisper(tmp_path / "w")
    with pytest.raises(FileNotFoundError, match=r"'.*nothing' do not exist: give a Hugging Face Whisper folder"):
        load_whisper(tmp_path / "nothing")


def test_weights_of_another_family_are_named(tmp_path):
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=1, n_head=2))
    gpt2.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match=r"describes a 'gpt2' model, not Whisper \(model_type 'whisper'\)"):
        load_whisper(tmp_path / "gpt2")
    # GPT-2's weights under a Whisper config.json
    _hf_whisper().config.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match=r"the Whisper weights have no 'model\.decoder\.embed_tokens\.weight'"):
        load_whisper(tmp_path / "gpt2")


def test_weights_of_another_size_name_the_first_mismatching_tensor(folder, tmp_path):
    _, path = folder
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    config = json.loads((path / "config.json").read_text())
    (tmp_path / "w" / "config.json").write_text(json.dumps({**config, "d_model": 32, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128}))
    with pytest.raises(ValueError, match=r"embed\.weight is \[120, 64\] in the weights but \[120, 32\] in a model of their config\.json"):
        load_whisper(tmp_path / "w")


def test_a_missing_hub_extra_names_the_install_command(folder, monkeypatch):
    _, path = folder
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ImportError, match=r"needs the safetensors package of tzoo's hub extra: pip install 'tzoo\[hub\]'"):
        load_whisper(path)


def test_a_hub_id_that_cannot_be_downloaded_names_the_offline_alternative(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match=r"'openai/whisper-tiny' are not a local folder and could not be downloaded .* offline, give a local folder"):
        load_whisper("openai/whisper-tiny")


def test_a_model_whisper_cannot_hold_is_not_exported(tmp_path):
    from tzoo.core import TransformerConfig
    from tzoo.tasks.speech.model import SpeechConfig, SpeechTransformer

    small = TransformerConfig(dim=16, depth=1, num_heads=2)
    rope = SpeechTransformer(SpeechConfig(encoder=small, decoder=TransformerConfig(dim=16, depth=1, num_heads=2, position="rope")))
    with pytest.raises(ValueError, match=r"only a Whisper-shaped speech model exports to Whisper's layout: net\.frontend='tzoo', Whisper's is 'whisper'"):
        save_whisper(rope, tmp_path / "out")
    whisperish = SpeechConfig(frontend="whisper", subsampling=2, encoder_position="whisper", decoder_position="learned", encoder=small,
                              decoder=TransformerConfig(dim=16, depth=1, num_heads=2, position="rope"))  # fmt: skip
    with pytest.raises(ValueError, match=r"Whisper's layout needs net\.decoder\.position='none', this model has 'rope'"):
        save_whisper(SpeechTransformer(whisperish), tmp_path / "out")
    with pytest.raises(ValueError, match=r"net\.frontend='whisper' needs net\.subsampling=2 \(Whisper's\), got 4"):
        SpeechConfig(frontend="whisper")


# --- through the CLI ------------------------------------------------------------------------------

WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]


def _tiny_whisper_folder(path, corpus) -> torch.nn.Module:
    """A tiny Whisper with a BPE (tokenizer.json) trained on the corpus' transcripts and Whisper's
    special tokens, saved as a Hugging Face folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    texts = [json.loads(line)["text"] for line in (corpus / "train.jsonl").read_text().splitlines()]
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=WHISPER_SPECIALS)
    bpe.train_from_iterator(texts * 5, trainer)
    config = transformers.WhisperConfig(
        vocab_size=bpe.get_vocab_size(), num_mel_bins=80, d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=300, max_target_positions=64,
        pad_token_id=0, bos_token_id=0, eos_token_id=0, decoder_start_token_id=1, suppress_tokens=None, begin_suppress_tokens=None,
    )  # fmt: skip
    model = transformers.WhisperForConditionalGeneration(config).eval()
    _trained_scale(model)
    model.save_pretrained(path)
    bpe.save(str(path / "tokenizer.json"))
    return model


def test_fine_tuning_from_imported_whisper_weights_through_the_cli(tiny_corpus, tmp_path):
    """``--model.init_args.pretrained DIR``: the model starts from the folder's weights, trains two
    steps on Whisper's BPE targets after Whisper's prompt, validates with greedy decoding, and its
    checkpoint rebuilds (net, weights and BPE) without the folder."""
    from tzoo.tasks.cli import TzooCLI
    from tzoo.tasks.loading import load_module
    from tzoo.tasks.speech.audio import load_audio

    reference = _tiny_whisper_folder(tmp_path / "whisper", tiny_corpus)
    args = [
        "--config", "configs/speech/espeak_tiny.yaml", "--data.init_args.source=manifest", f"--data.init_args.data_dir={tiny_corpus}",
        "--data.init_args.batch_size=3", f"--model.init_args.pretrained={tmp_path / 'whisper'}", "--model.init_args.ctc_weight=0",
        "--model.init_args.beam_ctc_weight=0", "--model.init_args.examples=0", "--model.init_args.max_text_len=8",
        "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=2", "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
    ]  # fmt: skip
    cli = TzooCLI(args=args, run=False)
    module = cli.model
    assert module.model.cfg.frontend == "whisper" and module.whisper.prompt == [1, 2, 3, 4]
    assert torch.equal(module.model.embed.weight, reference.model.decoder.embed_tokens.weight)
    before = module.model.decoder.blocks[0].feed_forward.fc1.weight.detach().clone()
    cli.trainer.fit(module, datamodule=cli.datamodule)
    assert not torch.equal(module.model.decoder.blocks[0].feed_forward.fc1.weight, before)  # it trained
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and "val/cer" in metrics and "val/cer_ctc" not in metrics
    (ckpt,) = (tmp_path / "runs").rglob("last.ckpt")
    import shutil

    shutil.rmtree(tmp_path / "whisper")  # the checkpoint holds the net, the weights and the BPE
    again = load_module(ckpt).eval()
    assert again.whisper.prompt == [1, 2, 3, 4] and again.model.cfg.text_vocab_size == reference.config.vocab_size
    wave = load_audio(next((tiny_corpus / "test").glob("*.wav")))
    (text,) = again.transcribe(wave[None], torch.tensor([len(wave)]))
    assert isinstance(text, str)

    # tzoo export CKPT --to hf DIR: the fine-tuned weights and BPE as a Whisper folder HF loads
    from tzoo.tasks.cli import main

    main(["export", str(ckpt), "--to", "hf", str(tmp_path / "exported")])
    back = transformers.WhisperForConditionalGeneration.from_pretrained(tmp_path / "exported").eval()
    mel = torch.randn(1, 80, 600, generator=torch.Generator().manual_seed(3))
    ids = torch.tensor([again.whisper.prompt])
    with torch.no_grad():
        assert (back(input_features=mel, decoder_input_ids=ids).logits - _ours(again.model, mel, ids)[1]).abs().max() <= 1e-4
    assert back.config.decoder_start_token_id == 1 and back.config.eos_token_id == 0
    assert WhisperTextTokenizer.load(tmp_path / "exported").encode("the") == again.whisper.tokenizer.encode("the")


def test_ctc_weights_without_a_ctc_head_are_refused():
    from tzoo.core import TransformerConfig
    from tzoo.tasks.speech.model import SpeechConfig
    from tzoo.tasks.speech.module import SpeechRecognizer

    small = TransformerConfig(dim=16, depth=1, num_heads=2)
    net = SpeechConfig(ctc=False, encoder=small, decoder=small)
    with pytest.raises(ValueError, match=r"ctc_weight=0\.3 needs a CTC head, which this model has none of \(net\.ctc=False.*set ctc_weight=0"):
        SpeechRecognizer(net, ctc_weight=0.3)
    with pytest.raises(ValueError, match=r"beam_ctc_weight=0\.5 needs a CTC head.*set beam_ctc_weight=0"):
        SpeechRecognizer(net, ctc_weight=0.0)
    assert SpeechRecognizer(net, ctc_weight=0.0, beam_ctc_weight=0.0).model.ctc_head is None


def test_a_whisper_shaped_character_model_decodes_the_same_with_and_without_the_kv_cache():
    """The Whisper options on the task's own character model (trained from scratch): learned decoder
    positions follow the cache's offset in greedy and beam search."""
    from tzoo.core import TransformerConfig
    from tzoo.tasks.speech.decoding import beam_search, greedy
    from tzoo.tasks.speech.model import SpeechConfig, SpeechTransformer

    torch.manual_seed(1)
    stack = TransformerConfig(dim=32, depth=1, num_heads=2)
    model = SpeechTransformer(SpeechConfig(frontend="whisper", subsampling=2, max_frames=50, encoder_position="whisper",
                                           decoder_position="learned", max_text_positions=16, encoder=stack, decoder=stack)).eval()  # fmt: skip
    _trained_scale(model, seed=3)  # sharp scores: varied tokens, no near-ties between hypotheses
    with torch.no_grad():
        encoded, mask = model.encode(torch.randn(2, 12000), torch.tensor([12000, 7000]))
    assert encoded.shape[1] == 50 and bool(mask.all())  # padded to max_frames, all attended
    tokens = greedy(model, encoded, mask, max_len=12)
    assert tokens == greedy(model, encoded, mask, max_len=12, use_cache=False) and len(set(tokens[0])) > 1  # the token changes with position
    assert beam_search(model, encoded[:1], beam=3, max_len=12) == beam_search(model, encoded[:1], beam=3, max_len=12, use_cache=False)
