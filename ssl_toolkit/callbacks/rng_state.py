"""Random number generator states in checkpoints, restored when training resumes."""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn

from ssl_toolkit.rng import process_seed, restore_stream_states, seed_process, seed_streams, stream_states


def capture_rng() -> dict[str, Any]:
    """States of Python's ``random``, numpy's global RNG, torch's CPU RNG, the current CUDA
    device's RNG and the toolkit's own generators (``rng.stream_states``), as tensors and plain
    values (``torch.load(weights_only=True)`` reads them)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "toolkit": stream_states(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng``."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "toolkit" in state:  # absent from checkpoints written before the toolkit's own generators
        restore_stream_states(state["toolkit"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class RNGState(pl.Callback):
    """Gives every process its own random stream and puts every process's stream in checkpoints.

    At ``setup`` (the model is built, identically on every rank) every process seeds the toolkit's
    own generators, which the augmentation draws from, with ``process_seed(seed, r)``
    (``ssl_toolkit.rng``), and every process of rank r > 0 re-seeds its global generators with it;
    rank 0 goes on with the global stream of ``seed_everything(seed)`` untouched. Other ranks draw
    other crops, jitter, MoCHi mixtures, Hydra partners and dropout masks. With every checkpoint
    the states of all processes are gathered (``checkpoint["callbacks"]["RNGState"]["ranks"][r]``)
    and, when ``fit`` resumes, each process gets its own state back at ``on_train_start``, i.e.
    after Lightning has built its data iterator and run the (RNG-isolated) sanity check, just
    before the next training batch. Together with the checkpointed loader position
    (``ResumableSampler``) a resumed run draws exactly what an uninterrupted one would have drawn.

    Resuming with a different number of processes keeps the fresh per-process seeds (a warning says
    so). Checkpoints written before per-process streams (one state, rank 0's) restore that state on
    every process, as they did then.

    Args:
        seed: the recipe's ``seed``.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._pending: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Rank 0 goes on with the stream seed_everything(seed) started (a 1-process run draws what it
        # drew before per-process streams); every other rank starts its own.
        if stage == "fit":
            seed_streams(process_seed(self.seed, trainer.global_rank))  # the augmentation's, on every rank
            if trainer.global_rank > 0:
                seed_process(self.seed, trainer.global_rank)

    def state_dict(self) -> dict[str, Any]:
        # Called on every process while a checkpoint is assembled (all at the same step): gather.
        mine = capture_rng()
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return {"ranks": [mine]}
        states: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(states, mine)
        return {"ranks": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        if "ranks" not in pending:  # written before per-process streams: rank 0's state for all
            restore_rng(pending)
        elif len(pending["ranks"]) == trainer.world_size:
            restore_rng(pending["ranks"][trainer.global_rank])
        else:
            rank_zero_warn(
                f"resume: the checkpoint holds the random states of {len(pending['ranks'])} processes, this run has "
                f"{trainer.world_size}; every process goes on with a fresh stream (seed {self.seed}, rank)"
            )
