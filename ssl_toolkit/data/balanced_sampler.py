"""P x K class-balanced batches: P distinct classes, K samples of each, per process and step."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ssl_toolkit.distributed import rank as dist_rank
from ssl_toolkit.distributed import world_size as dist_world_size


class _ShuffledCycle:
    """Endless reshuffled passes over ``items``; ``take(n)`` returns n items, distinct if n <= len."""

    def __init__(self, items: Tensor, generator: torch.Generator) -> None:
        self.items, self.generator = items, generator
        self.queue = items[torch.randperm(len(items), generator=generator)]

    def take(self, n: int) -> Tensor:
        if n > len(self.items):  # too few items: whole reshuffled passes (repeats), then the rest
            full = self.items[torch.randperm(len(self.items), generator=self.generator)]
            return torch.cat([full, self.take(n - len(self.items))])
        out = self.queue[:n]
        self.queue = self.queue[n:]
        if len(out) < n:  # pass exhausted: refill, keeping this batch's items out of its head
            fresh = self.items[torch.randperm(len(self.items), generator=self.generator)]
            used = torch.isin(fresh, out)
            fresh = torch.cat([fresh[~used], fresh[used]])
            out, self.queue = torch.cat([out, fresh[: n - len(out)]]), fresh[n - len(out) :]
        return out


class ClassBalancedBatchSampler:
    """Batches of P distinct classes x K samples per class (the "PK sampler" of metric learning;
    the Hydra authors' vitookit adds one so that every anchor's partner class has positives).

    Classes are visited in reshuffled passes (every class is drawn equally often), and each class's
    samples likewise, so an epoch sees about every sample once. An epoch has
    ``len(labels) // (P * K) // world_size`` batches per process.

    Distributed: every process builds the same global sequence of batches (same ``seed`` and
    epoch) and takes batches ``rank, rank + W, rank + 2W, ...``, so processes never share a batch
    and every process's batch is itself P x K. ``rank``/``world_size`` default to torch.distributed
    when it is initialized (read at iteration time). Lightning must not wrap this sampler: set
    ``trainer.use_distributed_sampler: false`` for multi-process runs.

    The epoch advances by one each time iteration starts (``set_epoch`` overrides it), so each
    epoch draws new batches; the same seed and epoch give the same batches.

    Args:
        labels: (N,) int64 class of every sample of the split (>= 0; -1 = unknown, never drawn).
        classes_per_batch: P.
        samples_per_class: K (a class with fewer than K samples repeats some of them in a batch).
        seed: base seed of the shuffles.
        rank, world_size: this process and the process count (None = from torch.distributed).

    Yields:
        lists of P * K sample indices, class by class (K consecutive indices share a class).
    """

    def __init__(
        self,
        labels: Tensor,
        classes_per_batch: int,
        samples_per_class: int,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        labels = torch.as_tensor(labels, dtype=torch.long)
        known = labels[labels >= 0]
        classes, counts = known.unique(return_counts=True)
        if classes_per_batch < 1 or classes_per_batch > len(classes):
            raise ValueError(
                f"classes_per_batch: {classes_per_batch} must be in [1, {len(classes)}] (labelled classes)"
            )
        if samples_per_class < 1:
            raise ValueError(f"samples_per_class: must be an int >= 1, got {samples_per_class}")
        self.classes = classes
        self.members = [torch.nonzero(labels == c).flatten() for c in classes.tolist()]
        self.num_samples = len(known)
        self.classes_per_batch, self.samples_per_class = classes_per_batch, samples_per_class
        self.seed, self.epoch = seed, 0
        self._rank, self._world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s batches on the next iteration."""
        self.epoch = epoch

    def _ranks(self) -> tuple[int, int]:
        rank = dist_rank() if self._rank is None else self._rank
        world = dist_world_size() if self._world_size is None else self._world_size
        return rank, world

    def __len__(self) -> int:
        _, world = self._ranks()
        return self.num_samples // (self.classes_per_batch * self.samples_per_class) // world

    def global_batches(self, epoch: int) -> list[list[int]]:
        """Every process's batches of ``epoch``, in order (batch t goes to process t mod W)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        class_cycle = _ShuffledCycle(torch.arange(len(self.classes)), generator)
        sample_cycles = [_ShuffledCycle(m, generator) for m in self.members]
        _, world = self._ranks()
        batches = []
        for _ in range(len(self) * world):
            picked = class_cycle.take(self.classes_per_batch)  # (P,) distinct class positions
            batch = torch.cat([sample_cycles[c].take(self.samples_per_class) for c in picked.tolist()])
            batches.append(batch.tolist())
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = self._ranks()
        batches = self.global_batches(self.epoch)
        self.epoch += 1
        yield from batches[rank::world]
