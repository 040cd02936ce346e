"""The speech task through the tzoo CLI: fit a few steps on the tiny generated corpus, then test and
predict (a WAV file) from the checkpoint; the data module's bad inputs."""

import json
import re
import shutil
import textwrap

import pytest
import torch

from tzoo.tasks.cli import main
from tzoo.tasks.speech.data import SpeechDataModule, collate
from tzoo.tasks.speech.module import SpeechRecognizer


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
          init_args: {{dim: 32, encoder_depth: 1, decoder_depth: 1, num_heads: 2, warmup_steps: 2, beam_size: 2, examples: 2}}
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
    assert {"train/loss", "train/ctc", "train/ce", "val/loss", "val/cer", "val/wer", "val/cer_ctc"} <= set(header)
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
    wave, lengths, _, _ = next(iter(data.test_dataloader()))
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
    other = SpeechRecognizer(alphabet="abcdefgh", dim=32, encoder_depth=1, decoder_depth=1, num_heads=2)
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
