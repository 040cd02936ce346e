"""A speech fit stopped after its first epoch and resumed from ``last.ckpt`` ends with the same
weights as an uninterrupted fit, with dropout on (the model's random stream has to line up) and with
and without wave augmentation (keyed by epoch and utterance)."""

import textwrap

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tzoo.tasks.cli import main


class StopAfterFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def _config(tmp_path, corpus, name: str, augment: str, workers: int) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            seed_everything: 3
            trainer:
              max_epochs: 3
              limit_val_batches: 1
              num_sanity_val_steps: 0
              default_root_dir: {tmp_path / name}
              enable_progress_bar: false
              enable_model_summary: false
              deterministic: true
              callbacks:
                - class_path: lightning.pytorch.callbacks.ModelCheckpoint
                  init_args: {{save_last: true, save_top_k: 0}}
            model:
              class_path: tzoo.tasks.speech.module.SpeechRecognizer
              init_args:
                net:
                  encoder: {{dim: 32, depth: 1, num_heads: 2, dropout: 0.1}}
                  decoder: {{dim: 32, depth: 1, num_heads: 2, dropout: 0.1}}
                optim: {{warmup_steps: 1}}
                beam_size: 1
                examples: 0
                max_text_len: 20
            data:
              class_path: tzoo.tasks.speech.data.SpeechDataModule
              init_args:
                source: manifest
                data_dir: {corpus}
                batch_size: 3
                augment: {augment}
                workers: {workers}
            """
        )
    )
    return str(path)


def _weights(run_root):
    last = max(run_root.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime_ns)  # a resume may log a new version
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    return ckpt["epoch"], ckpt["state_dict"]


AUGMENT = "{noise: {p: 0.5}, speed: {p: 0.5}, gain: {p: 0.5}}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("augment", "workers"),
    [("{}", 0), (AUGMENT, 0), (AUGMENT, 1)],  # a worker prefetches batches as soon as an iterator exists
    ids=["plain", "augmented", "augmented-worker"],
)
def test_a_resumed_speech_fit_ends_with_the_uninterrupted_weights(tmp_path, tiny_corpus, augment, workers, monkeypatch):
    monkeypatch.setenv("TZOO_CACHE", str(tmp_path / "cache"))
    main(["fit", "--config", _config(tmp_path, tiny_corpus, "straight", augment, workers)])
    resumed = _config(tmp_path, tiny_corpus, "resumed", augment, workers)
    main(["fit", "--config", resumed, "--trainer.callbacks+=test_speech_resume.StopAfterFirstEpoch"])
    assert _weights(tmp_path / "resumed")[0] == 1  # stopped after the first epoch
    (last,) = (tmp_path / "resumed").rglob("last.ckpt")
    main(["fit", "--config", resumed, "--ckpt_path", str(last)])
    (epoch_a, a), (epoch_b, b) = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert epoch_a == epoch_b == 3
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, rtol=0, atol=0, msg=f"{name} differs after resume")
