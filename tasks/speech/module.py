"""LightningModule of the speech task: the speech transformer trained on
λ·CTC + (1 − λ)·cross-entropy (``ctc_weight`` = λ).

Logs ``train/loss`` (and its CTC and cross-entropy parts), ``val/loss``, ``val/cer`` and ``val/wer``
(attention greedy decoding, torchmetrics), ``val/cer_ctc`` (CTC greedy decoding of the same
encoder output: the decoder alone can lose its place and repeat a phrase, which the CTC head and
the joint beam do not), and ``test/cer`` / ``test/wer`` (joint CTC/attention beam search of width
``beam_size``; ``test/cer_ctc`` from CTC greedy beside them). After each validation it writes a few
reference/hypothesis pairs to ``<log dir>/examples.txt`` and the alignment picture of the first
validation utterance to ``<log dir>/alignment/step_<N>.png``. ``tzoo predict`` writes
``transcripts.jsonl`` (audio, text) into the log dir.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor
from torchmetrics.text import CharErrorRate, WordErrorRate

from tzoo.tasks.base import TaskModule
from tzoo.tasks.speech.corpus import ALPHABET
from tzoo.tasks.speech.data import IGNORE
from tzoo.tasks.speech.decoding import beam_search, ctc_greedy, greedy, max_tokens
from tzoo.tasks.speech.model import SpeechTransformer
from tzoo.tasks.speech.tokenizer import BOS, EOS, text_tokenizer

__all__ = ["SpeechRecognizer", "TranscriptWriter"]


class SpeechRecognizer(TaskModule):
    task_name = "speech"
    card_metric = "val/cer"

    def __init__(
        self,
        alphabet: str = ALPHABET,
        sample_rate: int = 16000,
        *,
        dim: int = 192,
        encoder_depth: int = 6,
        decoder_depth: int = 3,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        encoder_position: Literal["sinusoidal", "rope"] = "sinusoidal",
        max_frames: int = 750,
        freq_masks: int = 2,
        time_masks: int = 2,
        freq_warp: float = 0.0,
        formant_warp: float = 0.0,
        subsampling: int = 4,
        ctc_weight: float = 0.3,
        label_smoothing: float = 0.1,
        beam_size: int = 4,
        beam_ctc_weight: float = 0.5,
        max_text_len: int = 300,
        examples: int = 4,
        lr: float = 1e-3,
        min_lr: float | None = None,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup_steps: int = 300,
        compile: bool = False,
    ) -> None:
        """``alphabet`` and ``sample_rate`` are linked from the data by the tzoo CLI. ``beam_size``:
        the beam width of test and predict decoding; ``beam_ctc_weight``: the CTC head's weight in
        the beam's joint CTC/attention scores (0: the decoder's alone); ``examples``: reference/hypothesis pairs
        written after each validation (0: none, and no alignment picture). ``compile``:
        ``torch.compile`` the model's training forward (in place: checkpoints keep the plain keys)."""
        super().__init__(lr=lr, min_lr=min_lr, weight_decay=weight_decay, betas=betas, warmup_steps=warmup_steps, compile=compile)
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1] (the CTC share of the loss), got {ctc_weight}")
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if not 0.0 <= beam_ctc_weight <= 1.0:
            raise ValueError(f"beam_ctc_weight must be in [0, 1] (the CTC share of a hypothesis' score), got {beam_ctc_weight}")
        self.save_hyperparameters()
        self.tokenizer = text_tokenizer(alphabet)
        self.model = SpeechTransformer(
            self.tokenizer.vocab_size, sample_rate=sample_rate, dim=dim, encoder_depth=encoder_depth,
            decoder_depth=decoder_depth, num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=dropout,
            encoder_position=encoder_position, max_frames=max_frames, freq_masks=freq_masks, time_masks=time_masks,
            subsampling=subsampling, freq_warp=freq_warp, formant_warp=formant_warp,
        )  # fmt: skip
        self.ctc_weight, self.label_smoothing, self.beam_size = ctc_weight, label_smoothing, beam_size
        self.beam_ctc_weight = beam_ctc_weight
        self.max_text_len, self.examples = max_text_len, examples
        self.val_cer, self.val_wer, self.val_cer_ctc = CharErrorRate(), WordErrorRate(), CharErrorRate()
        self.test_cer, self.test_wer, self.test_cer_ctc = CharErrorRate(), WordErrorRate(), CharErrorRate()
        self._examples: list[tuple[str, str]] = []
        self._step_start: float | None = None

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        for name in ("alphabet", "sample_rate"):
            if data is not None and hasattr(data, name) and getattr(data, name) != self.hparams[name]:
                raise ValueError(
                    f"the model has {name}={self.hparams[name]!r} but the data has {name}={getattr(data, name)!r}: "
                    f"use a checkpoint trained with this {name}, or set the data's {name} to the model's"
                )

    # --- losses -------------------------------------------------------------------------------

    def _losses(self, batch: tuple[Tensor, Tensor, Tensor, Tensor], encoded: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, CTC part, cross-entropy part); ``encoded``: the batch's encoder output and mask,
        when the caller has them already (validation decodes from the same ones)."""
        wave, lengths, tokens, token_lengths = batch
        # decoder input: <s> and the transcript (padding read as </s>; it only feeds ignored positions)
        inputs = torch.cat([torch.full_like(tokens[:, :1], BOS), tokens[:, :-1]], dim=1).masked_fill_(
            torch.cat([torch.zeros_like(tokens[:, :1], dtype=torch.bool), tokens[:, :-1] == IGNORE], 1), EOS
        )  # (B, T)
        ctc_logits, mask, logits = self.model(wave, lengths, inputs) if encoded is None else self.model.heads(*encoded, inputs)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten(), ignore_index=IGNORE, label_smoothing=self.label_smoothing)
        # CTC targets: the transcript without </s>
        targets = tokens.masked_fill(tokens == EOS, IGNORE)[:, :-1].clamp_min(0)  # (B, T - 1); padding is never read
        log_probs = ctc_logits.float().log_softmax(-1).transpose(0, 1)  # (N, B, V)
        ctc = F.ctc_loss(log_probs, targets, mask.sum(-1), token_lengths - 1, blank=0, zero_infinity=True)
        return self.ctc_weight * ctc + (1 - self.ctc_weight) * ce, ctc, ce

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_start = time.perf_counter()

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, ctc, ce = self._losses(batch)
        self.log_train_metrics({"train/loss": loss, "train/ctc": ctc, "train/ce": ce}, prog_bar=("train/loss",))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._step_start is not None:
            audio_seconds = float(batch[1].sum()) / self.hparams.sample_rate
            self.log_train_metrics({"train/audio_s_per_s": audio_seconds / (time.perf_counter() - self._step_start)})

    def count_nodes(self, batch: Any) -> int | None:
        return int(self.model.frontend.subsampled(self.model.frontend.logmel.frames(batch[1])).sum())

    # --- evaluation ---------------------------------------------------------------------------

    def text(self, ids: list[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i > EOS])

    def _references(self, tokens: Tensor) -> list[str]:
        return [self.text([t for t in row if t >= 0]) for row in tokens.tolist()]

    def transcribe(self, wave: Tensor, lengths: Tensor, *, method: Literal["beam", "greedy", "ctc"] = "beam") -> list[str]:
        """(B, S) samples, (B,) lengths -> transcripts."""
        return self._decode(*self.model.encode(wave, lengths), method=method)

    def _decode(self, memory: Tensor, mask: Tensor, *, method: Literal["beam", "greedy", "ctc"]) -> list[str]:
        """Encoder output (B, N, D) and its mask (B, N) -> transcripts."""
        if method == "ctc":
            return [self.text(ids) for ids in ctc_greedy(self.model.ctc_head(memory), mask)]
        limit = max_tokens(int(mask.sum(-1).max()), self.max_text_len)
        if method == "greedy":
            return [self.text(ids) for ids in greedy(self.model, memory, mask, max_len=limit)]
        return [self.text(self._beam(memory[i : i + 1, : int(mask[i].sum())])) for i in range(len(memory))]

    def _beam(self, memory: Tensor) -> list[int]:
        """One utterance's unpadded encoder output (1, N, D) -> token ids by beam search, joint with
        the CTC head's prefix scores (weight ``beam_ctc_weight``)."""
        n = memory.shape[1]
        ctc = self.model.ctc_head(memory[0]) if self.beam_ctc_weight > 0 else None
        return beam_search(self.model, memory, beam=self.beam_size, max_len=max_tokens(n, self.max_text_len),
                           ctc_logits=ctc, ctc_weight=self.beam_ctc_weight)  # fmt: skip

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor, Tensor], batch_idx: int) -> None:
        memory, mask = self.model.encode(batch[0], batch[1])
        loss, _, _ = self._losses(batch, (memory, mask))
        self.log("val/loss", loss, batch_size=len(batch[0]), prog_bar=True, sync_dist=True)
        hyps, refs = self._decode(memory, mask, method="greedy"), self._references(batch[2])
        self.val_cer(hyps, refs)
        self.val_wer(hyps, refs)
        self.val_cer_ctc(self._decode(memory, mask, method="ctc"), refs)
        self.log("val/cer", self.val_cer, prog_bar=True)
        self.log("val/wer", self.val_wer)
        self.log("val/cer_ctc", self.val_cer_ctc)
        if batch_idx == 0:
            self._examples = list(zip(refs, hyps))[: self.examples]

    def test_step(self, batch: tuple[Tensor, Tensor, Tensor, Tensor], batch_idx: int) -> None:
        refs = self._references(batch[2])
        memory, mask = self.model.encode(batch[0], batch[1])
        hyps = self._decode(memory, mask, method="beam")
        self.test_cer(hyps, refs)
        self.test_wer(hyps, refs)
        self.test_cer_ctc(self._decode(memory, mask, method="ctc"), refs)
        self.log("test/cer", self.test_cer)
        self.log("test/wer", self.test_wer)
        self.log("test/cer_ctc", self.test_cer_ctc)

    def predict_step(self, batch: tuple[Tensor, Tensor, Tensor, Tensor], batch_idx: int) -> list[str]:
        return self.transcribe(batch[0], batch[1], method="beam")

    def configure_callbacks(self) -> list[pl.Callback]:
        return [TranscriptWriter()]

    def on_validation_epoch_end(self) -> None:
        trainer = self.trainer
        if self.examples <= 0 or trainer.sanity_checking:
            return
        folder = self.run_dir()  # on every rank: log_dir is a collective under DDP
        if folder is None or not trainer.is_global_zero:
            return
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "examples.txt", "a", encoding="utf-8") as f:
            f.write(f"step {self.global_step}\n")
            for ref, hyp in self._examples:
                f.write(f"  ref: {ref}\n  hyp: {hyp}\n")
        data = getattr(trainer, "datamodule", None)
        if data is None or not hasattr(data, "split_entries"):
            return
        from tzoo.tasks.speech.audio import load_audio

        entry = data.split_entries("val")[0]
        wave = load_audio(entry["audio"], self.hparams.sample_rate).to(self.device)
        self.draw_alignment(wave, folder / "alignment" / f"step_{self.global_step:06d}.png", reference=entry["text"])

    def draw_alignment(self, wave: Tensor, path: str | Path, *, reference: str = "") -> Path:
        """Transcribe one waveform (S,) and draw its log-mel and cross-attention alignment to ``path``."""
        from tzoo.tasks.speech.alignment import alignment_figure

        was_training = self.training
        self.eval()
        with torch.inference_mode():
            memory, _ = self.model.encode(wave[None], torch.tensor([len(wave)], device=wave.device))
            ids = self._beam(memory)
        self.train(was_training)
        hyp = self.text(ids)
        title = f"hypothesis: {hyp!r}" + (f"\nreference: {reference!r}" if reference else "")
        return alignment_figure(self.model, wave.cpu(), ids, list(hyp), path, title=title)

    # --- checkpoints --------------------------------------------------------------------------

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stamp = checkpoint.get("tzoo", {})
        if stamp.get("task", self.task_name) != self.task_name:
            raise ValueError(
                f"this checkpoint was written by the {stamp.get('task')!r} task ({stamp.get('class_path')}), "
                f"not by the speech recognizer ('speech')"
            )
        # checked before Lightning loads the weights: otherwise a mismatch is a shape error deep inside
        trained = checkpoint.get("hyper_parameters", {}).get("alphabet")
        if trained is not None and trained != self.hparams.alphabet:
            raise ValueError(
                f"the checkpoint was trained with alphabet={trained!r}, but this model has alphabet={self.hparams.alphabet!r}: "
                f"use data with the checkpoint's alphabet, or train a new model"
            )


class TranscriptWriter(BasePredictionWriter):
    """Writes ``transcripts.jsonl`` (``{"audio": file, "text": transcript}`` per line) into the log dir."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any) -> None:
        if not trainer.is_global_zero or not predictions:
            return
        outputs = predictions[0] if isinstance(predictions[0], list) and predictions[0] and isinstance(predictions[0][0], list) else predictions
        texts = [t for batch in outputs for t in batch]
        data = getattr(trainer, "datamodule", None)
        entries = data.predict_entries() if data is not None and hasattr(data, "predict_entries") else [{} for _ in texts]
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "transcripts.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for entry, text in zip(entries, texts):
                f.write(json.dumps({"audio": entry.get("audio"), "text": text}) + "\n")
                print(f"{entry.get('audio')}: {text}")
        print(f"wrote {len(texts)} transcripts to {path}")
