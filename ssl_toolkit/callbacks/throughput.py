"""Where a fit's time goes: training throughput without evaluation, and each evaluation's wall time."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only

from ssl_toolkit.callbacks.diagnostics_plot import is_detail


class Throughput(pl.Callback):
    """Times training and evaluation apart, without per-step host syncs.

    Training: images per second of the training loop (data + augment + forward + backward +
    optimizer), the first ``skip_steps`` steps (allocator and kernel warm-up, worker start)
    excluded, the validation loop excluded (the clock stops at ``on_validation_start`` and
    restarts at ``on_validation_end``), and so is what the callbacks after this one do at the end
    of an epoch (checkpoints, plots: the clock stops at ``on_train_epoch_end`` and restarts at
    the next ``on_train_epoch_start``, so the next epoch's loader start counts, as in a plain
    loop). The device is synchronized only at those points and at the end. Results:
    ``images_per_sec`` (None when no step was measured), ``train_seconds`` (wall time from the
    first to the last training step, evaluation excluded), logged as ``train/images_per_sec`` per
    epoch.

    Evaluation: each validation loop's wall time; after each one (not the sanity check) rank 0
    prints one line ``evaluation N at step S (epoch E): T s  val/...`` with the logged ``val/``
    metrics (when ``report``). Totals in ``eval_seconds`` / ``eval_runs``; the sanity check in
    ``sanity_seconds``.

    Args:
        skip_steps: warm-up steps left out of the throughput.
        report: print the line after each evaluation.
    """

    def __init__(self, skip_steps: int = 2, report: bool = True) -> None:
        self.skip_steps, self.report = skip_steps, report
        self.images = 0
        self.seconds = 0.0  # measured window (after warm-up), evaluation excluded
        self.train_seconds = 0.0  # whole training loop, evaluation excluded
        self.eval_seconds = 0.0
        self.eval_runs = 0
        self.sanity_seconds = 0.0
        self._start: float | None = None
        self._train_start: float | None = None
        self._eval_start: float | None = None
        self._paused = False  # the training clocks were stopped for an evaluation
        self._epoch_ended = False  # ... or at the end of an epoch, until the next one starts
        self._steps = 0

    @property
    def images_per_sec(self) -> float | None:
        """Training images per second of the measured steps; None when too few steps ran."""
        return self.images / self.seconds if self.images > 0 and self.seconds > 0 else None

    @property
    def measured_steps(self) -> int:
        """Training steps inside the throughput window (steps after the warm-up)."""
        return max(self._steps - self.skip_steps, 0)

    # --- training -----------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._epoch_ended:  # the clocks stopped at the last epoch's end: the new epoch counts
            self._epoch_ended = False
            self._train_start = time.perf_counter()
            if self._steps > self.skip_steps:
                self._start = self._train_start

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
        # The epoch-end work of the callbacks after this one (checkpoint, curves) is left out.
        self._stop(pl_module, restart=False)
        self._epoch_ended = True
        if self.images_per_sec is not None:
            pl_module.log("train/images_per_sec", self.images_per_sec, rank_zero_only=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop(pl_module, restart=False)

    def _stop(self, pl_module: pl.LightningModule, restart: bool) -> None:
        """Add the time since the clocks last started; restart them when ``restart``."""
        if self._start is None and self._train_start is None:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        if self._start is not None:
            self.seconds += now - self._start
            self._start = now if restart else None
        if self._train_start is not None:
            self.train_seconds += now - self._train_start
            self._train_start = now if restart else None

    # --- evaluation ---------------------------------------------------------------------------
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        training = self._train_start is not None
        self._stop(pl_module, restart=False)
        self._paused = training
        self._eval_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        took = now - (self._eval_start if self._eval_start is not None else now)
        if trainer.sanity_checking:
            self.sanity_seconds += took
        else:
            self.eval_seconds += took
            self.eval_runs += 1
            if self.report:
                self._print(trainer, took)
        if self._paused:
            self._train_start = now
            if self._steps > self.skip_steps:
                self._start = now
            self._paused = False

    @rank_zero_only
    def _print(self, trainer: pl.Trainer, took: float) -> None:
        values = "  ".join(
            f"{k} {float(v):.4g}"
            for k, v in sorted(trainer.callback_metrics.items())
            if k.startswith("val/") and not is_detail(k)
        )
        where = f"step {trainer.global_step} (epoch {trainer.current_epoch})"
        line = f"evaluation {self.eval_runs} at {where}: {took:.1f} s"
        line = f"{line}  {values}" if values else line
        bar = trainer.progress_bar_callback
        if bar is not None and hasattr(bar, "print"):
            bar.print(line)  # keeps the tqdm bars intact
        else:
            print(line, flush=True)
