"""Per-process random streams: every process of a run draws its own augmentations and head draws.

Every process builds the model from the recipe's ``seed`` (identical initial weights on every
rank), then re-seeds its global generators (Python ``random``, numpy, torch CPU and every CUDA
device) with ``process_seed(seed, rank)``. Rank 0 keeps ``seed`` itself, so a 1-process run draws
exactly what it drew before per-process streams existed; rank r > 0 gets a seed from numpy's
``SeedSequence([seed, r])`` (statistically independent streams, not ``seed + r``).

The augmentation draws from none of torch's global generators: it draws from the toolkit's own
generator for the device the images are on (:func:`stream`), or from a generator it is given
(the diagnostics' and offline scoring's seeded ones). :func:`seed_streams` seeds every toolkit
generator of the process (``seed_process`` does it too, and ``callbacks.RNGState`` on every
rank), and their states travel with the global ones in checkpoints (:func:`stream_states`). So a
diagnostics evaluation, dropout or a head's draws never shift the augmentation's stream, and the
views depend on the toolkit's seed only, on a CPU and on a GPU alike. Dropout and drop-path in
timm backbones still draw from the global device generator, so they differ across ranks too.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import Tensor

# The toolkit's own generators of this process: one per device, all seeded with ``_seed``.
_seed = 0
_streams: dict[torch.device, torch.Generator] = {}


def process_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank``: ``seed`` for rank 0, else a 32-bit ``SeedSequence([seed, rank])`` draw."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, dtype=np.uint32)[0])


def seed_process(seed: int, rank: int) -> int:
    """Seed Python, numpy, torch (CPU and all CUDA devices) and the toolkit's own generators
    (:func:`seed_streams`) with ``process_seed(seed, rank)``.

    Unlike ``lightning.seed_everything`` it leaves ``PL_GLOBAL_SEED`` alone: the train sampler's
    shuffle must stay the same on every rank (each takes its own shard of one permutation).

    Returns:
        the seed used.
    """
    derived = process_seed(seed, rank)
    random.seed(derived)
    np.random.seed(derived)
    torch.manual_seed(derived)  # also seeds every CUDA device
    seed_streams(derived)
    return derived


def seed_streams(seed: int) -> None:
    """Seed the toolkit's own generators of this process with ``seed``: each device's generator
    starts again from ``manual_seed(seed)`` at its next use (:func:`stream`). Global generators are
    not touched. Until it is called the seed is 0."""
    global _seed
    _seed = int(seed)
    _streams.clear()


def _key(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def stream(device: torch.device | str) -> torch.Generator:
    """The toolkit's own generator of this process for ``device`` (created at first use, seeded
    with the seed of :func:`seed_streams`); draws on ``device`` take it as ``generator=``.

    Raises:
        RuntimeError: torch has no generator for ``device``'s type (e.g. ``meta``).
    """
    key = _key(device)
    generator = _streams.get(key)
    if generator is None:
        generator = _streams[key] = torch.Generator(key).manual_seed(_seed)
    return generator


def stream_states() -> dict[str, Tensor]:
    """The states of the toolkit's generators used so far: device name (``"cpu"``, ``"cuda:0"``)
    -> ``get_state()`` (uint8 tensor), for checkpoints; plus ``"seed"`` (int64 scalar)."""
    states = {str(device): generator.get_state() for device, generator in _streams.items()}
    return {"seed": torch.tensor(_seed), **states}


def restore_stream_states(states: dict[str, Tensor]) -> None:
    """Inverse of :func:`stream_states`: the seed and every listed device's state come back; the
    generators of other devices start from the seed at their next use, and so do those of devices
    this process lacks (a CUDA state resumed on a CPU-only machine)."""
    seed_streams(int(states["seed"]))
    for name, state in states.items():
        if name != "seed" and (not name.startswith("cuda") or torch.cuda.is_available()):
            stream(name).set_state(state)


def uniform(generator: torch.Generator, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """U[0, 1) numbers of ``shape`` drawn from ``generator`` on the generator's own device, returned
    on ``device`` as ``dtype``: no move for the device's own generator, a non-blocking copy from a
    CPU generator, so no host sync either way. Drawn in float64 (float32 on MPS, which lacks it)."""
    drawn_dtype = torch.float32 if generator.device.type == "mps" else torch.float64
    drawn = torch.rand(shape, generator=generator, device=generator.device, dtype=drawn_dtype)
    return drawn.to(device, dtype, non_blocking=True)
