"""Online linear probe: a classifier trained beside pretraining on detached backbone features."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.callbacks.eval_features import EvalCallback, datamodule_of, labelled_of
from ssl_toolkit.callbacks.eval_plan import FeatureRequest
from ssl_toolkit.checks import check_int
from ssl_toolkit.distributed import is_distributed, world_size
from ssl_toolkit.embedding import EmbeddedSplit
from ssl_toolkit.metrics import topk_accuracy

PROTOCOLS = ("separate", "solo_learn")


class LinearProbe(EvalCallback):
    """``nn.Linear(F, C)`` trained on detached backbone features of every training batch, evaluated on
    the un-augmented held-out split in the validation loop. Two protocols (``docs/protocols.md``):

    ``protocol="solo_learn"`` is solo-learn's online linear evaluation (``solo/methods/base.py``
    ``BaseMethod``, commit f25dc1f): the classifier is a parameter group of the module's optimizer
    (``SSLModule.add_feature_loss``) with its own lr, weight decay 0 and the run's warm-up/cosine
    schedule (and LARS adaptation of its weight when the optimizer is LARS, as solo-learn's
    ``LARSWrapper`` does); its loss, the cross-entropy averaged over every global (large) crop's
    detached features, is added to the SSL loss, so it steps with the same optimizer step.

    ``protocol="separate"`` (the default) reads ``outputs["feats"]`` (view 0, detached) in
    ``on_train_batch_end`` and steps its own SGD (momentum 0.9, constant lr); the module's
    optimizer and loss are untouched.

    Under torch.distributed its gradients are averaged over processes by hand (it is outside the
    DDP wrapper), so every process keeps the same weights. Its init uses a private RNG stream, so
    adding the probe leaves the training run unchanged. Weights and optimizer state are part of
    the callback state in checkpoints; resuming continues the probe exactly. Needs labels >= 0
    (label -1 is ignored).

    Without labels in the training data it is skipped (one log line), unless the data names a
    separate labelled ``eval_root``: the probe then cannot learn from the training batches and
    instead trains at each evaluation for ``heldout_epochs`` passes (SGD, batches of the data's
    batch size, a private seeded order) over the frozen features of ``eval_root``'s train split
    (a validation loader of its own, or the k-NN bank's), continuing from the previous evaluation's weights,
    then scores ``eval_root``'s val split.

    Logs:
        ``train/linear_loss`` every step; ``val/linear_top1`` (and ``val/linear_top5`` when the data
        has more than 5 classes) whenever Lightning's validation loop runs.

    Args:
        lr: learning rate per 256 samples; SGD uses lr * global_batch / 256 (solo-learn's scaling
            of the base lr; its ``classifier_lr`` is the same number at its global batch of 256).
        weight_decay: SGD weight decay (``separate`` only; ``solo_learn`` uses 0).
        heldout_epochs: passes over ``eval_root``'s train features per evaluation (only with a
            separate labelled ``eval_root``).
        protocol: ``"separate"`` or ``"solo_learn"`` (above).

    Raises:
        ValueError: ``lr <= 0``, ``weight_decay < 0``, an unknown ``protocol``, ``solo_learn`` with a
            ``weight_decay`` other than 0, or (at fit start) ``solo_learn`` on unlabelled training data.
    """

    needs_labels = True

    def __init__(
        self, lr: float = 0.1, weight_decay: float = 0.0, heldout_epochs: int = 10, protocol: str = "separate"
    ) -> None:
        super().__init__()
        check_int("heldout_epochs", heldout_epochs)
        self.heldout_epochs = heldout_epochs
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if protocol == "solo_learn" and weight_decay != 0:
            raise ValueError("weight_decay: the solo_learn protocol trains the classifier without weight decay")
        self.protocol = protocol
        self._registered_on: pl.LightningModule | None = None  # solo_learn: the module whose optimizer trains it
        self._last_loss: Tensor | None = None
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
        data = labelled_of(datamodule_of(trainer, self))
        self._online = data is datamodule_of(trainer, self)
        width = getattr(pl_module, "feature_dim", None)  # another LightningModule: width from the first batch
        if stage == "fit" and self.classifier is None and isinstance(width, int) and data is not None:
            self.build(width, int(data.num_classes))  # before a checkpoint is restored
        if stage == "fit" and self.protocol == "solo_learn":
            self._join_main_optimizer(trainer, pl_module)

    def _join_main_optimizer(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Before configure_optimizers: the classifier becomes parameter groups of the module's optimizer.
        if not self._online or self.classifier is None:
            raise ValueError(
                "callbacks.linear_probe.protocol: solo_learn trains on the training batches' labels; "
                "this data has none (use protocol: separate with data.eval_root)"
            )
        if self._registered_on is pl_module:
            return
        # On the training device now: the optimizer (and a restored momentum) refers to these tensors.
        self.classifier.to(trainer.strategy.root_device)
        batch = int(datamodule_of(trainer, self).batch_size) * trainer.world_size * trainer.accumulate_grad_batches
        lr = self.lr * batch / 256
        exclude = bool(getattr(pl_module.optimizer_factory, "exclude_bias_n_norm", True))  # AdamW has no such switch
        groups = [
            {"params": [self.classifier.weight], "lr": lr, "weight_decay": 0.0, "lars_adapt": True},
            {"params": [self.classifier.bias], "lr": lr, "weight_decay": 0.0, "lars_adapt": not exclude},
        ]
        pl_module.add_feature_loss(groups, self.feature_loss)
        self._registered_on = pl_module

    def feature_loss(self, feats: list[Tensor], labels: Tensor) -> Tensor:
        """solo-learn's online classifier loss: cross-entropy of the classifier on each global view's
        detached features (V x (B, F)), averaged over the views; labels (B,), -1 ignored. In fp32.

        Returns:
            A scalar with gradient to the classifier only (0 when no label is known).
        """
        assert self.classifier is not None
        weight = self.classifier.weight
        labels = labels.to(weight.device).long()
        known = (labels >= 0).float()
        count = known.sum().clamp_min(1.0)  # no host sync: an all-unknown batch gives 0
        with torch.autocast(weight.device.type, enabled=False):
            losses = [
                (F.cross_entropy(self.classifier(f.detach().to(weight.device, torch.float32)), labels.clamp_min(0),
                                 reduction="none") * known).sum() / count
                for f in feats
            ]  # fmt: skip
            loss = torch.stack(losses).mean()
        self._last_loss = loss.detach()
        return loss

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        # solo_learn: the classifier is outside the DDP wrapper; average its gradients by hand.
        if self.protocol != "solo_learn" or self.classifier is None or not is_distributed():
            return
        for p in self.classifier.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)  # SUM: gloo has no AVG
                p.grad.div_(world_size())

    def requests(self, datamodule: Any) -> Mapping[str, FeatureRequest]:
        data = labelled_of(datamodule)
        if data is None:
            return {}  # skipped: no labels
        wanted = {"val": FeatureRequest("val", source="labelled")}
        if data is not datamodule:  # eval_root: trained on its whole train split at each evaluation
            wanted["bank"] = FeatureRequest("train", source="labelled")
        return wanted

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        if self.classifier is None:
            return
        # The module reaches its device after setup and after a checkpoint is restored; the
        # optimizer (and its restored momentum) is built once the weights are there.
        self.classifier.to(pl_module.device)
        batch_size = getattr(trainer.datamodule, "batch_size", None)  # a plain LightningDataModule, or none
        if self.protocol == "separate" and self.optimizer is None and isinstance(batch_size, int):
            self._build_optimizer(batch_size * trainer.world_size)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._online is None:  # decided once per fit: the data does not change
            self._online = labelled_of(datamodule_of(trainer, self)) is datamodule_of(trainer, self)
        if not self._online:  # skipped, or trained on eval_root at evaluation
            return
        if self.protocol == "solo_learn":  # stepped by the module's optimizer with the SSL loss
            if self._last_loss is not None:
                pl_module.log("train/linear_loss", self._last_loss, batch_size=batch[1].shape[0])
            return
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
        if val is None:
            return {}
        data = labelled_of(datamodule)
        if data is not None and data is not datamodule:  # a separate labelled eval_root: train on it first
            train = self.store.split("bank")
            if train is not None:
                self.fit_heldout(train, int(data.num_classes), int(data.batch_size), pl_module.global_step)
        return self.score(val)

    def fit_heldout(self, train: EmbeddedSplit, num_classes: int, batch: int, step: int = 0) -> None:
        """``heldout_epochs`` SGD passes over frozen features ``train`` (N, F) with labels (N,).

        The features are gathered (the same rows on every process) and the batch order comes from a
        generator seeded with ``step``, so every process takes the same steps.
        """
        known = (train.labels >= 0).nonzero().squeeze(1)
        if self.classifier is None:
            self.build(train.feats.shape[1], num_classes, train.feats.device)
        if self.optimizer is None:
            self._build_optimizer(batch)
        generator = torch.Generator().manual_seed(step)
        with torch.inference_mode(False):  # out of the validation loop's inference mode
            feats, labels = train.feats.clone(), train.labels.clone()
            for _ in range(self.heldout_epochs):
                order = known[torch.randperm(len(known), generator=generator).to(known.device)]
                for rows in order.split(batch):
                    self.fit_batch(feats[rows], labels[rows])  # the same rows on every process

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
