"""Fixed chunks of a dataset: one item is a whole group of consecutive samples, already batched."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ssl_toolkit.checks import check_int


class Chunk(NamedTuple):
    """One chunk: ``images`` uint8 (c, 3, S, S), ``labels`` (c,) int64, ``index`` (c,) int64 split
    positions. Unpacks like the ``(images, labels, index)`` batches of every other loader."""

    images: Tensor
    labels: Tensor
    index: Tensor


class Chunks(Dataset):
    """Item k is samples ``[k c, (k + 1) c)`` of ``dataset`` stacked into one :class:`Chunk`.

    Load it with ``DataLoader(chunks, batch_size=None)``: a loader batch is then exactly one chunk,
    whatever the number of processes (a ``DistributedSampler`` deals whole chunks), so anything
    drawn per chunk (the diagnostics' augmented views, seeded by the chunk's first index) is the
    same in 1 and in N processes.

    Args:
        dataset: yields ``(uint8 image (3, S, S), label, index)``.
        size: c, samples per chunk (the last chunk may be shorter).
    """

    def __init__(self, dataset: Dataset, size: int) -> None:
        check_int("size", size)
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.size)  # type: ignore[arg-type]

    def __getitem__(self, k: int) -> Chunk:
        if not 0 <= k < len(self):
            raise IndexError(f"chunk {k} of {len(self)}")
        items = [self.dataset[i] for i in range(k * self.size, min((k + 1) * self.size, len(self.dataset)))]  # type: ignore[arg-type]
        images, labels, index = zip(*items)
        return Chunk(torch.stack(images), torch.as_tensor(labels).long(), torch.as_tensor(index).long())
