"""Online linear probe: a classifier trained beside pretraining on detached backbone features."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.callbacks.eval_features import EvalCallback, Split, datamodule_of, split_features
from ssl_toolkit.checks import check_int
from ssl_toolkit.distributed import is_distributed, world_size
from ssl_toolkit.metrics import topk_accuracy


class LinearProbe(EvalCallback):
    """``nn.Linear(F, C)`` trained on every training batch's view-0 backbone features (solo-learn's
    online linear evaluation), evaluated on the un-augmented val split.

    The probe is never part of the SSL loss or of the module's optimizer: it reads
    ``outputs["feats"]`` (detached) in ``on_train_batch_end`` and steps its own SGD (momentum 0.9).
    Under torch.distributed its gradients are averaged over processes by hand (it is outside the
    DDP wrapper), so every process keeps the same weights. Its init uses a private RNG stream, so
    adding the probe leaves the training run unchanged. Weights and optimizer state are part of
    the callback state in checkpoints; resuming continues the probe exactly. Needs labels >= 0
    (label -1 is ignored).

    Without labels in the training data it is skipped (one log line), unless the data names a
    separate labelled ``eval_root``: the probe then cannot learn from the training batches and
    instead trains at each evaluation for ``heldout_epochs`` passes (SGD, batches of the data's
    batch size, a private seeded order) over the frozen features of ``eval_root``'s train split,
    continuing from the previous evaluation's weights, then scores ``eval_root``'s val split.

    Logs:
        ``train/linear_loss`` every step; ``val/linear_top1`` (and ``val/linear_top5`` when the data
        has more than 5 classes) every ``every_n_epochs`` epochs, at the training epoch end.

    Args:
        lr: learning rate per 256 samples; SGD uses lr * global_batch / 256 (solo-learn's scaling).
        weight_decay: SGD weight decay.
        every_n_epochs: evaluation period in epochs.
        heldout_epochs: passes over ``eval_root``'s train features per evaluation (only with a
            separate labelled ``eval_root``).
    """

    splits: tuple[Split, ...] = ("val",)
    needs_labels = True

    def __init__(
        self, lr: float = 0.1, weight_decay: float = 0.0, every_n_epochs: int = 1, heldout_epochs: int = 10
    ) -> None:
        super().__init__(every_n_epochs)
        check_int("heldout_epochs", heldout_epochs)
        self.heldout_epochs = heldout_epochs
        if not lr > 0:
            raise ValueError(f"lr: must be > 0, got {lr!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay: must be >= 0, got {weight_decay!r}")
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.classifier: nn.Linear | None = None
        self.optimizer: torch.optim.SGD | None = None
        self._optimizer_state: dict[str, Any] | None = None  # restored; applied when the optimizer is built
        self._online: bool | None = None  # trains on the training batches (their data has labels)

    # --- building ----------------------------------------------------------------------------
    def build(self, in_dim: int, num_classes: int, device: torch.device | str = "cpu") -> nn.Linear:
        """Create the (F -> C) classifier; the optimizer follows at fit start or the first :meth:`fit_batch`."""
        # A fixed private seed: the same init on every process without a broadcast, and the global
        # RNG (augmentations, shuffling) is left where it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.classifier = nn.Linear(in_dim, num_classes)
        self.classifier.to(device)
        self.optimizer = None
        return self.classifier

    def _build_optimizer(self, global_batch: int) -> torch.optim.SGD:
        assert self.classifier is not None
        lr = self.lr * global_batch / 256
        self.optimizer = torch.optim.SGD(
            self.classifier.parameters(), lr=lr, momentum=0.9, weight_decay=self.weight_decay
        )
        if self._optimizer_state is not None:
            self.optimizer.load_state_dict(self._optimizer_state)  # moves state to the weights' device
            self._optimizer_state = None
        return self.optimizer

    # --- training ----------------------------------------------------------------------------
    def fit_batch(self, feats: Tensor, labels: Tensor) -> Tensor:
        """One SGD step of the probe.

        Args:
            feats: (B, F) backbone features of this process's batch (no gradient flows back).
            labels: (B,) int labels (-1 ignored).

        Returns:
            The detached scalar cross-entropy of this process's batch, before the step.
        """
        if self.classifier is None:
            raise ValueError("classifier: call build() (or fit through a Trainer) first")
        if self.optimizer is None:
            self._build_optimizer(feats.shape[0] * world_size())
        weight = self.classifier.weight
        # fp32 whatever the training precision: the probe is tiny and must not underflow.
        with torch.enable_grad(), torch.autocast(weight.device.type, enabled=False):
            logits = self.classifier(feats.detach().to(weight.device, torch.float32))
            loss = F.cross_entropy(logits, labels.to(weight.device).long(), ignore_index=-1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if is_distributed():
            for p in self.classifier.parameters():
                dist.all_reduce(p.grad)  # SUM: gloo has no AVG
                p.grad.div_(world_size())
        self.optimizer.step()
        return loss.detach()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        data = self.eval_data(trainer)
        self._online = data is datamodule_of(trainer, self)
        width = getattr(pl_module, "feature_dim", None)
        if stage == "fit" and self.classifier is None and isinstance(width, int) and data is not None:
            self.build(width, int(data.num_classes))  # before a checkpoint is restored

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.classifier is None:
            return
        # The module reaches its device after setup and after a checkpoint is restored; the
        # optimizer (and its restored momentum) is built once the weights are there.
        self.classifier.to(pl_module.device)
        batch_size = getattr(trainer.datamodule, "batch_size", None)
        if self.optimizer is None and isinstance(batch_size, int):
            self._build_optimizer(batch_size * trainer.world_size)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._online is None:  # decided once per fit: the data does not change
            self._online = self.eval_data(trainer) is datamodule_of(trainer, self)
        if not self._online:  # skipped, or trained on eval_root at evaluation
            return
        if not isinstance(outputs, dict) or "feats" not in outputs:
            raise ValueError("outputs: LinearProbe needs training_step to return {'loss', 'feats'}")
        feats = outputs["feats"].detach()
        if self.classifier is None:  # no module.feature_dim: infer the width from the batch
            self.build(feats.shape[1], int(datamodule_of(trainer, self).num_classes), feats.device)
        loss = self.fit_batch(feats, batch[1])
        pl_module.log("train/linear_loss", loss, batch_size=feats.shape[0])

    # --- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, module: nn.Module, datamodule: Any, step: int | None = None) -> dict[str, float]:
        """Accuracy of the probe on ``datamodule``'s val split embedded by ``module.embed``.

        Returns:
            ``{"val/linear_top1": float}`` (+ ``"val/linear_top5"`` with more than 5 classes), or
            ``{}`` before the classifier exists.
        """
        if self.classifier is None:
            return {}
        val = split_features(module, datamodule, "val", step)
        weight = self.classifier.weight
        with torch.autocast(weight.device.type, enabled=False):
            logits = self.classifier(val.feats.to(weight.device, torch.float32))  # (N, C)
        metrics = {"val/linear_top1": topk_accuracy(logits, val.labels, 1)}
        if logits.shape[1] > 5:
            metrics["val/linear_top5"] = topk_accuracy(logits, val.labels, 5)
        return metrics

    def epoch_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        data = self.eval_data(trainer)
        if data is not datamodule_of(trainer, self):  # a separate labelled eval_root: train on it first
            self.fit_heldout(pl_module, data, trainer.global_step)
        return self.evaluate(pl_module, data, step=trainer.global_step)

    def fit_heldout(self, module: nn.Module, datamodule: Any, step: int | None = None) -> None:
        """``heldout_epochs`` SGD passes over the frozen features of ``datamodule``'s train split.

        The features are gathered (the same rows on every process) and the batch order comes from a
        generator seeded with ``step``, so every process takes the same steps.
        """
        train = split_features(module, datamodule, "train", step)
        known = (train.labels >= 0).nonzero().squeeze(1)
        if self.classifier is None:
            self.build(train.feats.shape[1], int(datamodule.num_classes), train.feats.device)
        batch = int(datamodule.batch_size)
        if self.optimizer is None:
            self._build_optimizer(batch)
        generator = torch.Generator().manual_seed(0 if step is None else step)
        for _ in range(self.heldout_epochs):
            order = known[torch.randperm(len(known), generator=generator).to(known.device)]
            for rows in order.split(batch):
                self.fit_batch(train.feats[rows], train.labels[rows])  # the same rows on every process

    # --- checkpoint state --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.classifier is None:
            return {}
        optimizer = self.optimizer.state_dict() if self.optimizer is not None else self._optimizer_state
        return {"classifier": self.classifier.state_dict(), "optimizer": optimizer}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        weight = state_dict["classifier"]["weight"]  # (C, F)
        if self.classifier is None or self.classifier.weight.shape != weight.shape:
            self.build(weight.shape[1], weight.shape[0])
        self.classifier.load_state_dict(state_dict["classifier"])  # copies onto the current device
        self.optimizer = None  # rebuilt with the restored state at fit start, on the weights' device
        self._optimizer_state = state_dict["optimizer"]
