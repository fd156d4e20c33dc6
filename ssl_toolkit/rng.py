"""Per-process random streams: every process of a run draws its own augmentations and head draws.

Every process builds the model from the recipe's ``seed`` (identical initial weights on every
rank), then re-seeds its global generators (Python ``random``, numpy, torch CPU and every CUDA
device) with ``process_seed(seed, rank)``. Rank 0 keeps ``seed`` itself, so a 1-process run draws
exactly what it drew before per-process streams existed; rank r > 0 gets a seed from numpy's
``SeedSequence([seed, r])`` (statistically independent streams, not ``seed + r``).

The global generators are the process's stream: kornia draws its crop/flip/blur parameters from
torch's global CPU generator and has no ``generator`` argument, so ``drawing_from`` lends it an
explicit generator by swapping the global CPU state in and out; dropout and drop-path in timm
backbones draw from the global device generator, so they differ across ranks too.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch


def process_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank``: ``seed`` for rank 0, else a 32-bit ``SeedSequence([seed, rank])`` draw."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, dtype=np.uint32)[0])


def seed_process(seed: int, rank: int) -> int:
    """Seed Python, numpy and torch (CPU and all CUDA devices) with ``process_seed(seed, rank)``.

    Unlike ``lightning.seed_everything`` it leaves ``PL_GLOBAL_SEED`` alone: the train sampler's
    shuffle must stay the same on every rank (each takes its own shard of one permutation).

    Returns:
        the seed used.
    """
    derived = process_seed(seed, rank)
    random.seed(derived)
    np.random.seed(derived)
    torch.manual_seed(derived)  # also seeds every CUDA device
    return derived


@contextlib.contextmanager
def drawing_from(generator: torch.Generator | None) -> Iterator[None]:
    """Make code that draws from torch's global CPU generator (kornia) draw from ``generator``.

    ``generator`` (a CPU generator) advances by exactly what the block draws; the global generator
    is left as it was. ``None`` (or the global generator itself): the block draws from the global one.
    """
    if generator is None or generator is torch.default_generator:
        yield
        return
    if generator.device.type != "cpu":
        raise ValueError(f"generator: augmentation parameters are drawn on the CPU, got a {generator.device} generator")
    saved = torch.get_rng_state()
    torch.set_rng_state(generator.get_state())
    try:
        yield
    finally:
        generator.set_state(torch.get_rng_state())
        torch.set_rng_state(saved)
