"""Training batches a resumed run draws exactly as the interrupted one would have.

``KeyedBatches`` draws batch ``i`` of epoch ``e`` with an RNG keyed by ``(*key, e, i)`` and starts
each pass at the batch ``position()`` names, which ``LoopPosition`` reads from the trainer's loop
progress (what a checkpoint restores). ``KeyedLoader`` carries the key in Lightning's loader state,
so Lightning counts the loader as resumable, and reports a resume whose seeds differ. Any task whose
training batches are random draws (the LM's token windows, the decision task's trajectory
segments) uses these; what a batch is comes from the task's ``draw(rng, n)``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
from torch.utils.data import DataLoader, DistributedSampler

__all__ = ["KeyedBatches", "KeyedLoader", "LoopPosition", "Position", "run_seed"]


class Position(NamedTuple):
    """Where a training pass starts: the epoch, the batches already done in it, and this
    process's data-parallel rank among ``world`` ranks."""

    epoch: int
    done: int
    rank: int = 0
    world: int = 1


def run_seed() -> int:
    """``seed_everything``'s seed (Lightning's ``PL_GLOBAL_SEED``), 0 when unset."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class LoopPosition:
    """``position()`` for a data module's training pass: under a trainer, its loop progress (a
    checkpoint restores it, so a resumed pass skips the batches already trained on) and the
    data-parallel rank; without a trainer every pass is a new epoch."""

    def __init__(self, datamodule: Any, num_batches: int) -> None:
        self.datamodule, self.num_batches = datamodule, num_batches
        self._passes = 0

    def __call__(self) -> Position:
        trainer = self.datamodule.trainer
        if trainer is None:
            self._passes += 1
            return Position(self._passes - 1, 0)
        epoch, done = trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed
        limit = trainer.limit_train_batches
        length = self.num_batches
        length = min(length, limit) if isinstance(limit, int) else max(1, int(length * (limit if limit is not None else 1.0)))
        if done >= length:  # resumed from a checkpoint taken at the end of an epoch
            epoch, done = epoch + 1, 0
        # DDP and ModelParallelStrategy both say which data-parallel rank this process is
        ranks = getattr(trainer.strategy, "distributed_sampler_kwargs", None) or {}
        return Position(epoch, done, ranks.get("rank", 0), ranks.get("num_replicas", 1))


class KeyedBatches(DistributedSampler):
    """``num_batches`` batches per pass, each ``draw(rng, world * batch_size)`` with an RNG keyed
    by ``(*key, epoch, batch)``; rank ``r`` takes the ``r``-th slice, so the ranks together train on
    the batch one process with ``world * batch_size`` would. It is a ``DistributedSampler`` only so
    that Lightning does not wrap it in one: it deals the ranks their shares itself."""

    def __init__(
        self,
        *,
        batch_size: int,
        num_batches: int,
        key: tuple[int, ...],
        position: Callable[[], Position],
        draw: Callable[[np.random.Generator, int], np.ndarray],
    ) -> None:
        # no DistributedSampler.__init__: it wants a dataset and a process group
        self.batch_size, self.num_batches = batch_size, num_batches
        self.key, self.position, self.draw = tuple(key), position, draw

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[np.ndarray]:
        epoch, done, rank, world = self.position()
        b = self.batch_size
        for i in range(done, self.num_batches):
            rng = np.random.default_rng([*self.key, epoch, i])  # ~10 us: negligible beside a step
            yield self.draw(rng, b * world)[rank * b : (rank + 1) * b]

    def set_epoch(self, epoch: int) -> None:  # the epoch comes from position()
        pass


class KeyedLoader(DataLoader):
    """The training loader over ``KeyedBatches`` (``batch_size=None``: each sampled item is a whole
    batch). Its state is the sampler's key: a resume whose seeds differ from the checkpoint's run is
    reported, since its batches then differ from the ones the interrupted run would have drawn."""

    def state_dict(self) -> dict[str, Any]:
        key = getattr(self.sampler, "key", None)  # Lightning may swap the sampler (overfit_batches)
        return {} if key is None else {"window_key": list(key)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved, key = state_dict.get("window_key"), getattr(self.sampler, "key", None)
        if saved is not None and key is not None and tuple(saved) != tuple(key):
            warnings.warn(
                f"resumed with training batches keyed by {tuple(key)} (data seed, seed_everything), "
                f"but the checkpoint's run drew them with {tuple(saved)}: from here on this run sees other "
                f"batches than the interrupted one would have",
                stacklevel=2,
            )
