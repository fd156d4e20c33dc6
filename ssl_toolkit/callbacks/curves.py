"""Keep a run's curves and redraw ``curves.png`` in the run folder after every epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from ssl_toolkit.callbacks.curves_plot import ACCURACY_KEYS, RANKME_KEYS, plot_curves


class Curves(pl.Callback):
    """Records train/loss per step and the evaluation metrics after every evaluation, draws ``path``.

    An evaluation's metrics are plotted against the epochs trained when it ran (1.0 at the end of
    the first epoch; 0.5 for an evaluation in its middle with ``val_check_interval``).

    The per-step losses are kept as device tensors and copied to the host once per epoch, so
    the training loop is not synced every step. Runs on global rank 0 only; when a wandb logger
    is attached the PNG is also logged there as ``curves``. Its history is in the checkpoint.

    Args:
        path: PNG to (re)write.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.loss_steps: list[int] = []
        self.losses: list[float] = []
        self.epoch_metrics: dict[str, list[tuple[float, float]]] = {}
        self._pending: list[tuple[int, torch.Tensor]] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.is_global_zero and isinstance(outputs, dict) and "loss" in outputs:
            self._pending.append((trainer.global_step, outputs["loss"].detach()))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        batches = trainer.num_training_batches
        if isinstance(batches, (int, float)) and 0 < batches < float("inf"):
            epochs = trainer.global_step * trainer.accumulate_grad_batches / batches
        else:
            epochs = float(trainer.current_epoch + 1)
        for key in ACCURACY_KEYS + RANKME_KEYS:
            if key in trainer.callback_metrics:
                self.epoch_metrics.setdefault(key, []).append((round(epochs, 3), float(trainer.callback_metrics[key])))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._flush()  # one sync per epoch
        plot_curves(self.loss_steps, self.losses, self.epoch_metrics, self.path, title=self.path.parent.name)
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                logger.log_image(key="curves", images=[str(self.path)], step=trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        self._flush()  # a mid-epoch checkpoint keeps this epoch's losses too (one sync per save)
        return {"loss_steps": self.loss_steps, "losses": self.losses, "epoch_metrics": self.epoch_metrics}

    def _flush(self) -> None:
        if self._pending:
            values = torch.stack([v for _, v in self._pending]).float().cpu().tolist()
            self.loss_steps += [s for s, _ in self._pending]
            self.losses += values
            self._pending.clear()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.loss_steps = list(state_dict["loss_steps"])
        self.losses = list(state_dict["losses"])
        self.epoch_metrics = {k: [tuple(p) for p in v] for k, v in state_dict["epoch_metrics"].items()}
