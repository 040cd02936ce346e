"""The speech data module: the generated eSpeak NG corpus, a folder of manifests, or LibriSpeech.

Sources (``source``)
- ``espeak``: generated once (``prepare_data``) into ``<data_dir>/espeak-<hash of the settings>``
  (default ``data_dir``: ``$TZOO_CACHE/speech``, else ``~/.cache/tzoo/speech``); see ``corpus.py``.
- ``manifest``: ``<data_dir>/{train,val,test}.jsonl`` in the same format (``test`` optional).
- ``librispeech``: ``<data_dir>/<train_subset>``, ``<val_subset>``, ``<test_subset>`` folders of
  ``*.trans.txt`` + FLAC (e.g. ``train-clean-100``, ``dev-clean``, ``test-clean``).

Batches are ``(wave (B, S), lengths (B,), tokens (B, T) padded with -100, token_lengths (B,))``;
tokens are the transcript's ids followed by </s>. Training batches hold utterances of similar
length (shuffled in pools of 50 batches, sorted inside a pool) so little of each batch is padding.
``tzoo predict`` transcribes ``predict_files``: audio files (WAV, FLAC, ...), folders of them, or
a manifest; without them, the test split.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from tzoo.tasks.config import from_dict, signature_default
from tzoo.tasks.sampling import LoopPosition, run_seed
from tzoo.tasks.speech.audio import AUDIO_SUFFIXES, load_audio
from tzoo.tasks.speech.augment import WaveAugment, augmented
from tzoo.tasks.speech.corpus import ALPHABET, CorpusSpec, generate_corpus, read_librispeech, read_manifest
from tzoo.tasks.speech.tokenizer import EOS, text_tokenizer

__all__ = ["SpeechDataModule", "SpeechDataset", "collate"]

IGNORE = -100  # padding of the target tokens (cross-entropy's ignore_index)


class SpeechDataset(Dataset):
    """Manifest entries -> (waveform (S,), token ids with </s>) pairs, audio read on access."""

    def __init__(self, entries: Sequence[dict[str, Any]], alphabet: str, sample_rate: int) -> None:
        self.entries, self.sample_rate = list(entries), sample_rate
        self.tokenizer = text_tokenizer(alphabet)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        entry = self.entries[index]
        wave = load_audio(entry["audio"], self.sample_rate)
        ids = self.tokenizer.encode(entry["text"]) + [EOS]
        return wave, torch.tensor(ids, dtype=torch.long)


def collate(items: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    waves, texts = zip(*items)
    lengths = torch.tensor([len(w) for w in waves])
    text_lengths = torch.tensor([len(t) for t in texts])
    wave = torch.zeros(len(waves), int(lengths.max()))
    tokens = torch.full((len(texts), int(text_lengths.max())), IGNORE, dtype=torch.long)
    for i, (w, t) in enumerate(items):
        wave[i, : len(w)] = w
        tokens[i, : len(t)] = t
    return wave, lengths, tokens, text_lengths


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar durations, in a new random order every epoch; with ``shortest_first`` the
    first epoch goes from the shortest batches to the longest (SortaGrad, Amodei et al. 2016: the
    short utterances teach CTC its alignments sooner)."""

    def __init__(
        self, durations: Sequence[float], batch_size: int, *, seed: int = 0, pool: int = 50, shortest_first: bool = False
    ) -> None:
        self.durations, self.batch_size, self.seed, self.pool = list(durations), batch_size, seed, pool
        self.shortest_first = shortest_first
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.durations) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        order = list(range(len(self.durations)))
        rng.shuffle(order)
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), size):
            chunk = sorted(order[start : start + size], key=lambda i: self.durations[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        if self.shortest_first and self.epoch == 1:
            batches.sort(key=lambda batch: max(self.durations[i] for i in batch))
        return iter(batches)


class SpeechDataModule(pl.LightningDataModule):
    """Speech corpora for the speech recognizer; links ``alphabet`` and ``sample_rate`` into the model.

    ``corpus_size``: (train, val, test) utterances of the generated corpus; ``corpus_seed``,
    ``max_words``, ``digit_fraction``, ``speed`` (words/minute), ``pitch``, ``snr_db`` and
    ``noise_files`` shape it (see ``corpus.CorpusSpec``); ``workers`` processes generate it.
    ``alphabet``: the characters transcripts may hold (after lower-casing); a transcript with any
    other is an error that names its manifest line. ``shortest_first``: the first training epoch
    from the shortest batches to the longest (SortaGrad), later ones shuffled. ``augment``: the
    training waveforms' augmentations (``augment.WaveAugment``: speed, reverb, noise, babble,
    telephone, gain; all off by default), random per (seeds, epoch, utterance).
    """

    model_links = ("alphabet", "sample_rate")

    def __init__(
        self,
        source: Literal["espeak", "manifest", "librispeech"] = "espeak",
        *,
        data_dir: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        alphabet: str = ALPHABET,
        sample_rate: int = 16000,
        corpus_size: tuple[int, int, int] = (20000, 300, 600),
        corpus_seed: int = 0,
        max_words: int = 12,
        digit_fraction: float = 0.25,
        speed: tuple[int, int] = (130, 220),
        pitch: tuple[int, int] = (30, 70),
        snr_db: tuple[float, float] = (10.0, 30.0),
        noise_files: list[str] | None = None,
        workers: int = 1,
        train_subset: str = "train-clean-100",
        val_subset: str = "dev-clean",
        test_subset: str = "test-clean",
        predict_files: list[str] | None = None,
        shortest_first: bool = False,
        augment: WaveAugment = WaveAugment(),
        seed: int = 0,
    ) -> None:
        super().__init__()
        if source not in ("espeak", "manifest", "librispeech"):
            raise ValueError(f"source={source!r} is not one of ('espeak', 'manifest', 'librispeech')")
        if source != "espeak" and data_dir is None:
            raise ValueError(f"source={source!r} needs data_dir= (the folder holding the corpus)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.source, self.batch_size, self.num_workers, self.seed = source, batch_size, num_workers, seed
        self.shortest_first = shortest_first
        self.augment = from_dict(WaveAugment, augment, where="augment", base=signature_default(type(self), "augment"))
        self.alphabet, self.sample_rate, self.workers = alphabet, sample_rate, workers
        self.subsets = {"train": train_subset, "val": val_subset, "test": test_subset}
        self.predict_files = list(predict_files or [])
        self.spec: CorpusSpec | None = None
        if source == "espeak":
            train, val, test = corpus_size
            self.spec = CorpusSpec(
                train=train, val=val, test=test, seed=corpus_seed, max_words=max_words, digit_fraction=digit_fraction,
                speed=tuple(speed), pitch=tuple(pitch), snr_db=tuple(snr_db), sample_rate=sample_rate,
                noise_files=list(noise_files or []),
            )  # fmt: skip
            root = Path(data_dir) if data_dir else Path(os.environ.get("TZOO_CACHE") or Path.home() / ".cache" / "tzoo") / "speech"
            self.root = root / f"espeak-{self.spec.key()}"
        else:
            self.root = Path(data_dir)  # type: ignore[arg-type]
        self.entries: dict[str, list[dict[str, Any]]] = {}
        self.generation_seconds: float | None = None

    def _needs_corpus(self, stage: str | None) -> bool:
        """Transcribing ``predict_files`` reads only those: no corpus is synthesized for it."""
        return self.spec is not None and not (stage == "predict" and self.predict_files)

    def prepare_data(self) -> None:
        trainer = getattr(self, "trainer", None)
        stage = trainer.state.fn.value if trainer is not None and trainer.state.fn is not None else None
        if self._needs_corpus(stage):
            start = time.perf_counter()
            generate_corpus(self.root, self.spec, workers=self.workers, verbose=True)
            self.generation_seconds = time.perf_counter() - start

    def split_entries(self, split: str) -> list[dict[str, Any]]:
        if split not in self.entries:
            if self.source == "librispeech":
                self.entries[split] = read_librispeech(self.root / self.subsets[split], self.alphabet)
            else:
                self.entries[split] = read_manifest(self.root / f"{split}.jsonl", self.alphabet)
        return self.entries[split]

    def setup(self, stage: str) -> None:
        if self._needs_corpus(stage) and not (self.root / "corpus.json").is_file():
            self.prepare_data()  # setup without prepare_data (e.g. the data module used by hand)
        if stage == "fit":
            self.split_entries("train"), self.split_entries("val")
        elif stage in ("validate", "test"):
            self.split_entries("val" if stage == "validate" else "test")

    def _dataset(self, split: str) -> SpeechDataset:
        return SpeechDataset(self.split_entries(split), self.alphabet, self.sample_rate)

    def train_dataloader(self) -> DataLoader:
        data = self._dataset("train")
        durations = [e.get("duration") or 0.0 for e in data.entries]
        sampler = LengthBucketSampler(durations, self.batch_size, seed=self.seed, shortest_first=self.shortest_first)
        if self.trainer is not None:  # a resumed fit (or a reloaded loader) goes on with its epoch's order
            sampler.epoch = LoopPosition(self, len(sampler))().epoch
        if self.augment.enabled:
            data, sampler = augmented(data, sampler, self.augment, sample_rate=self.sample_rate, key=(self.seed, run_seed()))
        return DataLoader(data, batch_sampler=sampler, collate_fn=collate, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)  # fmt: skip

    def _eval_loader(self, split: str) -> DataLoader:
        data = self._dataset(split)
        # sorted by duration: less padding, and the same batches every time
        order = sorted(range(len(data)), key=lambda i: data.entries[i].get("duration") or 0.0)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return DataLoader(data, batch_sampler=batches, collate_fn=collate, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        entries = self.predict_entries()
        data = SpeechDataset(entries, self.alphabet, self.sample_rate)
        return DataLoader(data, batch_size=1, collate_fn=collate)

    def predict_entries(self) -> list[dict[str, Any]]:
        """The files ``tzoo predict`` transcribes, as manifest entries (``text`` empty when unknown)."""
        if not self.predict_files:
            return self.split_entries("test")
        entries: list[dict[str, Any]] = []
        for name in self.predict_files:
            path = Path(name)
            if path.suffix == ".jsonl":
                entries += read_manifest(path, self.alphabet)
            elif path.is_dir():
                entries += [{"audio": str(p), "text": ""} for p in sorted(path.rglob("*")) if p.suffix.lower() in AUDIO_SUFFIXES]
            else:
                if not path.is_file():
                    raise FileNotFoundError(f"audio file {name!r} (in predict_files) does not exist")
                entries.append({"audio": str(path), "text": ""})
        if not entries:
            raise ValueError(f"predict_files={self.predict_files} holds no audio files ({', '.join(AUDIO_SUFFIXES)}) or manifests")
        return entries
