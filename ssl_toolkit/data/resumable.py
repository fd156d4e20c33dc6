"""A train sampler whose order depends on (seed, epoch) only and that can start mid-epoch, so a
resumed run sees exactly the batches an uninterrupted run would have seen."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """``DistributedSampler(shuffle=True)`` that can skip the batches a checkpoint already trained on.

    The order of epoch e is ``randperm(N)`` seeded with ``seed + e`` (what Lightning's own DDP
    sampler does), sharded over processes; it never touches the global RNG. Being a
    ``DistributedSampler`` already, Lightning does not replace it under DDP. With one process it is
    a seeded shuffle.

    Args:
        dataset: the train split (N samples).
        batch_size: samples per batch, per process.
        seed: base seed (default: the ``PL_GLOBAL_SEED`` set by ``seed_everything``, else 0).
        resume: a position from ``loader_position`` (``{"epoch": e, "batches": k}``): the first
            pass is epoch e without its first k batches (k covering the epoch means epoch e + 1).
    """

    def __init__(
        self, dataset: Dataset, batch_size: int, seed: int | None = None, resume: dict[str, int] | None = None
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(
            dataset,
            num_replicas=dist.get_world_size() if distributed else 1,
            rank=dist.get_rank() if distributed else 0,
            shuffle=True,
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed,
        )
        self.batch_size = batch_size
        self._skip = 0  # samples to leave out of the next pass only
        if resume:
            epoch, batches = int(resume["epoch"]), int(resume["batches"])
            if batches >= self.num_samples // batch_size:  # saved at the end of an epoch
                epoch, batches = epoch + 1, 0
            self.set_epoch(epoch)
            self._skip = batches * batch_size

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])

    # __len__ stays the full shard: Lightning counts the skipped batches as already done.


def loader_position(trainer: Any) -> dict[str, int]:
    """``{"epoch": e, "batches": k}``: k batches of epoch e are trained on (Lightning's loop progress;
    at the end of an epoch: epoch e + 1, 0 batches). Empty outside ``fit``."""
    if trainer is None or trainer.state.fn != "fit":
        return {}
    done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    if done >= trainer.num_training_batches:  # the epoch is over (also when limit_train_batches cut it)
        return {"epoch": int(trainer.current_epoch) + 1, "batches": 0}
    return {"epoch": int(trainer.current_epoch), "batches": int(done)}
