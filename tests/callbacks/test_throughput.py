"""``Throughput``: the training rate leaves out the other callbacks' epoch-end work (checkpoints, plots)
but keeps the start of each epoch (the loader's restart), as a plain training loop would."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ssl_toolkit.callbacks.throughput import Throughput

PAUSE = 0.4  # seconds another callback spends at each epoch end (a checkpoint, a plot)
START = 0.1  # seconds another callback spends at each epoch start (as a loader's workers starting)
STEP = 0.02  # seconds of each training step


class _Slow(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        time.sleep(STEP)
        return self.layer(batch[0]).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _EpochEndWork(pl.Callback):
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        time.sleep(PAUSE)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        time.sleep(START)


def test_epoch_end_work_of_other_callbacks_is_left_out_epoch_start_is_kept() -> None:
    throughput = Throughput(skip_steps=1, report=False)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[throughput, _EpochEndWork()])  # fmt: skip
    loader = DataLoader(TensorDataset(torch.ones(8, 2), torch.zeros(8)), batch_size=2)  # 4 steps per epoch
    trainer.fit(_Slow(), loader)
    assert throughput.measured_steps == 11
    # 11 steps of >= STEP each and the 2 epoch starts after the first; the 3 pauses (1.2 s) are out
    assert 11 * STEP + 2 * START <= throughput.seconds < 11 * STEP + 2 * START + PAUSE
    assert 12 * STEP + 3 * START <= throughput.train_seconds < 12 * STEP + 3 * START + PAUSE
    assert throughput.images_per_sec == 22 / throughput.seconds
