"""Evaluation inside Lightning's validation loop: the base of KNNProbe, LinearProbe and RankMe.

Each evaluation callback declares what it needs to see (:meth:`EvalCallback.requests`: name ->
``FeatureRequest``); the requests of every evaluation callback are merged into the validation
loaders (``ssl_toolkit.callbacks.eval_plan``). ``SSLModule.validation_step`` embeds every batch of
them alike and returns ``{"feats", "labels", "index"}``. Each callback keeps the batches of the
loaders that serve its requests in its own :class:`FeatureStore` (``on_validation_batch_end``),
gathers them over processes and computes its metrics once the loop has seen every batch
(``on_validation_epoch_end``), then empties the store (``on_validation_end``). Every image is
embedded once per evaluation whatever the number of callbacks; the stores hold references to the
same output tensors.

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

from ssl_toolkit.callbacks.eval_plan import EvalPlan, FeatureRequest, attach, labelled_of, plan_evaluation
from ssl_toolkit.embedding import EmbeddedSplit, gather_split

log = logging.getLogger(__name__)


class FeatureStore:
    """Validation outputs of the requests one callback made, kept from the first batch of an
    evaluation until :meth:`clear` (the callback calls it when the validation loop ends).

    Args:
        names: the callback's request names whose batches are kept.
        rows: name -> (M,) sample indices: of that request's batches only these rows are kept (when
            its loader carries more, e.g. RankMe's subset of the k-NN bank); other names keep every row.
    """

    def __init__(self, names: tuple[str, ...] = (), rows: Mapping[str, Tensor] | None = None) -> None:
        self.names = names
        self.rows = dict(rows or {})
        self._batches: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {}
        self._gathered: dict[str, EmbeddedSplit] = {}

    def add(self, name: str, feats: Tensor, labels: Tensor, index: Tensor) -> None:
        """Keep one batch of request ``name``: feats (B, ...), labels (B,), index (B,) (split positions)."""
        if name not in self.names:
            return
        if name in self.rows:
            keep = torch.isin(index, self.rows[name].to(index.device))
            feats, labels, index = feats[keep], labels[keep], index[keep]
        self._batches.setdefault(name, []).append((feats, labels.long(), index.long()))

    def split(self, name: str) -> EmbeddedSplit | None:
        """Request ``name``'s rows of every process (``gather_split``: sorted by index), or None when
        the loop produced none. Gathered once per evaluation; every process must call it."""
        if name not in self._gathered:
            parts = self._batches.get(name)
            if not parts:
                return None
            feats, labels, index = (torch.cat(p) for p in zip(*parts))
            self._gathered[name] = gather_split(EmbeddedSplit(feats, None, labels, index))
        return self._gathered[name]

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


def datamodule_of(trainer: pl.Trainer, caller: object) -> Any:
    """``trainer.datamodule``, or a one-line error naming ``caller`` when the fit was given loaders."""
    if trainer.datamodule is None:
        raise ValueError(f"datamodule: {type(caller).__name__} needs trainer.fit(module, datamodule=...)")
    return trainer.datamodule


class EvalCallback(pl.Callback):
    """Base of the evaluation callbacks: what they need to see, collection, logging.

    Subclasses implement :meth:`requests` (name -> ``FeatureRequest``: which data, split, rows and
    views) and :meth:`compute` (metrics from ``self.store``, whose ``split(name)`` holds each
    request's features); the metric values must be identical on every process (they are computed
    from gathered features), so they are logged without a sync and a ``ModelCheckpoint`` can
    monitor them.

    At ``setup`` (and again at ``on_fit_start``) the requests of every evaluation callback of the
    trainer are merged into one plan (:func:`ssl_toolkit.callbacks.eval_plan.plan_evaluation`)
    whose loaders become the DataModule's validation loaders (``eval_plan.attach``).

    ``needs_labels`` callbacks (k-NN, linear probe) read the ``labelled`` data (:func:`labelled_of`:
    the training data, or the recipe's ``eval_root``); without labelled data they request nothing
    and are skipped, named in one log line.
    """

    needs_labels: bool = False

    def __init__(self) -> None:
        self.plan = EvalPlan()
        self.served: dict[int, tuple[str, ...]] = {}  # dataloader_idx -> this callback's request names
        self.store = FeatureStore()

    def requests(self, datamodule: Any) -> Mapping[str, FeatureRequest]:
        """Name -> the images this callback needs embedded (``{}``: none, e.g. skipped)."""
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
        """Plan the validation loaders for every evaluation callback of ``trainer``, attach them to
        the DataModule, and note which loaders serve this callback's requests. The loaders are
        built when the validation loop first runs, after ``on_fit_start``."""
        datamodule = datamodule_of(trainer, self)
        callbacks = [cb for cb in trainer.callbacks if isinstance(cb, EvalCallback)]
        # A training-data request may read a labelled-data loader only when both are the same data.
        wanted = [r for cb in callbacks for r in cb.requests(datamodule).values()]
        plan = plan_evaluation(wanted, labelled_of(datamodule) is datamodule)
        attach(plan, datamodule)  # the same plan from every callback: the loaders follow it
        self.plan = plan
        mine = self.requests(datamodule)
        served: dict[int, list[str]] = {}
        rows = {}
        for name, request in mine.items():
            i = plan.loader_of(request)
            served.setdefault(i, []).append(name)
            if request.rows is not None and plan.loaders[i].rows != request.rows:  # the loader has more
                rows[name] = request.row_tensor()
        self.served = {i: tuple(names) for i, names in served.items()}
        self.store = FeatureStore(tuple(mine), rows)
        return plan

    def skipped(self, datamodule: Any) -> bool:
        """Whether this callback needs labels and the data offers none."""
        return self.needs_labels and labelled_of(datamodule) is None

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
        names = self.served.get(dataloader_idx, ())
        if not names:
            return
        check_outputs(outputs, self)
        for name in names:
            self.store.add(name, outputs["feats"], outputs["labels"], outputs["index"])

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = self.compute(pl_module, datamodule_of(trainer, self))
        if metrics:
            pl_module.log_dict(metrics, sync_dist=False, rank_zero_only=False, add_dataloader_idx=False)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.store.clear()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.store.clear()


def check_outputs(outputs: Any, caller: EvalCallback) -> None:
    """Raise a one-line ``ValueError`` unless ``outputs`` is ``{"feats", "labels", "index", ...}``."""
    if not isinstance(outputs, dict) or not {"feats", "labels", "index"} <= outputs.keys():
        raise ValueError(
            f"outputs: {type(caller).__name__} needs validation_step to return {{'feats', 'labels', 'index'}}"
        )


@rank_zero_only
def say_skipped(trainer: pl.Trainer, caller: EvalCallback) -> None:
    """One log line naming every label-needing evaluation skipped (said by the first of them)."""
    data = datamodule_of(trainer, caller)
    evaluations = [cb for cb in trainer.callbacks if isinstance(cb, EvalCallback)]
    skipped = [cb for cb in evaluations if cb.skipped(data)]
    running = [type(cb).__name__ for cb in evaluations if cb not in skipped]
    if skipped and skipped[0] is caller:
        still = f"; {' and '.join(running)} still run{'s' if len(running) == 1 else ''}" if running else ""
        log.warning(
            "evaluation: %s skipped: the training data has no labels or no held-out split "
            "(set data.eval_root to a labelled train/<class>, val/<class> folder to run them)%s",
            " and ".join(type(cb).__name__ for cb in skipped),
            still,
        )
