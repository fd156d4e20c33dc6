"""Training throughput, measured without per-step host syncs."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch


class Throughput(pl.Callback):
    """Images per second of the training loop (data + augment + forward + backward + optimizer).

    The first ``skip_steps`` steps (allocator and kernel warm-up, worker start) are excluded.
    The device is synchronized once at the end, never per step. Results are in ``images_per_sec``,
    ``seconds`` and ``images`` after training, and logged as ``train/images_per_sec`` per epoch.
    """

    def __init__(self, skip_steps: int = 2) -> None:
        self.skip_steps = skip_steps
        self.images = 0
        self.seconds = 0.0
        self._start: float | None = None
        self._steps = 0

    @property
    def images_per_sec(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._steps == self.skip_steps and self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._start is not None:
            self.images += int(batch[1].shape[0]) * trainer.world_size
        self._steps += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop(pl_module)
        if self.seconds > 0:
            pl_module.log("train/images_per_sec", self.images_per_sec, rank_zero_only=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop(pl_module)

    def _stop(self, pl_module: pl.LightningModule) -> None:
        if self._start is None:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        self.seconds += now - self._start
        self._start = now
