"""``last.ckpt`` is the newest state of a run, and a run that ended can be extended exactly.

Lightning's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only when it saves on its own
schedule, so a run stopped by ``max_steps`` between two saves ends with an older ``last.ckpt``; and
the loop state Lightning keeps once an epoch loop has ended does not resume an *extended* run:
after an epoch cut short by ``max_steps`` it read back as "epoch finished" (a larger ``max_steps``
trained nothing; a larger ``max_epochs`` only the leftover batches of the *next* epoch), and after a
full epoch with ``max_steps`` set, one step and then an "epoch end". ``LastCheckpoint`` writes
``last.ckpt`` when training ends and, when a checkpoint saved after its epoch loop ended is loaded,
gives Lightning's loop state the shape of one saved at the same step inside the loop.

Lightning 2.6 restarts from a checkpoint saved at an epoch's last batch by finishing that epoch in
``FitLoop.reset`` but keeps its restart stage for the next epoch, which then starts without counting
``ready``/``started`` and without ``on_train_epoch_start``: every checkpoint the resumed run writes
lags one epoch, and resuming from one of them trained an epoch twice. ``LastCheckpoint`` clears that
stage once the restarted epoch is complete, and reads the lagging checkpoints written before the fix
by their ``processed`` count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Checkpoint


class LastCheckpoint(Checkpoint):
    """Writes ``path`` at the end of training; repairs the loop state of truncated-epoch checkpoints.

    Args:
        path: ``<run>/checkpoints/last.ckpt``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._ending = False

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ending = True
        try:
            # The full state (optimizer, callbacks, loops) that resume needs; said explicitly, as
            # Lightning logs "`weights_only` was not set" for a call without it.
            # Every process takes part; rank 0 writes (atomically).
            trainer.save_checkpoint(self.path, weights_only=False)
        finally:
            self._ending = False

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # ``epoch`` and the loader position (``loader_position``) count from ``current_epoch``, which
        # Lightning has already moved past the last epoch when training ends (also when max_steps
        # cut it short): name the epoch of the last batch, as the periodic checkpoints do.
        if not self._ending:
            return
        checkpoint["epoch"] = max(int(checkpoint.get("epoch", 0)) - 1, 0)
        position = checkpoint.get(type(trainer.datamodule).__qualname__) if trainer.datamodule else None
        if isinstance(position, dict) and "epoch" in position:
            position["epoch"] -= 1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loop = trainer.fit_loop
        epochs = loop.epoch_progress.current
        # After ``reset`` and ``on_run_start``: the epoch it restarted in is complete, so the next one
        # is a new epoch (counted and announced), not the rest of a restarted one.
        if (loop.restarted_mid_epoch or loop.restarted_on_epoch_end) and epochs.completed == epochs.ready:
            loop.reset_restart_stage()

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        loop = checkpoint.get("loops", {}).get("fit_loop", {})
        epochs, batches = loop.get("epoch_progress"), loop.get("epoch_loop.batch_progress")
        if not epochs or not batches or batches["current"]["processed"] == 0:
            return
        if batches["current"]["processed"] > batches["current"]["completed"] and (
            epochs["current"]["processed"] == epochs["current"]["ready"]
        ):  # saved in on_train_batch_end by a run resumed before the fix: its epoch was not counted
            for part in ("current", "total"):
                epochs[part]["ready"] = epochs[part]["started"] = epochs[part]["processed"] + 1
        if epochs["current"]["processed"] < epochs["current"]["ready"]:
            return  # saved inside the epoch loop (on_train_batch_end): Lightning resumes it exactly
        # Saved after the epoch loop ended (at its natural end, or cut short by max_steps): give it
        # the shape of a checkpoint saved in on_train_batch_end of the same batch (the epoch started,
        # not processed; the batch processed, not completed), the one Lightning resumes exactly,
        # also when a larger max_steps or max_epochs extends the run. The loader position
        # (ResumableSampler) says which batch comes next either way.
        for part in ("current", "total"):
            ended = epochs[part]["processed"]  # = ready, or ready + 1 in a checkpoint lagging one epoch
            epochs[part]["ready"] = epochs[part]["started"] = ended
            epochs[part]["processed"] = epochs[part]["completed"] = ended - 1
            if batches[part]["completed"] == batches[part]["processed"]:
                batches[part]["completed"] = batches[part]["processed"] - 1
        state = loop.get("epoch_loop.state_dict", {})
        if "_batches_that_stepped" in state:
            state["_batches_that_stepped"] -= 1  # Lightning adds it back when it restarts from there
