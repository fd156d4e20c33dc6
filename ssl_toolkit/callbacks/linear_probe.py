"""Online linear probe: a classifier trained beside pretraining on detached backbone features."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.callbacks.eval_features import EvalCallback, datamodule_of
from ssl_toolkit.data.eval_plan import Role
from ssl_toolkit.distributed import is_distributed, world_size
from ssl_toolkit.embedding import EmbeddedSplit
from ssl_toolkit.metrics import topk_accuracy


class LinearProbe(EvalCallback):
    """``nn.Linear(F, C)`` trained on every training batch's view-0 backbone features (solo-learn's
    online linear evaluation), evaluated on the un-augmented held-out split in the validation loop.

    The probe is never part of the SSL loss or of the module's optimizer: it reads
    ``outputs["feats"]`` (detached) in ``on_train_batch_end`` and steps its own SGD (momentum 0.9).
    Under torch.distributed its gradients are averaged over processes by hand (it is outside the
    DDP wrapper), so every process keeps the same weights. Its init uses a private RNG stream, so
    adding the probe leaves the training run unchanged. Weights and optimizer state are part of
    the callback state in checkpoints; resuming continues the probe exactly. Needs labels >= 0
    (label -1 is ignored).

    Logs:
        ``train/linear_loss`` every step; ``val/linear_top1`` (and ``val/linear_top5`` when the data
        has more than 5 classes) whenever Lightning's validation loop runs.

    Args:
        lr: learning rate per 256 samples; SGD uses lr * global_batch / 256 (solo-learn's scaling).
        weight_decay: SGD weight decay.
    """

    def __init__(self, lr: float = 0.1, weight_decay: float = 0.0) -> None:
        super().__init__()
        if not lr > 0:
            raise ValueError(f"lr: must be > 0, got {lr!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay: must be >= 0, got {weight_decay!r}")
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.classifier: nn.Linear | None = None
        self.optimizer: torch.optim.SGD | None = None
        self._optimizer_state: dict[str, Any] | None = None  # restored; applied when the optimizer is built

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
        width = getattr(pl_module, "feature_dim", None)
        if stage == "fit" and self.classifier is None and isinstance(width, int):
            self.build(width, int(datamodule_of(trainer, self).num_classes))  # before a checkpoint is restored

    def wanted(self, datamodule: Any) -> Mapping[Role, Tensor | None]:
        return {"val": None}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
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
        if not isinstance(outputs, dict) or "feats" not in outputs:
            raise ValueError("outputs: LinearProbe needs training_step to return {'loss', 'feats'}")
        feats = outputs["feats"].detach()
        if self.classifier is None:  # no module.feature_dim: infer the width from the batch
            self.build(feats.shape[1], int(datamodule_of(trainer, self).num_classes), feats.device)
        loss = self.fit_batch(feats, batch[1])
        pl_module.log("train/linear_loss", loss, batch_size=feats.shape[0])

    # --- evaluation --------------------------------------------------------------------------
    def compute(self, pl_module: pl.LightningModule, datamodule: Any) -> dict[str, float]:
        val = self.store.split("val")
        return {} if val is None else self.score(val)

    @torch.no_grad()
    def score(self, val: EmbeddedSplit) -> dict[str, float]:
        """Accuracy of the probe on features (N, F) with labels (N,).

        Returns:
            ``{"val/linear_top1": float}`` (+ ``"val/linear_top5"`` with more than 5 classes), or
            ``{}`` before the classifier exists.
        """
        if self.classifier is None:
            return {}
        weight = self.classifier.weight
        with torch.autocast(weight.device.type, enabled=False):
            logits = self.classifier(val.feats.to(weight.device, torch.float32))  # (N, C)
        metrics = {"val/linear_top1": topk_accuracy(logits, val.labels, 1)}
        if logits.shape[1] > 5:
            metrics["val/linear_top5"] = topk_accuracy(logits, val.labels, 5)
        return metrics

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
