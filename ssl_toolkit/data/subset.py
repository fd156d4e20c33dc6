"""A fixed random subset of a split: the one seeded draw for every evaluation's image subsets (online and offline)."""

from __future__ import annotations

import torch
from torch import Tensor


def fixed_subset(total: int, size: int, seed: int) -> Tensor:
    """``min(size, total)`` distinct positions drawn uniformly from ``range(total)``, sorted.

    The same (total, size, seed) always gives the same positions, on every process and machine
    (CPU generator). Random rather than the first rows: a split stored class by class would bias
    spectrum metrics such as effective rank towards the first classes.

    Args:
        total: rows in the split.
        size: rows wanted.
        seed: seeds the draw.

    Returns:
        (min(size, total),) int64 positions, ascending.
    """
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return perm[: min(size, total)].sort().values
