"""Stop training at the first NaN/Inf loss, before a checkpoint with broken weights is written."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from ssl_toolkit.checks import check_int

_NONE = 2**62  # "no bad step" in the min-reduction over processes


class NonFiniteLossError(RuntimeError):
    """Raised by ``FiniteLoss``; ``step`` is the optimizer step whose loss was not finite (1-based,
    as in checkpoint names ``step=N``), ``value`` the loss ("nan", "inf" or "-inf")."""

    def __init__(self, step: int, epoch: int, value: str, what: str = "train/loss") -> None:
        super().__init__(f"{what} is {value} at step {step} (epoch {epoch}); training stopped")
        self.step, self.epoch, self.value = step, epoch, value


class FiniteLoss(pl.Callback):
    """Watches ``train/loss`` and the step's backbone features and raises ``NonFiniteLossError``
    naming the first bad step.

    The check costs one host sync, so it runs every ``check_every_n_steps`` steps, and always
    before a checkpoint is written, before validation, at the end of each epoch (``fit`` puts this
    callback first, so before any evaluation callback) and at the end of training. Before a save
    and before an evaluation the weights themselves are checked too (``check_weights``): the last
    optimizer step may have broken them after the last loss was computed. A
    checkpoint is therefore never written after a non-finite loss: the newest checkpoint on disk is
    the last good one. Under DDP the first bad step is reduced over processes (min), so every
    process stops at the same check.

    Args:
        check_every_n_steps: steps between checks (1 = stop right after the bad step).
    """

    def __init__(self, check_every_n_steps: int = 10) -> None:
        check_int("check_every_n_steps", check_every_n_steps)
        self.check_every_n_steps = check_every_n_steps
        # (step, epoch, loss, features finite) not yet checked; tensors stay on the device until check()
        self._pending: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        feats = outputs.get("feats") if isinstance(outputs, dict) else None
        if isinstance(loss, torch.Tensor):
            feats_ok = torch.isfinite(feats).all() if isinstance(feats, torch.Tensor) else torch.ones((), dtype=bool)
            self._pending.append(
                (trainer.global_step, trainer.current_epoch, loss.detach().float().reshape(-1)[:1], feats_ok)
            )
        if trainer.global_step % self.check_every_n_steps == 0:
            self.check(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer)  # before any evaluation embeds data with the current weights
        if trainer.training or trainer.state.fn == "fit":
            self.check_weights(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.check(trainer)  # raising here aborts the save: the previous checkpoint stays
        self.check_weights(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer)

    def check_weights(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Raise ``NonFiniteLossError`` naming the first non-finite parameter or buffer.

        The losses checked so far were computed *before* the last optimizer step, so an update that
        broke the weights (a non-finite gradient with a finite loss) would otherwise reach the
        evaluation and the checkpoint. One host sync for all tensors; run only before an
        evaluation and a save, which sync anyway.
        """
        named = [*pl_module.named_parameters(), *pl_module.named_buffers()]  # not extra state (dicts)
        tensors = [(n, t) for n, t in named if t.is_floating_point()]
        if not tensors:
            return
        ok = torch.stack([torch.isfinite(t.detach()).all() for _, t in tensors])
        bad = int((~ok).nonzero()[0, 0]) if not bool(ok.all()) else -1
        if trainer.world_size > 1:  # every process stops together
            anyone = trainer.strategy.reduce(torch.tensor(float(bad >= 0), device=ok.device), reduce_op="max")
            if float(anyone) > 0 and bad < 0:
                raise NonFiniteLossError(
                    trainer.global_step, trainer.current_epoch, "not finite", "another process's weights"
                )
        if bad >= 0:
            what = f"the weights ({tensors[bad][0]}) after the last optimizer step"
            raise NonFiniteLossError(trainer.global_step, trainer.current_epoch, "not finite", what)

    def check(self, trainer: pl.Trainer) -> None:
        """Raise ``NonFiniteLossError`` if any loss since the last check was NaN or infinite."""
        pending, self._pending = self._pending, []
        if pending:  # one host sync for all of them
            bad_loss = ~torch.isfinite(torch.cat([loss for _, _, loss, _ in pending]))
            bad_feats = ~torch.stack([ok.to(bad_loss.device) for _, _, _, ok in pending])
            flags = (bad_loss | bad_feats).tolist()
        else:
            flags = []
        first = next((i for i, bad in enumerate(flags) if bad), None)
        step = pending[first][0] if first is not None else _NONE
        if trainer.world_size > 1:
            step = int(
                trainer.strategy.reduce(torch.tensor(step, device=trainer.strategy.root_device), reduce_op="min")
            )
        if step == _NONE:
            return
        mine = [(e, loss) for s, e, loss, _ in pending if s == step]
        if not mine:  # another process's bad step
            raise NonFiniteLossError(step, trainer.current_epoch, "not finite")
        epoch, loss = mine[0]
        if torch.isfinite(loss).all():  # the loss is finite, the backbone features are not
            raise NonFiniteLossError(step, epoch, "not finite", what="the backbone features")
        raise NonFiniteLossError(step, epoch, str(float(loss)))
