"""LightningModule of the speech task: the speech transformer trained on
λ·CTC + (1 − λ)·cross-entropy (``ctc_weight`` = λ).

Logs ``train/loss`` (and its CTC and cross-entropy parts), ``train/audio_s_per_s``, ``val/loss``,
``val/cer`` and ``val/wer`` (attention greedy decoding, torchmetrics), ``val/cer_ctc`` (CTC greedy
decoding of the same encoder output: the decoder alone can lose its place and repeat a phrase,
which the CTC head and the joint beam do not), and ``test/cer`` / ``test/wer`` (joint
CTC/attention beam search of width ``beam_size``; ``test/cer_ctc`` from CTC greedy beside them).
Where the test batches say each utterance's engine and voice (the generated corpus), the test also
reports ``test/cer/<engine>`` and ``test/cer/<engine>/<voice>`` (and ``wer``), and the real-sentence
split beside them as ``test_sentences/cer`` (``/wer``, ``/cer_ctc``, per engine and voice too);
``test/cer`` stays the ``test`` split's alone. The per-group numbers are computed per process.
After each validation it writes a few reference/hypothesis pairs to ``<log dir>/examples.txt`` and
the alignment picture of the first validation utterance to ``<log dir>/alignment/step_<N>.png``.
``tzoo predict`` writes ``transcripts.jsonl`` (``{"audio": file, "text": transcript}`` per line)
into the log dir.

The encoder's output is called ``encoded`` here (the decoder's cross-attention context); "memory"
is the core's word for learned memory nodes (``TransformerConfig.num_memory``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.text import CharErrorRate, WordErrorRate

from tzoo.tasks.base import TaskModule
from tzoo.tasks.config import OptimConfig, from_dict, signature_default, to_dict
from tzoo.tasks.speech import vtln
from tzoo.tasks.speech.data import IGNORE
from tzoo.tasks.speech.decoding import beam_search, check_length_penalty, ctc_greedy, greedy, max_tokens
from tzoo.tasks.speech.fusion import LanguageModelScorer
from tzoo.tasks.speech.lexicon import Lexicon
from tzoo.tasks.speech.model import SpeechConfig, SpeechTransformer
from tzoo.tasks.speech.tokenizer import BOS, EOS, text_tokenizer

__all__ = ["SpeechRecognizer"]

# an older tzoo's flat arguments (SpeechRecognizer took the model's and optimizer's arguments
# directly) and their defaults then, which differ from the core's TransformerConfig / OptimConfig
_FLAT_NET = ("alphabet", "sample_rate", "max_frames", "freq_masks", "time_masks", "freq_warp", "formant_warp", "subsampling")
_FLAT_STACK = {"dim": 192, "num_heads": 4, "mlp_ratio": 4.0, "dropout": 0.1}
_FLAT_OPTIM = {"lr": 1e-3, "min_lr": None, "weight_decay": 0.05, "betas": [0.9, 0.98], "warmup_steps": 300}
_FLAT_MODEL = (*_FLAT_NET, *_FLAT_STACK, *_FLAT_OPTIM, "encoder_depth", "decoder_depth", "encoder_position")


class SpeechRecognizer(TaskModule):
    task_name = "speech"
    card_metric = "val/cer"
    throughput_unit = "audio_s"  # train/audio_s_per_s: seconds of audio trained on per second
    strict_links = ("alphabet", "sample_rate")
    predict_file = "transcripts.jsonl"

    def __init__(
        self,
        net: SpeechConfig = SpeechConfig(),
        optim: OptimConfig = OptimConfig(weight_decay=0.05, betas=(0.9, 0.98), warmup_steps=300),
        *,
        ctc_weight: float = 0.3,
        inter_ctc_weight: float = 0.3,
        label_smoothing: float = 0.1,
        beam_size: int = 4,
        beam_ctc_weight: float = 0.5,
        beam_length_penalty: float = 0.0,
        lexicon: str | None = None,
        lm: str | None = None,
        lm_weight: float = 0.0,
        warp_search: list[float] | None = None,
        warp_search_by: Literal["utterance", "speaker"] = "utterance",
        max_text_len: int = 300,
        greedy_window: tuple[float, float] | None = (0.16, 0.5),
        examples: int = 4,
        compile: bool = False,
        pretrained: str | None = None,
    ) -> None:
        """``net``: the model (``SpeechConfig``: the front end, ``alphabet`` and ``sample_rate``,
        linked from the data by the tzoo CLI, and the core's ``TransformerConfig`` twice, as
        ``net.encoder`` and ``net.decoder``). ``optim``: optimizer and schedule. ``ctc_weight``: the
        CTC share of the loss; ``inter_ctc_weight``: the share of that CTC loss taken by the encoder
        layers ``net.inter_ctc`` names (their mean; the output layer's is 1 - it), used only when it
        names some. ``beam_size``: the beam width of test and predict decoding;
        ``beam_ctc_weight``: the CTC head's weight in the beam's joint CTC/attention scores (0: the
        decoder's alone); ``beam_length_penalty``: the beam ranks ended hypotheses by their score over
        (length + 1) ** it (0: the summed scores; ``decoding.beam_search``); ``lexicon``: a closed vocabulary for the beam, a file of words or a name
        (``words``, ``training``: the generated corpus's vocabularies, ``lexicon.lexicon_words``): it
        writes only those words (None: any spelling; not for Whisper, which writes BPE tokens); ``lm``: a
        character language model's checkpoint (the ``lm`` task's, ``fusion.py``) whose log-probabilities,
        times ``lm_weight``, the beam adds to its scores (shallow fusion; None or 0: none); ``warp_search``:
        frequency warp factors at which test and predict decoding encode each utterance, keeping the one
        whose CTC best path is the surest (test-time VTLN, ``vtln.py``; e.g. [0.88, 0.94, 1.0, 1.06, 1.12];
        None: the features as they are; validation never searches); ``warp_search_by``: ``utterance`` (each
        chooses alone) or ``speaker`` (one choice per speaker, pooled over the speaker's utterances decoded
        so far in the test or predict run: the batches' speaker tags, ``corpus.speaker_of``; utterances
        of no known speaker choose alone); ``max_text_len``: the most characters decoding produces; ``greedy_window``:
        (back, forward) seconds around the audio the previous character attended to that attention
        greedy decoding lets the next one attend (``decoding.greedy``: the decoder cannot re-read a
        phrase or skip words; None: the whole utterance); ``examples``:
        reference/hypothesis pairs written after each validation (0: none, and no alignment
        picture). ``compile``: ``torch.compile`` the model's training forward (in place:
        checkpoints keep the plain keys). ``pretrained``: a Hugging Face Whisper folder (or hub id)
        whose architecture (its config.json replaces ``net``'s, but for the alphabet), weights and BPE
        the model takes (``tzoo.tasks.speech.whisper``): it writes Whisper's tokens after Whisper's
        prompt, decodes greedily, and has no CTC head (``ctc_weight`` and ``beam_ctc_weight`` must be 0)."""
        super().__init__(optim=optim, compile=compile)
        if pretrained is not None:
            _refuse_for_whisper(lexicon=lexicon, lm=lm)
        if not (isinstance(lm_weight, (int, float)) and math.isfinite(lm_weight) and lm_weight >= 0):
            raise ValueError(f"lm_weight must be a finite number >= 0 (the language model's weight in the beam), got {lm_weight!r}")
        if lm_weight > 0 and lm is None:
            raise ValueError(f"lm_weight={lm_weight} needs a language model: set lm to an lm-task checkpoint (configs/lm/speech_fusion.yaml)")
        net = from_dict(SpeechConfig, net, where="net", base=signature_default(type(self), "net"))
        if pretrained is not None:
            from tzoo.tasks.speech.whisper import WhisperText, whisper_net

            net = whisper_net(pretrained, net)  # before save_hyperparameters: checkpoints hold Whisper's net
        for name, weight in (("ctc_weight", ctc_weight), ("beam_ctc_weight", beam_ctc_weight)):
            if not net.ctc and weight > 0:
                raise ValueError(f"{name}={weight} needs a CTC head, which this model has none of (net.ctc=False, as Whisper's): set {name}=0")
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1] (the CTC share of the loss), got {ctc_weight}")
        if not 0.0 <= inter_ctc_weight < 1.0:
            raise ValueError(f"inter_ctc_weight must be in [0, 1) (the intermediate layers' share of the CTC loss), got {inter_ctc_weight}")
        alphas = None if warp_search is None else vtln.check_alphas(warp_search, net)
        vtln.check_scope(warp_search_by, alphas)
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if not 0.0 <= beam_ctc_weight <= 1.0:
            raise ValueError(f"beam_ctc_weight must be in [0, 1] (the CTC share of a hypothesis' score), got {beam_ctc_weight}")
        self.save_hyperparameters()
        if pretrained is not None:  # the CLI saves the arguments it was given: the folder's net replaces its net
            self.hparams["net"] = to_dict(net)
        self.tokenizer = text_tokenizer(net.alphabet)
        self.model = SpeechTransformer(net)
        # Whisper's BPE, prompt and end token (from ``pretrained``, or a checkpoint); None: characters
        self.whisper: Any = None
        if pretrained is not None:
            from tzoo.tasks.speech.whisper import load_whisper

            self.model.load_state_dict(load_whisper(pretrained).state_dict())
            self.whisper = WhisperText.load(pretrained)
        self.ctc_weight, self.label_smoothing, self.beam_size = ctc_weight, label_smoothing, beam_size
        self.beam_ctc_weight, self.inter_ctc_weight = beam_ctc_weight, inter_ctc_weight
        self.beam_length_penalty = check_length_penalty(beam_length_penalty, "beam_length_penalty")
        self.lexicon = None if lexicon is None else Lexicon.load(lexicon, self.tokenizer)
        self.lm = None if lm is None else LanguageModelScorer.load(lm, self.tokenizer)  # not a submodule: not in checkpoints
        self.lm_weight = float(lm_weight)
        self.warp_search, self.warp_search_by = alphas, warp_search_by
        self.speaker_warps = vtln.SpeakerWarps()  # each speaker's pooled choice (warp_search_by="speaker")
        if greedy_window is not None and (len(greedy_window) != 2 or min(greedy_window) < 0 or max(greedy_window) <= 0):
            raise ValueError(f"greedy_window must be (back, forward) seconds, both >= 0 and not both 0, or None, got {greedy_window!r}")
        self.max_text_len, self.examples = max_text_len, examples
        self.greedy_window = None if greedy_window is None else (float(greedy_window[0]), float(greedy_window[1]))
        self.val_cer, self.val_wer, self.val_cer_ctc = CharErrorRate(), WordErrorRate(), CharErrorRate()
        self.test_cer, self.test_wer, self.test_cer_ctc = CharErrorRate(), WordErrorRate(), CharErrorRate()
        # metric name -> its metric, for the splits, engines and voices the test batches name (made as
        # they appear; not submodules: their names are not known when a checkpoint is loaded)
        self._group_metrics: dict[str, Any] = {}
        self._examples: list[tuple[str, str]] = []

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint (or config) of an older tzoo took the model's and optimizer's arguments flat
        (``dim``, ``encoder_depth``, ``lr`` ...); they are ``net`` / ``optim`` now. The old defaults
        fill what a config left out (they differ from ``TransformerConfig``'s and ``OptimConfig``'s)."""
        if hparams.get("pretrained"):  # its net is in the checkpoint, its weights and BPE too
            return {**hparams, "pretrained": None}
        if "net" in hparams or not any(k in hparams for k in _FLAT_MODEL):
            return hparams
        flat = dict(hparams)
        stack = {k: flat.pop(k, default) for k, default in _FLAT_STACK.items()}
        encoder = {**stack, "depth": flat.pop("encoder_depth", 6)}
        decoder = {**stack, "depth": flat.pop("decoder_depth", 3), "position": "rope"}
        position = flat.pop("encoder_position", "sinusoidal")
        if position == "rope":
            encoder["position"] = "rope"
        net = {k: flat.pop(k) for k in _FLAT_NET if k in flat}
        net.update(encoder_position="sinusoidal" if position == "sinusoidal" else "none", encoder=encoder, decoder=decoder)
        optim = {k: flat.pop(k, default) for k, default in _FLAT_OPTIM.items()}
        return {**flat, "net": net, "optim": optim}

    # --- losses -------------------------------------------------------------------------------

    def _losses(
        self, batch: tuple[Tensor, Tensor, Tensor, Tensor], encoding: tuple[Tensor, Tensor, list[Tensor]] | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, CTC part, cross-entropy part); ``encoding``: the batch's encoder output, its mask
        and its ``inter_ctc`` layers' CTC logits (``encode_layers``), when the caller has them already
        (validation decodes from the same ones)."""
        wave, lengths, tokens, token_lengths = batch
        targets, prompt, eos = (tokens, [BOS], EOS) if self.whisper is None else self._whisper_targets(tokens)
        # decoder input: the prompt (<s>, or Whisper's) and the transcript (padding read as </s>; it
        # only feeds ignored positions)
        start = torch.tensor(prompt, device=tokens.device).expand(len(tokens), -1)  # (B, P)
        inputs = torch.cat([start, targets[:, :-1].masked_fill(targets[:, :-1] == IGNORE, eos)], dim=1)  # (B, P + T - 1)
        ctc_logits, mask, logits, inter = self.model(wave, lengths, inputs) if encoding is None else self.model.heads(*encoding, inputs)
        logits = logits[:, len(prompt) - 1 :]  # (B, T, V): those that predict the transcript
        ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, label_smoothing=self.label_smoothing)
        if ctc_logits is None:
            return ce, ce.new_zeros(()), ce
        # CTC targets: the transcript without </s>
        targets = tokens.masked_fill(tokens == EOS, IGNORE)[:, :-1].clamp_min(0)  # (B, T - 1); padding is never read

        def ctc_loss(logits: Tensor) -> Tensor:
            log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (N, B, V)
            return F.ctc_loss(log_probs, targets, mask.sum(-1), token_lengths - 1, blank=0, zero_infinity=True)

        ctc = ctc_loss(ctc_logits)
        if inter:  # intermediate CTC: the named layers' mean loss takes inter_ctc_weight of the CTC part
            ctc = (1 - self.inter_ctc_weight) * ctc + self.inter_ctc_weight * torch.stack([ctc_loss(x) for x in inter]).mean()
        return self.ctc_weight * ctc + (1 - self.ctc_weight) * ce, ctc, ce

    def _whisper_targets(self, tokens: Tensor) -> tuple[Tensor, list[int], int]:
        """The batch's character ids (B, T) as Whisper's BPE ids + its end token (B, T'), padded
        with IGNORE; Whisper's prompt and end token."""
        w = self.whisper
        if w is None:
            raise ValueError("this Whisper model has no BPE: build it with pretrained=<the Whisper folder>")
        rows = [w.tokenizer.encode(self.tokenizer.decode([t for t in row if t > EOS])) + [w.eos] for row in tokens.tolist()]
        out = torch.full((len(rows), max(map(len, rows))), IGNORE, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row)
        return out.to(tokens.device), w.prompt, w.eos

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, ctc, ce = self._losses(batch)
        self.log_train_metrics({"train/loss": loss, "train/ctc": ctc, "train/ce": ce}, prog_bar=("train/loss",))
        return loss

    def throughput_count(self, batch: Any) -> float:
        """Seconds of audio in a training batch (the step timer's ``train/audio_s_per_s``)."""
        return float(batch[1].sum()) / self.model.sample_rate

    def count_nodes(self, batch: Any) -> int | None:
        return int(self.model.frontend.subsampled(self.model.frontend.logmel.frames(batch[1])).sum())

    # --- evaluation ---------------------------------------------------------------------------

    def text(self, ids: list[int]) -> str:
        if self.whisper is not None:
            return self.whisper.tokenizer.decode([i for i in ids if i != self.whisper.eos]).strip()
        return self.tokenizer.decode([i for i in ids if i > EOS])

    def _references(self, tokens: Tensor) -> list[str]:
        return [self.text([t for t in row if t >= 0]) for row in tokens.tolist()]

    def transcribe(
        self, wave: Tensor, lengths: Tensor, *, method: Literal["beam", "greedy", "ctc"] = "beam", speakers: Sequence[str | None] | None = None
    ) -> list[str]:
        """(B, S) samples, (B,) lengths -> transcripts; ``speakers``: who speaks each utterance, for
        ``warp_search_by="speaker"`` (pooled with this module's earlier calls until
        ``speaker_warps.reset()``)."""
        return self._decode(*self.encode(wave, lengths, speakers), method=method)

    def encode(self, wave: Tensor, lengths: Tensor, speakers: Sequence[str | None] | None = None) -> tuple[Tensor, Tensor]:
        """(B, S) samples, (B,) lengths -> the encoder's output (B, N, D) and mask (B, N) that test
        and predict decode: at each utterance's surest warp with ``warp_search``; with
        ``warp_search_by="speaker"`` and ``speakers`` (one per utterance), at its speaker's so far."""
        if self.warp_search is None:
            return self.model.encode(wave, lengths)
        pool = self.speaker_warps if self.warp_search_by == "speaker" else None
        encoded, mask, _ = vtln.warp_search(self.model, wave, lengths, self.warp_search, speakers=speakers, pool=pool)
        return encoded, mask

    def _decode(self, encoded: Tensor, mask: Tensor, *, method: Literal["beam", "greedy", "ctc"]) -> list[str]:
        """The encoder's output (B, N, D) and its mask (B, N) -> transcripts."""
        if self.whisper is not None:  # Whisper's prompt and BPE, greedy (its encoder attends every node)
            from tzoo.tasks.speech.whisper import greedy_from_encoded

            w, limit = self.whisper, self.max_text_len
            return [self.text(greedy_from_encoded(self.model, e[None], prompt=w.prompt, eos=w.eos, max_new_tokens=limit)) for e in encoded]
        if method == "ctc":
            return [self.text(ids) for ids in ctc_greedy(self.model.ctc_head(encoded), mask)]
        limit = max_tokens(int(mask.sum(-1).max()), self.max_text_len)
        if method == "greedy":
            window = None
            if self.greedy_window is not None:  # seconds -> audio nodes (20 or 40 ms each)
                step = self.model.frontend.node_seconds
                window = (round(self.greedy_window[0] / step), max(1, round(self.greedy_window[1] / step)))
            return [self.text(ids) for ids in greedy(self.model, encoded, mask, max_len=limit, window=window)]
        return [self.text(self._beam(encoded[i : i + 1, : int(mask[i].sum())])) for i in range(len(encoded))]

    def _beam(self, encoded: Tensor) -> list[int]:
        """One utterance's unpadded encoder output (1, N, D) -> token ids by beam search, joint with
        the CTC head's prefix scores (weight ``beam_ctc_weight``), within ``lexicon``'s words if set."""
        n = encoded.shape[1]
        ctc = self.model.ctc_head(encoded[0]) if self.beam_ctc_weight > 0 else None
        return beam_search(self.model, encoded, beam=self.beam_size, max_len=max_tokens(n, self.max_text_len),
                           ctc_logits=ctc, ctc_weight=self.beam_ctc_weight, lexicon=self.lexicon,
                           lm=self.lm, lm_weight=self.lm_weight, length_penalty=self.beam_length_penalty)  # fmt: skip

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor, Tensor], batch_idx: int) -> None:
        encoded, mask, inter_ctc = self.model.encode_layers(batch[0], batch[1])
        loss, _, _ = self._losses(batch, (encoded, mask, inter_ctc))
        self.log("val/loss", loss, batch_size=len(batch[0]), prog_bar=True, sync_dist=True)
        hyps, refs = self._decode(encoded, mask, method="greedy"), self._references(batch[2])
        self.val_cer(hyps, refs)
        self.val_wer(hyps, refs)
        self.log("val/cer", self.val_cer, prog_bar=True)
        self.log("val/wer", self.val_wer)
        if self.model.ctc_head is not None:
            self.val_cer_ctc(self._decode(encoded, mask, method="ctc"), refs)
            self.log("val/cer_ctc", self.val_cer_ctc)
        if batch_idx == 0:
            self._examples = list(zip(refs, hyps))[: self.examples]

    def test_step(self, batch: tuple[Any, ...], batch_idx: int) -> None:
        """``batch``: the four tensors, and (from ``SpeechDataModule``'s test loader) the tags:
        per utterance ``(split, report groups, speaker)``; without tags every utterance is of ``test``."""
        refs = self._references(batch[2])
        tags = batch[4] if len(batch) > 4 else [("test", (), None)] * len(refs)
        encoded, mask = self.encode(batch[0], batch[1], [speaker for _, _, speaker in tags])
        hyps = self._decode(encoded, mask, method="beam")
        ctc = self._decode(encoded, mask, method="ctc") if self.model.ctc_head is not None else None
        main = [i for i, (split, _, _) in enumerate(tags) if split == "test"]
        if main:
            self.test_cer([hyps[i] for i in main], [refs[i] for i in main])
            self.test_wer([hyps[i] for i in main], [refs[i] for i in main])
            self.log("test/cer", self.test_cer)
            self.log("test/wer", self.test_wer)
            if ctc is not None:
                self.test_cer_ctc([ctc[i] for i in main], [refs[i] for i in main])
                self.log("test/cer_ctc", self.test_cer_ctc)
        for i, (split, groups, _) in enumerate(tags):
            names = list(groups) if split == "test" else ["", *groups]  # "": the split as a whole
            for name in names:
                self._group_update(f"{split}/{{}}" + (f"/{name}" if name else ""), hyps[i], refs[i], ctc[i] if ctc is not None and not name else None)

    def _group_update(self, pattern: str, hyp: str, ref: str, ctc: str | None) -> None:
        """Add one utterance to the metrics ``pattern.format("cer")``, ``"wer"`` (and ``"cer_ctc"``)."""
        for metric, kind, text in (("cer", CharErrorRate, hyp), ("wer", WordErrorRate, hyp), ("cer_ctc", CharErrorRate, ctc)):
            if text is None:
                continue
            name = pattern.format(metric)
            if name not in self._group_metrics:
                self._group_metrics[name] = kind(sync_on_compute=False)
            self._group_metrics[name].update([text], [ref])

    def on_test_epoch_start(self) -> None:
        self._group_metrics = {}
        self.speaker_warps.reset()

    def on_predict_epoch_start(self) -> None:
        self.speaker_warps.reset()

    def on_test_epoch_end(self) -> None:
        for name in sorted(self._group_metrics):
            self.log(name, float(self._group_metrics[name].compute()))  # a CPU metric, logged as a number

    def predict_step(self, batch: tuple[Any, ...], batch_idx: int) -> list[str]:
        speakers = [speaker for _, _, speaker in batch[4]] if len(batch) > 4 else None
        return self.transcribe(batch[0], batch[1], method="beam", speakers=speakers)

    def prediction_rows(self, predictions: list[list[str]], data: Any) -> list[dict[str, Any]]:
        """``{"audio": file, "text": transcript}`` per predicted file (``transcripts.jsonl``); each
        is printed too."""
        texts = [text for batch in predictions for text in batch]
        entries = data.predict_entries() if data is not None and hasattr(data, "predict_entries") else [{} for _ in texts]
        rows = [{"audio": entry.get("audio"), "text": text} for entry, text in zip(entries, texts)]
        for row in rows:
            print(f"{row['audio']}: {row['text']}")
        return rows

    def on_validation_epoch_end(self) -> None:
        trainer = self.trainer
        if self.examples <= 0 or trainer.sanity_checking:
            return
        folder = self.output_dir()
        if folder is None:
            return
        with open(folder / "examples.txt", "a", encoding="utf-8") as f:
            f.write(f"step {self.global_step}\n")
            for ref, hyp in self._examples:
                f.write(f"  ref: {ref}\n  hyp: {hyp}\n")
        data = getattr(trainer, "datamodule", None)
        if data is None or not hasattr(data, "split_entries") or self.whisper is not None:  # the picture is of characters
            return
        from tzoo.tasks.speech.audio import load_audio

        entry = data.split_entries("val")[0]
        wave = load_audio(entry["audio"], self.model.sample_rate).to(self.device)
        self.draw_alignment(wave, folder / "alignment" / f"step_{self.global_step:06d}.png", reference=entry["text"])

    def draw_alignment(self, wave: Tensor, path: str | Path, *, reference: str = "") -> Path:
        """Transcribe one waveform (S,) and draw its log-mel and cross-attention alignment to ``path``."""
        from tzoo.tasks.speech.alignment import alignment_figure

        was_training = self.training
        self.eval()
        with torch.inference_mode():
            # the plain encoding: alignment_figure draws the attention over it (and validation never searches)
            encoded, _ = self.model.encode(wave[None], torch.tensor([len(wave)], device=wave.device))
            ids = self._beam(encoded)
        self.train(was_training)
        hyp = self.text(ids)
        title = f"hypothesis: {hyp!r}" + (f"\nreference: {reference!r}" if reference else "")
        return alignment_figure(self.model, wave.cpu(), ids, list(hyp), path, title=title)

    # --- checkpoints --------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.whisper is not None:
            checkpoint["whisper_text"] = self.whisper.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if "whisper_text" in checkpoint:
            from tzoo.tasks.speech.whisper import WhisperText

            self.whisper = WhisperText.from_dict(checkpoint["whisper_text"])
            _refuse_for_whisper(lexicon=self.hparams["lexicon"], lm=self.hparams["lm"])
        # checked before Lightning loads the weights: otherwise a mismatch is a shape error deep inside
        trained = self.upgrade_hparams(dict(checkpoint.get("hyper_parameters", {}))).get("net", {}).get("alphabet")
        ours = self.model.cfg.alphabet
        if trained is not None and trained != ours:
            raise ValueError(
                f"the checkpoint was trained with alphabet={trained!r}, but this model has alphabet={ours!r}: "
                f"use data with the checkpoint's alphabet, or train a new model"
            )


def _refuse_for_whisper(*, lexicon: str | None, lm: str | None) -> None:
    """The character beam's options are refused for a Whisper model, which writes BPE tokens greedily."""
    for name, value, verb in (("lexicon", lexicon, "constrains"), ("lm", lm, "scores")):
        if value is not None:
            raise ValueError(f"{name}={value!r} {verb} the character beam; a Whisper model writes BPE tokens greedily: set {name}=None")
