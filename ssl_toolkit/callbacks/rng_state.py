"""Random number generator states in checkpoints, restored when training resumes."""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch


def capture_rng() -> dict[str, Any]:
    """States of Python's ``random``, numpy's global RNG, torch's CPU RNG and the current CUDA
    device's RNG, as tensors and plain values (``torch.load(weights_only=True)`` reads them)."""
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
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class RNGState(pl.Callback):
    """Saves the RNG states with every checkpoint and restores them when ``fit`` resumes from one.

    Together with the checkpointed loader position (``ResumableSampler``) this makes a resumed run
    draw the same augmentations as an uninterrupted one. The states are taken when the checkpoint
    is written (after the step's optimizer update) and put back at ``on_train_start`` of the
    resumed run, i.e. after Lightning has built its data iterator and run the (RNG-isolated)
    sanity check, just before the next training batch. Under DDP the states of rank 0 are kept;
    every rank was seeded alike and has drawn alike.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return capture_rng()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            restore_rng(self._pending)
            self._pending = None
