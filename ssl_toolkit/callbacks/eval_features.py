"""Evaluation inside Lightning's validation loop: the base of KNNProbe, LinearProbe and RankMe.

``SSLModule.validation_step`` embeds every batch of the validation loaders (held-out split, k-NN
bank, RankMe subset; see ``ssl_toolkit.callbacks.eval_plan``) and returns ``{"feats", "labels",
"index"}``. Each evaluation callback keeps the batches of the roles it reads in its own
:class:`FeatureStore` (``on_validation_batch_end``), gathers them over processes and computes its
metrics once the loop has seen every batch (``on_validation_epoch_end``), then empties the store
(``on_validation_end``). Every image is embedded once per evaluation whatever the number of
callbacks; the stores hold references to the same output tensors.

So Lightning's knobs decide when and how much: ``limit_val_batches=0`` evaluates never,
``val_check_interval=N`` every N steps, ``check_val_every_n_epoch`` spaces evaluations,
``num_sanity_val_steps`` runs a short check before training (its metrics are discarded by
Lightning).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch import Tensor, nn

from ssl_toolkit.callbacks.eval_plan import EvalPlan, Role, plan_evaluation
from ssl_toolkit.embedding import EmbeddedSplit, gather_split

log = logging.getLogger(__name__)


class FeatureStore:
    """Validation outputs of the roles one callback reads, kept from the first batch of an
    evaluation until :meth:`clear` (the callback calls it when the validation loop ends).

    Args:
        roles: the loader roles whose batches are kept.
        rows: role -> (M,) sample indices: of that role's batches only these rows are kept (RankMe
            keeps its subset of the k-NN bank, not the whole bank); other roles keep every row.
    """

    def __init__(self, roles: tuple[Role, ...] = (), rows: Mapping[Role, Tensor] | None = None) -> None:
        self.roles = roles
        self.rows = dict(rows or {})
        self._batches: dict[Role, list[tuple[Tensor, Tensor, Tensor]]] = {}
        self._gathered: dict[Role, EmbeddedSplit] = {}

    def add(self, role: Role, feats: Tensor, labels: Tensor, index: Tensor) -> None:
        """Keep one batch: feats (B, F), labels (B,), index (B,) (positions in the role's split)."""
        if role not in self.roles:
            return
        if role in self.rows:
            keep = torch.isin(index, self.rows[role].to(index.device))
            feats, labels, index = feats[keep], labels[keep], index[keep]
        self._batches.setdefault(role, []).append((feats, labels.long(), index.long()))

    def split(self, role: Role) -> EmbeddedSplit | None:
        """This role's rows of every process (``gather_split``: sorted by index), or None when the
        loop produced none. Gathered once per evaluation; every process must call it."""
        if role not in self._gathered:
            parts = self._batches.get(role)
            if not parts:
                return None
            feats, labels, index = (torch.cat(p) for p in zip(*parts))
            self._gathered[role] = gather_split(EmbeddedSplit(feats, None, labels, index))
        return self._gathered[role]

    def clear(self) -> None:
        """Drop every kept batch and gathered split (frees the feature memory)."""
        self._batches.clear()
        self._gathered.clear()

    def __len__(self) -> int:
        """Rows kept on this process."""
        return sum(b[0].shape[0] for parts in self._batches.values() for b in parts)


@torch.no_grad()
def project(module: nn.Module, feats: Tensor, chunk_size: int = 1024) -> Tensor:
    """Projector embeddings ``module.project`` of backbone features (N, F) -> (N, D), eval mode.

    Chunked so a projector's wide hidden layer never holds all N rows at once.
    """
    was_training = module.training
    module.eval()
    try:
        return torch.cat([module.project(chunk) for chunk in feats.split(chunk_size)])
    finally:
        module.train(was_training)


def labelled_of(datamodule: Any) -> Any | None:
    """The data label-needing evaluations read: ``datamodule.labelled_data()`` (the training data
    when it has labels and a held-out split, else the recipe's ``eval_root`` data, else None), or
    ``datamodule`` itself when it has no such method."""
    pick = getattr(datamodule, "labelled_data", None)
    return pick() if pick is not None else datamodule


def datamodule_of(trainer: pl.Trainer, caller: object) -> Any:
    """``trainer.datamodule``, or a one-line error naming ``caller`` when the fit was given loaders."""
    if trainer.datamodule is None:
        raise ValueError(f"datamodule: {type(caller).__name__} needs trainer.fit(module, datamodule=...)")
    return trainer.datamodule


class EvalCallback(pl.Callback):
    """Base of the evaluation callbacks: which loaders they need, collection, logging.

    Subclasses implement :meth:`wanted` (role -> rows of the split they read) and
    :meth:`compute` (metrics from ``self.store``); the metric values must be identical on every
    process (they are computed from gathered features), so they are logged without a sync and a
    ``ModelCheckpoint`` can monitor them.

    At ``setup`` every evaluation callback of the trainer is asked what it wants and the merged
    plan (:func:`ssl_toolkit.callbacks.eval_plan.plan_evaluation`) is given to the DataModule
    (``datamodule.eval_plan``), which turns it into the validation loaders.

    ``needs_labels`` callbacks (k-NN, linear probe) read the ``val``/``bank`` roles of
    :func:`labelled_of` (the training data, or the recipe's ``eval_root``); without labelled data
    they want nothing and are skipped, named in one log line.
    """

    needs_labels: bool = False

    def __init__(self) -> None:
        self.plan = EvalPlan()
        self.store = FeatureStore()

    def wanted(self, datamodule: Any) -> Mapping[Role, Tensor | None]:
        """Role -> (M,) positions of the role's split this callback reads (None: all of it)."""
        raise NotImplementedError

    def compute(self, pl_module: pl.LightningModule, datamodule: Any) -> dict[str, float]:
        """Metric name -> value from the features in ``self.store`` (``{}`` when there are none)."""
        raise NotImplementedError

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage in ("fit", "validate"):
            self.make_plan(trainer)
            if self.skipped(datamodule_of(trainer, self)):
                say_skipped(trainer, self)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.make_plan(trainer)  # again: a restored checkpoint may have brought other rows (RankMe)

    def make_plan(self, trainer: pl.Trainer) -> EvalPlan:
        """Plan the validation loaders for every evaluation callback of ``trainer`` and give the plan
        to the DataModule; keep the roles (and rows) this callback reads. The loaders are built when
        the validation loop first runs, after ``on_fit_start``."""
        datamodule = datamodule_of(trainer, self)
        callbacks = [cb for cb in trainer.callbacks if isinstance(cb, EvalCallback)]
        # RankMe may read the k-NN bank only when the bank is the training data's own train split.
        plan = plan_evaluation([cb.wanted(datamodule) for cb in callbacks], labelled_of(datamodule) is datamodule)
        datamodule.eval_plan = plan  # the same plan from every callback: the loaders follow it
        self.plan = plan
        wanted = self.wanted(datamodule)
        rows = {}
        for role, r in wanted.items():  # a loader with more rows than this callback reads: filter
            source = plan.sources[role]
            if r is not None and not (plan.rows.get(source) is not None and torch.equal(plan.rows[source], r)):
                rows[source] = r
        self.store = FeatureStore(tuple(sorted({plan.sources[role] for role in wanted})), rows)
        return plan

    def skipped(self, datamodule: Any) -> bool:
        """Whether this callback needs labels and the data offers none."""
        return self.needs_labels and labelled_of(datamodule) is None

    def source(self, role: Role) -> Role:
        """The loader role that carries ``role``'s images in this fit's plan."""
        return self.plan.sources.get(role, role)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.store.clear()

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.plan.roles:
            return
        role = self.plan.role(dataloader_idx)
        if role not in self.store.roles:
            return
        if not isinstance(outputs, dict) or not {"feats", "labels", "index"} <= outputs.keys():
            raise ValueError(
                f"outputs: {type(self).__name__} needs validation_step to return {{'feats', 'labels', 'index'}}"
            )
        self.store.add(role, outputs["feats"], outputs["labels"], outputs["index"])

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = self.compute(pl_module, datamodule_of(trainer, self))
        if metrics:
            pl_module.log_dict(metrics, sync_dist=False, rank_zero_only=False, add_dataloader_idx=False)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.store.clear()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.store.clear()


@rank_zero_only
def say_skipped(trainer: pl.Trainer, caller: EvalCallback) -> None:
    """One log line naming every label-needing evaluation skipped (said by the first of them)."""
    data = datamodule_of(trainer, caller)
    skipped = [cb for cb in trainer.callbacks if isinstance(cb, EvalCallback) and cb.skipped(data)]
    if skipped and skipped[0] is caller:
        log.warning(
            "evaluation: %s skipped: the training data has no labels or no held-out split "
            "(set data.eval_root to a labelled train/<class>, val/<class> folder to run them); RankMe still runs",
            " and ".join(type(cb).__name__ for cb in skipped),
        )
