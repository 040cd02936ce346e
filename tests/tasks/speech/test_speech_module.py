"""The speech task through the tzoo CLI: fit a few steps on the tiny generated corpus, then test and
predict (a WAV file) from the checkpoint; older flat checkpoints; compile; the data module's bad
inputs."""

import json
import re
import shutil
import textwrap

import pytest
import torch

from tzoo.core import TransformerConfig
from tzoo.tasks.cli import main
from tzoo.tasks.loading import load_module
from tzoo.tasks.speech.corpus import WORDS
from tzoo.tasks.speech.data import SpeechDataModule, collate
from tzoo.tasks.speech.model import SpeechConfig
from tzoo.tasks.speech.module import SpeechRecognizer


def _net(**kwargs):
    stack = dict(dim=32, depth=1, num_heads=2)
    return SpeechConfig(encoder=TransformerConfig(**stack), decoder=TransformerConfig(**stack, position="rope"), **kwargs)


def _config(path, root, data_dir):
    path.write_text(textwrap.dedent(f"""\
        seed_everything: 0
        trainer:
          max_steps: 4
          val_check_interval: 2
          limit_val_batches: 1
          default_root_dir: {root}
          enable_progress_bar: false
          enable_model_summary: false
          log_every_n_steps: 1
        model:
          class_path: tzoo.tasks.speech.module.SpeechRecognizer
          init_args:
            net:
              encoder: {{dim: 32, depth: 1, num_heads: 2}}
              decoder: {{dim: 32, depth: 1, num_heads: 2}}
            optim: {{warmup_steps: 2}}
            beam_size: 2
            examples: 2
        data:
          class_path: tzoo.tasks.speech.data.SpeechDataModule
          init_args: {{source: manifest, data_dir: {data_dir}, batch_size: 3}}
        """))
    return path


@pytest.fixture(scope="module")
def fitted(tiny_corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("speech_fit")
    config = _config(tmp / "speech.yaml", tmp / "runs", tiny_corpus)
    main(["fit", "--config", str(config)])
    (ckpt,) = (tmp / "runs").rglob("last.ckpt")
    return config, ckpt.parent.parent, ckpt


def test_fit_logs_error_rates_examples_and_alignment(fitted):
    _, run, _ = fitted
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "train/ctc", "train/ce", "train/audio_s_per_s", "val/loss", "val/cer", "val/wer", "val/cer_ctc"} <= set(header)
    assert "ref: " in (run / "examples.txt").read_text()
    assert list((run / "alignment").glob("step_*.png"))


def test_without_a_logger_validation_writes_nothing_in_the_working_directory(fitted, tmp_path, monkeypatch):
    # Without a logger Lightning's log_dir is the default root (the working directory unless set):
    # examples and alignment pictures then go nowhere (as `tzoo check` runs it)
    config, _, ckpt = fitted
    monkeypatch.chdir(tmp_path)
    main(["validate", "--config", str(config), "--ckpt_path", str(ckpt), "--trainer.logger=false",
          f"--trainer.default_root_dir={tmp_path / 'root'}"])  # fmt: skip
    assert not [p for p in tmp_path.rglob("*") if p.name in ("examples.txt", "alignment")]


def test_test_and_predict_on_a_wav_from_the_checkpoint(fitted, tiny_corpus, tmp_path):
    config, _, ckpt = fitted
    main(["test", "--config", str(config), "--ckpt_path", str(ckpt), f"--trainer.default_root_dir={tmp_path / 't'}"])
    metrics = (next((tmp_path / "t").rglob("metrics.csv"))).read_text()
    assert "test/cer" in metrics and "test/wer" in metrics
    wav = tmp_path / "hello.wav"
    shutil.copy(tiny_corpus / "test" / "000000.wav", wav)
    main(["predict", "--config", str(config), "--ckpt_path", str(ckpt), f"--data.init_args.predict_files=[{wav}]",
          f"--trainer.default_root_dir={tmp_path / 'p'}"])
    (out,) = (tmp_path / "p").rglob("transcripts.jsonl")
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["audio"] == str(wav) and isinstance(line["text"], str)


def _test_metrics(config, ckpt, root, *extra):
    """``tzoo test`` -> {metric: its value} from the run's metrics.csv."""
    import csv

    main(["test", "--config", str(config), "--ckpt_path", str(ckpt), f"--trainer.default_root_dir={root}", *extra])
    with open(next(root.rglob("metrics.csv"))) as f:
        return {k: float(v) for row in csv.DictReader(f) for k, v in row.items() if v and k not in ("step", "epoch")}


def test_test_reports_error_rates_per_split_engine_and_voice(fitted, tiny_corpus, tmp_path):
    """test/cer is the test split's; test/cer/<engine> and test/cer/<engine>/<voice> are the module's
    beam on those utterances (checked by hand), the engines' errors add up to the split's; the
    real-sentence split is reported apart; a manifest that does not name engines reports the split alone."""
    from torchmetrics.functional.text import char_error_rate

    from tzoo.tasks.speech.audio import load_audio
    from tzoo.tasks.speech.corpus import read_manifest, report_groups, write_manifest

    config, _, ckpt = fitted
    metrics = _test_metrics(config, ckpt, tmp_path / "t", "--data.init_args.batch_size=1")  # batch 1: as transcribed alone below
    test = read_manifest(tiny_corpus / "test.jsonl")
    module = SpeechRecognizer.load_from_checkpoint(ckpt).eval()
    hyps = {}
    with torch.no_grad():
        for e in test:
            wave = load_audio(e["audio"])
            hyps[e["audio"]] = module.transcribe(wave[None], torch.tensor([len(wave)]), method="beam")[0]
    groups = {g for e in test for g in report_groups(e)}
    for g in groups:
        mine = [e for e in test if g in report_groups(e)]
        by_hand = float(char_error_rate([hyps[e["audio"]] for e in mine], [e["text"] for e in mine]))
        assert metrics[f"test/cer/{g}"] == pytest.approx(by_hand, abs=1e-6), g
        assert f"test/wer/{g}" in metrics
    engines = {report_groups(e)[0] for e in test}
    chars = {g: sum(len(e["text"]) for e in test if report_groups(e)[0] == g) for g in engines}
    assert sum(metrics[f"test/cer/{g}"] * chars[g] for g in engines) / sum(chars.values()) == pytest.approx(metrics["test/cer"], abs=1e-5)
    sentence = read_manifest(tiny_corpus / "test_sentences.jsonl")[0]
    assert {"test_sentences/cer", "test_sentences/wer", "test_sentences/cer_ctc", f"test_sentences/cer/{report_groups(sentence)[1]}"} <= set(metrics)

    plain = tmp_path / "plain"  # a user's manifests: no engine fields, no sentence split
    plain.mkdir()
    for split in ("train", "val", "test"):
        write_manifest(plain / f"{split}.jsonl", [{"audio": e["audio"], "text": e["text"]} for e in read_manifest(tiny_corpus / f"{split}.jsonl")])
    metrics = _test_metrics(config, ckpt, tmp_path / "p", f"--data.init_args.data_dir={plain}")
    assert {"test/cer", "test/wer", "test/cer_ctc"} <= set(metrics)
    assert not [k for k in metrics if k.startswith(("test/cer/", "test_sentences"))]


def test_test_with_the_warp_search_per_speaker_pools_over_each_speakers_utterances_in_the_loaders_order(fitted, tiny_corpus, tmp_path):
    """``warp_search_by: speaker`` through ``tzoo test``: the test loader tags each utterance with its
    speaker (``corpus.speaker_of``), and every per-voice error rate is the module's beam at the
    speaker's warp pooled over the utterances before it, as taken by hand from the same loader."""
    from torchmetrics.functional.text import char_error_rate

    from tzoo.tasks.speech.corpus import read_manifest, report_groups, speaker_of

    config, _, ckpt = fitted
    search = ["--model.init_args.warp_search=[0.85, 1.0, 1.15]", "--model.init_args.warp_search_by=speaker", "--data.init_args.batch_size=1"]
    metrics = _test_metrics(config, ckpt, tmp_path / "t", *search)
    module = SpeechRecognizer.load_from_checkpoint(ckpt, warp_search=[0.85, 1.0, 1.15], warp_search_by="speaker").eval()
    data = SpeechDataModule("manifest", data_dir=str(tiny_corpus), batch_size=1)
    data.setup("test")
    entries = {e["audio"]: e for split in ("test", "test_sentences") for e in read_manifest(tiny_corpus / f"{split}.jsonl")}
    loader = data.test_dataloader()
    order = [loader.dataset.entries[i] for batch in loader.batch_sampler for i in batch]
    pairs: dict[str, list[tuple[str, str]]] = {}
    with torch.no_grad():
        for entry, (wave, lengths, _, _, tags) in zip(order, loader):
            assert tags[0][2] == speaker_of(entries[entry["audio"]]) is not None  # the tag names the speaker
            (hyp,) = module.transcribe(wave, lengths, method="beam", speakers=[tags[0][2]])
            if tags[0][0] == "test":
                for g in report_groups(entry):
                    pairs.setdefault(g, []).append((hyp, entry["text"]))
    assert len(module.speaker_warps.totals) >= 2  # several speakers were pooled apart
    for g, p in pairs.items():
        assert metrics[f"test/cer/{g}"] == pytest.approx(float(char_error_rate(*map(list, zip(*p)))), abs=1e-6), g


def test_load_module_takes_decoding_settings_that_replace_the_checkpoints_and_checks_them(fitted):
    """What the benchmarks use to decode a checkpoint with settings chosen after training: the
    constructor's arguments win over the checkpoint's and are checked as the constructor checks them."""
    _, _, ckpt = fitted
    plain = load_module(ckpt, task="speech")
    module = load_module(ckpt, task="speech", beam_size=3, warp_search=[0.9, 1.0], warp_search_by="speaker")
    assert (plain.beam_size, plain.warp_search, plain.warp_search_by) == (2, None, "utterance")
    assert (module.beam_size, module.warp_search, module.warp_search_by) == (3, (0.9, 1.0), "speaker")
    assert module.hparams["beam_size"] == 3
    torch.testing.assert_close(module.state_dict(), plain.state_dict())  # the weights are the checkpoint's
    with pytest.raises(ValueError, match=r"warp_search_by='speaker' pools the warp search .* warp_search=None searches nothing"):
        load_module(ckpt, task="speech", warp_search_by="speaker")


def test_predict_transcribes_a_very_short_clip_and_names_a_nan_one(fitted, tmp_path, capsys):
    # (256 samples or fewer crashed in the front end's padding; a NaN sample transcribed as "")
    import numpy as np
    import soundfile

    config, _, ckpt = fitted
    short, glitch = tmp_path / "click.wav", tmp_path / "glitch.wav"
    soundfile.write(short, np.full(200, 0.1, dtype=np.float32), 16000)
    samples = np.full(4000, 0.1, dtype=np.float32)
    samples[1000] = np.nan
    soundfile.write(glitch, samples, 16000, subtype="FLOAT")
    main(["predict", "--config", str(config), "--ckpt_path", str(ckpt), f"--data.init_args.predict_files=[{short}]",
          f"--trainer.default_root_dir={tmp_path / 'p'}"])  # fmt: skip
    (out,) = (tmp_path / "p").rglob("transcripts.jsonl")
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["audio"] == str(short) and isinstance(line["text"], str)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--config", str(config), "--ckpt_path", str(ckpt), f"--data.init_args.predict_files=[{glitch}]",
              f"--trainer.default_root_dir={tmp_path / 'q'}"])  # fmt: skip
    assert exit_info.value.code == 2
    assert re.search(r"^tzoo: error: audio file '.*glitch\.wav' has 1 sample that is NaN or infinite \(the first at sample 1000, 0\.062 s\)", capsys.readouterr().err, re.M)


def test_module_transcribes_by_hand(fitted, tiny_corpus):
    _, _, ckpt = fitted
    module = SpeechRecognizer.load_from_checkpoint(ckpt).eval()
    data = SpeechDataModule("manifest", data_dir=str(tiny_corpus), batch_size=2)
    data.setup("test")
    wave, lengths = next(iter(data.test_dataloader()))[:2]  # (test batches add tags: the fifth element)
    with torch.no_grad():
        for method in ("beam", "greedy", "ctc"):
            assert len(module.transcribe(wave, lengths, method=method)) == 2


def test_predict_files_that_do_not_exist_are_named(tiny_corpus):
    data = SpeechDataModule("manifest", data_dir=str(tiny_corpus), predict_files=["/no/such/file.wav"])
    with pytest.raises(FileNotFoundError, match=r"audio file '/no/such/file\.wav' \(in predict_files\) does not exist"):
        data.predict_entries()


def test_bad_manifest_line_stops_setup_with_its_line_number(tiny_corpus, tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root)
    lines = (root / "train.jsonl").read_text().splitlines()
    lines[3] = lines[3][:-5]
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"train\.jsonl:4: not valid JSON"):
        SpeechDataModule("manifest", data_dir=str(root)).setup("fit")


def test_missing_audio_file_in_a_manifest_is_named_before_training(tiny_corpus, tmp_path, capsys):
    # (found when a batch first reached it: for a training file, mid-epoch)
    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root)
    (root / "val" / "000001.wav").unlink()
    data = SpeechDataModule("manifest", data_dir=str(root), batch_size=3)
    with pytest.raises(FileNotFoundError, match=r"val\.jsonl:2: audio file '.*val/000001\.wav' does not exist"):
        data.setup("validate")
    (root / "train" / "000004.wav").unlink()
    config = _config(tmp_path / "speech.yaml", tmp_path / "runs", root)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config)])
    assert exit_info.value.code == 2
    assert re.search(r"^tzoo: error: .*train\.jsonl:5: audio file '.*train/000004\.wav' does not exist$", capsys.readouterr().err, re.M)
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


def test_model_and_data_must_agree_on_the_alphabet(fitted, tiny_corpus, tmp_path, capsys):
    config, _, ckpt = fitted
    other = SpeechRecognizer(_net(alphabet="abcdefgh"))
    with pytest.raises(ValueError, match=r"trained with alphabet=.* but this model has alphabet='abcdefgh'"):
        other.on_load_checkpoint(torch.load(ckpt, weights_only=False))
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--config", str(config), "--ckpt_path", str(ckpt), "--data.init_args.alphabet=abcdefgh ",
              f"--trainer.default_root_dir={tmp_path}"])
    assert exit_info.value.code == 2
    assert re.search(r"^tzoo: error: .*character\(s\) .* outside the vocabulary 'abcdefgh '", capsys.readouterr().err, re.M)


def test_collate_pads_audio_with_zeros_and_text_with_ignore():
    batch = collate([(torch.ones(5), torch.tensor([3, 4, 2])), (torch.ones(3), torch.tensor([5, 2]))])
    wave, lengths, tokens, token_lengths = batch
    assert wave.tolist()[1] == [1, 1, 1, 0, 0] and lengths.tolist() == [5, 3]
    assert tokens.tolist() == [[3, 4, 2], [5, 2, -100]] and token_lengths.tolist() == [3, 2]


def test_transcribing_predict_files_synthesizes_no_corpus(tiny_corpus, tmp_path):
    from types import SimpleNamespace

    from lightning.pytorch.trainer.states import TrainerFn

    wav = tmp_path / "hello.wav"
    shutil.copy(tiny_corpus / "test" / "000000.wav", wav)
    # a corpus of 4 utterances: without the rule it would be synthesized in a second, and this fail
    data = SpeechDataModule("espeak", data_dir=str(tmp_path / "corpus"), predict_files=[str(wav)], corpus_size=(2, 1, 1))
    data.trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.PREDICTING))  # as `tzoo predict` runs it
    data.prepare_data()
    data.setup("predict")
    (batch,) = list(data.predict_dataloader())
    assert batch[0].shape[0] == 1
    assert not (tmp_path / "corpus").exists()  # nothing synthesized for the one file asked for


def test_an_older_tzoos_flat_checkpoint_loads_through_the_migration(fitted, tiny_corpus, tmp_path):
    """Before net/optim, SpeechRecognizer took dim, encoder_depth, lr ... flat: such a checkpoint
    still loads (SpeechRecognizer.upgrade_hparams) and gives the same model."""
    _, _, ckpt = fitted
    checkpoint = torch.load(ckpt, weights_only=True)
    hp = checkpoint["hyper_parameters"]
    net, optim = hp.pop("net"), hp.pop("optim")
    encoder, decoder = net.pop("encoder"), net.pop("decoder")
    assert net.pop("encoder_position") == "sinusoidal" and decoder["position"] == "rope" and net.pop("n_mels") == 80
    flat = {**hp, **net, **optim, "encoder_position": "sinusoidal", "encoder_depth": encoder["depth"], "decoder_depth": decoder["depth"],
            **{k: encoder[k] for k in ("dim", "num_heads", "mlp_ratio", "dropout")}}  # fmt: skip
    checkpoint["hyper_parameters"] = flat
    old = tmp_path / "flat.ckpt"
    torch.save(checkpoint, old)
    module, new = load_module(old, task="speech"), load_module(ckpt, task="speech")
    assert module.hparams.net == new.hparams.net and module.optim == new.optim
    data = SpeechDataModule("manifest", data_dir=str(tiny_corpus), batch_size=2)
    data.setup("test")
    wave, lengths = next(iter(data.test_dataloader()))[:2]  # (test batches add tags: the fifth element)
    with torch.no_grad():
        assert module.transcribe(wave, lengths, method="greedy") == new.transcribe(wave, lengths, method="greedy")
    # a checkpoint of another alphabet is refused before its weights are read, old layout or new
    other = SpeechRecognizer(_net(alphabet="abc"))
    with pytest.raises(ValueError, match=r"trained with alphabet=\" '0123.*but this model has alphabet='abc'"):
        other.on_load_checkpoint(checkpoint)


def test_old_flat_settings_fill_in_the_old_defaults():
    # a config of an older tzoo names only what it changed: the rest are the old defaults, not the
    # core's (TransformerConfig: dim 256, no dropout, no decoder RoPE; OptimConfig: weight decay 0.1)
    up = SpeechRecognizer.upgrade_hparams({"dim": 64, "encoder_position": "rope", "lr": 2e-3, "beam_size": 2})
    module = SpeechRecognizer(up["net"], up["optim"], beam_size=up["beam_size"])
    enc, dec = module.model.cfg.encoder, module.model.cfg.decoder
    assert (enc.dim, enc.depth, enc.dropout, enc.position, module.model.cfg.encoder_position) == (64, 6, 0.1, "rope", "none")
    assert (dec.dim, dec.depth, dec.position) == (64, 3, "rope")
    assert (module.optim.lr, module.optim.weight_decay, module.optim.betas, module.optim.warmup_steps) == (2e-3, 0.05, (0.9, 0.98), 300)
    assert SpeechRecognizer.upgrade_hparams({"beam_size": 2}) == {"beam_size": 2}  # task options alone: nothing to move


def test_an_unknown_field_of_a_stack_is_named_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"net.decoder has no field 'windw' \(valid fields: dim, depth, .*window"):
        SpeechRecognizer({"decoder": {"windw": 4}})
    with pytest.raises(ValueError, match=r"net has no field 'dim' \(valid fields: alphabet, sample_rate, .*encoder, decoder\)"):
        SpeechRecognizer({"dim": 32})


def test_a_model_of_another_sample_rate_is_refused_when_it_meets_the_data(tiny_corpus, tmp_path):
    import lightning.pytorch as pl

    module = SpeechRecognizer(_net(sample_rate=8000))
    data = SpeechDataModule("manifest", data_dir=str(tiny_corpus), batch_size=3)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1)
    with pytest.raises(ValueError, match=r"the model has sample_rate=8000 but the data .* has sample_rate=16000"):
        trainer.validate(module, datamodule=data)


@pytest.mark.slow
def test_compile_true_compiles_the_training_forward_and_checkpoints_keep_plain_keys(tiny_corpus, tmp_path, monkeypatch):
    # (SpeechRecognizer.setup did not call TaskModule.setup, where compiling was: compile=True did nothing)
    import lightning.pytorch as pl

    from tzoo.tasks.reliability import read_checkpoint

    graphs = []

    def backend(gm, example_inputs):  # dynamo's graphs run as traced (no inductor: fast on CPU)
        graphs.append(gm)
        return gm.forward

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, *args, **kwargs: compile_(fn, backend=backend))
    torch._dynamo.reset()
    module = SpeechRecognizer(_net(), {"warmup_steps": 1}, compile=True, examples=0)
    data = SpeechDataModule("manifest", data_dir=str(tiny_corpus), batch_size=3)
    trainer = pl.Trainer(max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=data)
    assert module.model._compiled_call_impl is not None and graphs  # the training forward went through dynamo
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    keys = list(read_checkpoint(tmp_path / "c.ckpt")["state_dict"])
    assert keys == list(SpeechRecognizer(_net()).state_dict())  # no _orig_mod: loads into a plain model
    torch._dynamo.reset()


def test_predict_with_the_lexicon_option_writes_only_its_words(fitted, tiny_corpus, tmp_path):
    config, _, ckpt = fitted  # a model of a few steps: it cannot spell yet
    wav = tmp_path / "utterance.wav"
    shutil.copy(tiny_corpus / "test" / "000000.wav", wav)
    main(["predict", "--config", str(config), "--ckpt_path", str(ckpt), f"--data.init_args.predict_files=[{wav}]",
          "--model.init_args.lexicon=words", f"--trainer.default_root_dir={tmp_path / 'p'}"])  # fmt: skip
    (out,) = (tmp_path / "p").rglob("transcripts.jsonl")
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["text"] and set(line["text"].split()) <= set(WORDS) | set("0123456789"), line["text"]


def test_intermediate_ctc_takes_its_weight_of_the_ctc_loss():
    """net.inter_ctc + inter_ctc_weight w: CTC part = (1 - w) * output layer's + w * the mean of the
    named layers' (each through the one CTC head); the decoder's cross-entropy is unchanged."""
    import torch.nn.functional as F

    stack = dict(dim=32, depth=3, num_heads=2, dropout=0.0)
    net = SpeechConfig(encoder=TransformerConfig(**stack), decoder=TransformerConfig(**stack, position="rope"), inter_ctc=[1, 2])
    torch.manual_seed(0)
    module = SpeechRecognizer(net, ctc_weight=0.4, inter_ctc_weight=0.3).eval()
    tokens = torch.tensor([[5, 6, 7, 2], [8, 9, 2, -100]])  # </s>-terminated, padded with IGNORE
    batch = (torch.randn(2, 12000) * 0.1, torch.tensor([12000, 9000]), tokens, torch.tensor([4, 3]))
    with torch.no_grad():
        loss, ctc, ce = module._losses(batch)
        out = module.model(batch[0], batch[1], torch.tensor([[1, 5, 6, 7], [1, 8, 9, 2]]))
        targets, lengths, frames = torch.tensor([[5, 6, 7], [8, 9, 0]]), torch.tensor([3, 2]), out.mask.sum(-1)

        def by_hand(logits):
            return F.ctc_loss(logits.log_softmax(-1).transpose(0, 1), targets, frames, lengths, zero_infinity=True)

        expected = 0.7 * by_hand(out.ctc) + 0.3 * (by_hand(out.inter_ctc[0]) + by_hand(out.inter_ctc[1])) / 2
        assert torch.allclose(ctc, expected, atol=1e-5)
        assert torch.allclose(loss, 0.4 * ctc + 0.6 * ce, atol=1e-6)
        plain = SpeechRecognizer(SpeechConfig(encoder=net.encoder, decoder=net.decoder), ctc_weight=0.4).eval()
        plain.load_state_dict(module.state_dict())
        assert torch.allclose(plain._losses(batch)[1], by_hand(out.ctc), atol=1e-5)
    with pytest.raises(ValueError, match=r"inter_ctc_weight must be in \[0, 1\) .*got 1.0"):
        SpeechRecognizer(net, inter_ctc_weight=1.0)
