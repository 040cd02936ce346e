"""The speech data module: the generated corpus, a folder of manifests, or LibriSpeech.

Sources (``source``)
- ``espeak``: the corpus generated with eSpeak NG and every other synthesizer found (Festival,
  Flite; ``engines``), once (``prepare_data``) into ``<data_dir>/espeak-<hash of the settings and
  the engines found>`` (default ``data_dir``: ``$TZOO_CACHE/speech``, else
  ``~/.cache/tzoo/speech``); see ``corpus.py``.
- ``manifest``: ``<data_dir>/{train,val,test}.jsonl`` in the same format (``test`` optional;
  a ``test_sentences.jsonl`` beside it is tested and reported apart).
- ``librispeech``: ``<data_dir>/<train_subset>``, ``<val_subset>``, ``<test_subset>`` folders of
  ``*.trans.txt`` + FLAC (e.g. ``train-clean-100``, ``dev-clean``, ``test-clean``).

Batches are ``(wave (B, S), lengths (B,), tokens (B, T) padded with -100, token_lengths (B,))``;
tokens are the transcript's ids followed by </s>. Training batches hold utterances of similar
length (shuffled in pools of 50 batches, sorted inside a pool) so little of each batch is padding.
Test and predict batches add a fifth element, ``tags``: per utterance its split, report groups
and speaker (``("test", ("espeak", "espeak/m3"), "espeak/m3")``; no groups for entries that do not
name their engine, speaker None when the entry does not say, ``corpus.speaker_of``), so the test
reports error rates per split, engine and voice, and ``warp_search_by="speaker"`` pools per speaker;
the test loader holds the ``test`` split and, where the corpus has one, ``test_sentences``.
``tzoo predict`` transcribes ``predict_files``: audio files (WAV, FLAC, ...), folders of them, or
a manifest; without them, the test split.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from tzoo.tasks.config import from_dict, signature_default
from tzoo.tasks.files import cache_dir
from tzoo.tasks.sampling import LoopPosition, run_seed
from tzoo.tasks.speech.audio import AUDIO_SUFFIXES, load_audio
from tzoo.tasks.speech.augment import WaveAugment, augmented
from tzoo.tasks.speech.corpus import (
    ALPHABET,
    TEST_WEIGHTS,
    TRAIN_WEIGHTS,
    CorpusSpec,
    generate_corpus,
    read_librispeech,
    read_manifest,
    report_groups,
    speaker_of,
)
from tzoo.tasks.speech.tokenizer import EOS, text_tokenizer

__all__ = ["SpeechDataModule", "SpeechDataset", "collate"]

IGNORE = -100  # padding of the target tokens (cross-entropy's ignore_index)


class SpeechDataset(Dataset):
    """Manifest entries -> (waveform (S,), token ids with </s>) pairs, audio read on access; with
    ``tags``, each item adds the entry's ``(split, report groups, speaker)`` (``corpus.report_groups``,
    ``corpus.speaker_of``)."""

    def __init__(self, entries: Sequence[dict[str, Any]], alphabet: str, sample_rate: int, *, tags: bool = False) -> None:
        self.entries, self.sample_rate, self.tags = list(entries), sample_rate, tags
        self.tokenizer = text_tokenizer(alphabet)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        entry = self.entries[index]
        wave = load_audio(entry["audio"], self.sample_rate)
        ids = self.tokenizer.encode(entry["text"]) + [EOS]
        if self.tags:
            return wave, torch.tensor(ids, dtype=torch.long), (entry.get("split", "test"), report_groups(entry), speaker_of(entry))
        return wave, torch.tensor(ids, dtype=torch.long)


def collate(items: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    """Items (wave, ids) -> ``(wave, lengths, tokens, token_lengths)``; items with tags (wave, ids,
    tag) -> the same and the list of tags."""
    waves, texts = [item[0] for item in items], [item[1] for item in items]
    lengths = torch.tensor([len(w) for w in waves])
    text_lengths = torch.tensor([len(t) for t in texts])
    wave = torch.zeros(len(waves), int(lengths.max()))
    tokens = torch.full((len(texts), int(text_lengths.max())), IGNORE, dtype=torch.long)
    for i, (w, t) in enumerate(zip(waves, texts)):
        wave[i, : len(w)] = w
        tokens[i, : len(t)] = t
    if len(items[0]) > 2:
        return wave, lengths, tokens, text_lengths, [item[2] for item in items]
    return wave, lengths, tokens, text_lengths


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar durations, in a new random order every epoch; with ``shortest_first`` the
    first epoch goes from the shortest batches to the longest (SortaGrad, Amodei et al. 2016: the
    short utterances teach CTC its alignments sooner). The epoch is ``epoch_of()`` when that gives
    one (the trainer's, read when a pass's first batch is drawn: a resumed fit has restored it by
    then, unless loader workers prefetched that batch earlier), else the passes made so far."""

    def __init__(
        self, durations: Sequence[float], batch_size: int, *, seed: int = 0, pool: int = 50, shortest_first: bool = False,
        epoch_of: Callable[[], int | None] | None = None,
    ) -> None:  # fmt: skip
        self.durations, self.batch_size, self.seed, self.pool = list(durations), batch_size, seed, pool
        self.shortest_first, self.epoch_of = shortest_first, epoch_of
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.durations) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        # a generator: the epoch is read at the first batch, not when Lightning makes the iterator
        # (before a resumed fit's loop progress is restored)
        yield from self.epoch_batches()[1]

    def epoch_batches(self) -> tuple[int, list[list[int]]]:
        """The next pass: its epoch and its batches."""
        given = self.epoch_of() if self.epoch_of is not None else None
        epoch = self.epoch if given is None else given
        self.epoch = epoch + 1
        rng = random.Random(self.seed + epoch)
        order = list(range(len(self.durations)))
        rng.shuffle(order)
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), size):
            chunk = sorted(order[start : start + size], key=lambda i: self.durations[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        if self.shortest_first and epoch == 0:
            batches.sort(key=lambda batch: max(self.durations[i] for i in batch))
        return epoch, batches


class SpeechDataModule(pl.LightningDataModule):
    """Speech corpora for the speech recognizer; links ``alphabet`` and ``sample_rate`` into the model.

    ``corpus_size``: (train, val, test[, test_sentences]) utterances of the generated corpus (three
    numbers: test_sentences is half of test); ``engines`` (``"auto"``: every synthesizer installed),
    ``engine_weights``, ``test_weights``, ``voices``, ``sentence_fraction``, ``corpus_seed``, ``max_words``,
    ``digit_fraction``, ``speed`` (eSpeak NG's words/minute), ``pitch`` (its 0-99 scale),
    ``speed_factor`` and ``pitch_factor`` (the other engines': factors of each voice's own),
    ``snr_db``, ``noise_files`` and ``made_up_speakers`` (eSpeak NG variants drawn at random, added to its
    training speakers) shape it (see ``corpus.CorpusSpec``); ``workers`` processes generate it.
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
        corpus_size: Sequence[int] = (20000, 300, 600),
        corpus_seed: int = 0,
        max_words: int = 12,
        digit_fraction: float = 0.25,
        speed: tuple[int, int] = (130, 220),
        pitch: tuple[int, int] = (30, 70),
        speed_factor: tuple[float, float] = (0.85, 1.2),
        pitch_factor: tuple[float, float] = (0.85, 1.2),
        snr_db: tuple[float, float] = (10.0, 30.0),
        noise_files: list[str] | None = None,
        engines: str | list[str] = "auto",
        engine_weights: dict[str, float] | None = None,
        test_weights: dict[str, float] | None = None,
        voices: dict[str, dict[str, list[str]]] | None = None,
        sentence_fraction: float = 0.0,
        made_up_speakers: int = 0,
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
            if len(corpus_size) not in (3, 4):
                raise ValueError(f"corpus_size={list(corpus_size)} must be [train, val, test] or [train, val, test, test_sentences]")
            train, val, test, sentences = (*corpus_size, corpus_size[2] // 2)[:4]
            self.spec = CorpusSpec(
                train=train, val=val, test=test, test_sentences=sentences, seed=corpus_seed, max_words=max_words,
                digit_fraction=digit_fraction, sentence_fraction=sentence_fraction, engines=engines,
                engine_weights=dict(TRAIN_WEIGHTS if engine_weights is None else engine_weights),
                test_weights=dict(TEST_WEIGHTS if test_weights is None else test_weights),
                voices={k: dict(v) for k, v in (voices or {}).items()}, speed=tuple(speed), pitch=tuple(pitch),
                speed_factor=tuple(speed_factor), pitch_factor=tuple(pitch_factor), snr_db=tuple(snr_db), sample_rate=sample_rate, noise_files=list(noise_files or []),
                made_up_speakers=made_up_speakers,
            )  # fmt: skip
            root = Path(data_dir) if data_dir else cache_dir("speech")
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
            for entry in self.entries[split]:
                entry["split"] = split
        return self.entries[split]

    def test_splits(self) -> list[str]:
        """``test``, and ``test_sentences`` where the corpus has it (the generated one, or a
        ``test_sentences.jsonl`` beside a manifest source's ``test.jsonl``)."""
        has_sentences = self.source != "librispeech" and (
            (self.spec is not None and self.spec.test_sentences > 0) or (self.spec is None and (self.root / "test_sentences.jsonl").is_file())
        )
        return ["test", "test_sentences"] if has_sentences else ["test"]

    def setup(self, stage: str) -> None:
        if self._needs_corpus(stage) and not (self.root / "corpus.json").is_file():
            self.prepare_data()  # setup without prepare_data (e.g. the data module used by hand)
        if stage == "fit":
            self.split_entries("train"), self.split_entries("val")
        elif stage == "validate":
            self.split_entries("val")
        elif stage == "test":
            for split in self.test_splits():
                self.split_entries(split)

    def _dataset(self, split: str) -> SpeechDataset:
        return SpeechDataset(self.split_entries(split), self.alphabet, self.sample_rate)

    def train_dataloader(self) -> DataLoader:
        data = self._dataset("train")
        durations = [e.get("duration") or 0.0 for e in data.entries]
        sampler = LengthBucketSampler(durations, self.batch_size, seed=self.seed, shortest_first=self.shortest_first,
                                      epoch_of=self._trainer_epoch)  # fmt: skip
        if self.augment.enabled:
            data, sampler = augmented(data, sampler, self.augment, sample_rate=self.sample_rate, key=(self.seed, run_seed()))
        return DataLoader(data, batch_sampler=sampler, collate_fn=collate, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, generator=self._generator())  # fmt: skip

    def _generator(self) -> torch.Generator:
        # Each loader its own generator: otherwise every new iterator draws a worker seed from the
        # global RNG, and a resumed run (whose iterators are made at other points) would shift
        # dropout's random stream.
        return torch.Generator().manual_seed(self.seed)

    def _trainer_epoch(self) -> int | None:
        """The training epoch under a trainer (restored from the checkpoint in a resumed fit), else None."""
        if self.trainer is None:
            return None
        batches = -(-len(self.split_entries("train")) // self.batch_size)
        return LoopPosition(self, batches)().epoch

    def _eval_loader(self, split: str) -> DataLoader:
        if split == "test":  # every test split, each utterance tagged with its split, engine and voice
            entries = [e for s in self.test_splits() for e in self.split_entries(s)]
            data = SpeechDataset(entries, self.alphabet, self.sample_rate, tags=True)
        else:
            data = self._dataset(split)
        # sorted by duration: less padding, and the same batches every time
        order = sorted(range(len(data)), key=lambda i: data.entries[i].get("duration") or 0.0)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return DataLoader(data, batch_sampler=batches, collate_fn=collate, num_workers=self.num_workers, generator=self._generator())

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        entries = self.predict_entries()
        data = SpeechDataset(entries, self.alphabet, self.sample_rate, tags=True)
        return DataLoader(data, batch_size=1, collate_fn=collate, generator=self._generator())

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
