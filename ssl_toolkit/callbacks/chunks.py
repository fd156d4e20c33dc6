"""Fixed chunks of a dataset: one item is a whole group of consecutive samples, already batched."""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from ssl_toolkit.checks import check_int
from ssl_toolkit.embedding import EvalBatch


class Chunks(Dataset):
    """Item k is samples ``[k c, (k + 1) c)`` of ``dataset`` stacked into one
    :class:`~ssl_toolkit.embedding.EvalBatch` asking for ``views`` seeded views of each image.

    Load it with ``DataLoader(chunks, batch_size=None)``: a loader batch is then exactly one chunk,
    whatever the number of processes (a ``DistributedSampler`` deals whole chunks), so anything
    drawn per chunk (the augmented views, seeded by ``seed`` and the chunk's first index) is the
    same in 1 and in N processes.

    Args:
        dataset: yields ``(uint8 image (3, S, S), label, index)``.
        size: c, samples per chunk (the last chunk may be shorter).
        views: V, augmented views per image (``EvalBatch.views``).
        seed: seed of the views (``EvalBatch.seed``).
    """

    def __init__(self, dataset: Dataset, size: int, views: int, seed: int) -> None:
        check_int("size", size)
        check_int("views", views)
        check_int("seed", seed, minimum=0)
        self.dataset, self.size, self.views, self.seed = dataset, size, views, seed

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.size)  # type: ignore[arg-type]

    def __getitem__(self, k: int) -> EvalBatch:
        if not 0 <= k < len(self):
            raise IndexError(f"chunk {k} of {len(self)}")
        items = [self.dataset[i] for i in range(k * self.size, min((k + 1) * self.size, len(self.dataset)))]  # type: ignore[arg-type]
        images, labels, index = zip(*items)
        labels, index = torch.as_tensor(labels).long(), torch.as_tensor(index).long()
        return EvalBatch(torch.stack(images), labels, index, self.views, self.seed)
