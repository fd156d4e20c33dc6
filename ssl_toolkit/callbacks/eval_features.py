"""Evaluation features shared by KNNProbe, LinearProbe and RankMe, computed once per training step.

When several evaluation callbacks run at the same epoch end they need the same forward passes
(k-NN and the linear probe both embed the val split; RankMe's subset is part of the k-NN bank).
:func:`split_features` memoizes a split's features on ``(module, datamodule, split, step)``; the
cache holds one step at a time and :class:`EvalCallback` empties it when the next epoch starts, so
the features never outlive the epoch end that needed them.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ssl_toolkit.checks import check_int
from ssl_toolkit.distributed import is_distributed
from ssl_toolkit.embedding import EmbeddedSplit, embed_split, gather_split

Split = Literal["train", "val"]
log = logging.getLogger(__name__)

# (id(module), id(datamodule), split, step) -> features; entries of one step only.
_CACHE: dict[tuple[int, int, str, int], EmbeddedSplit] = {}


def split_loader(datamodule: Any, split: Split, indices: Tensor | None = None) -> DataLoader:
    """The un-augmented ``train`` (``train_eval_dataloader``) or ``val`` loader of ``datamodule``.

    Args:
        datamodule: offers ``train_eval_dataloader()`` and ``val_dataloader()``.
        split: which split.
        indices: (M,) sample positions to keep (a ``Subset``), or None for the whole split.

    Returns:
        A loader in a fixed order; under torch.distributed each process gets its shard through a
        ``DistributedSampler(shuffle=False)`` (gather the result with ``gather_split``).
    """
    base = datamodule.train_eval_dataloader() if split == "train" else datamodule.val_dataloader()
    if indices is None and not is_distributed():
        return base
    dataset = base.dataset if indices is None else Subset(base.dataset, indices.tolist())
    sampler = DistributedSampler(dataset, shuffle=False) if is_distributed() else None
    return DataLoader(
        dataset,
        batch_size=base.batch_size,
        sampler=sampler,
        num_workers=base.num_workers,
        collate_fn=base.collate_fn,
        pin_memory=base.pin_memory,
    )


def split_features(module: nn.Module, datamodule: Any, split: Split, step: int | None = None) -> EmbeddedSplit:
    """Backbone features ``module.embed`` of a whole split, gathered over processes (rows by index).

    Args:
        module: offers ``embed(uint8 images) -> (B, F)``.
        datamodule: see :func:`split_loader`.
        split: ``"train"`` or ``"val"``.
        step: the training step the weights belong to; memoized when given (one step kept).

    Returns:
        EmbeddedSplit with feats (N, F), labels (N,), index (N,) == arange(N); proj is None.
    """
    key = (id(module), id(datamodule), split, -1 if step is None else step)
    if step is not None and key in _CACHE:
        return _CACHE[key]
    out = gather_split(embed_split(module, split_loader(datamodule, split)))
    if step is not None:
        for stale in [k for k in _CACHE if k[:2] != key[:2] or k[3] != key[3]]:
            del _CACHE[stale]
        _CACHE[key] = out
    return out


def is_cached(module: nn.Module, datamodule: Any, split: Split, step: int) -> bool:
    """Whether :func:`split_features` already holds ``split`` for this module and step."""
    return (id(module), id(datamodule), split, step) in _CACHE


def subset_features(module: nn.Module, datamodule: Any, indices: Tensor) -> EmbeddedSplit:
    """Backbone features of the train rows ``indices`` (M,) only, gathered; rows sorted by index."""
    return gather_split(embed_split(module, split_loader(datamodule, "train", indices)))


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


def clear_cache() -> None:
    """Drop every memoized split (frees the feature memory)."""
    _CACHE.clear()


class EvalCallback(pl.Callback):
    """Base of the evaluation callbacks: schedule, logging, cache lifetime and RNG isolation.

    Subclasses set ``splits`` (the splits whose full features they read from the cache) and
    ``needs_labels`` (k-NN, linear probe: they read ``datamodule.labelled_data()`` -- the training
    data when it is labelled and has a held-out split, else the recipe's ``eval_root`` data -- and
    are skipped, named in one log line, when there is none), and implement
    ``evaluate(module, datamodule, step) -> {name: value}``; the values must already be
    identical on every process (they are computed from gathered features), so they are logged
    without a sync and a ``ModelCheckpoint`` can monitor them.

    Args:
        every_n_epochs: evaluate when ``(current_epoch + 1) % every_n_epochs == 0``.
    """

    splits: tuple[Split, ...] = ()
    needs_labels: bool = False

    def __init__(self, every_n_epochs: int = 1) -> None:
        check_int("every_n_epochs", every_n_epochs)
        self.every_n_epochs = every_n_epochs

    def eval_data(self, trainer: pl.Trainer) -> Any | None:
        """The data this callback evaluates on; None when it needs labels and there are none."""
        data = datamodule_of(trainer, self)
        labelled = getattr(data, "labelled_data", None)
        return labelled() if self.needs_labels and labelled is not None else data

    def due(self, trainer: pl.Trainer) -> bool:
        """Whether this callback evaluates at the end of the current epoch (never when skipped)."""
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0 and self.eval_data(trainer) is not None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.eval_data(trainer) is None:
            say_skipped(trainer, self)

    def evaluate(self, module: nn.Module, datamodule: Any, step: int | None = None) -> dict[str, float]:
        """Metric name -> value for ``module`` on ``datamodule``; ``step`` keys the shared features."""
        raise NotImplementedError

    def epoch_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """The metrics of this epoch end (override to use what other callbacks compute)."""
        return self.evaluate(pl_module, self.eval_data(trainer), step=trainer.global_step)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        clear_cache()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.due(trainer):
            return
        # Loaders draw a base seed from the global CPU generator even without shuffling; forking
        # keeps the training run (augmentations, shuffling) identical with or without evaluation.
        with torch.random.fork_rng(devices=[]):
            metrics = self.epoch_metrics(trainer, pl_module)
        if metrics:
            pl_module.log_dict(metrics, sync_dist=False, rank_zero_only=False)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        clear_cache()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        clear_cache()


def others_need(trainer: pl.Trainer, caller: EvalCallback, split: Split) -> bool:
    """Whether another evaluation callback reads the full ``split`` of the caller's data at this epoch end."""
    return any(
        isinstance(cb, EvalCallback) and cb is not caller and split in cb.splits and cb.due(trainer)
        and cb.eval_data(trainer) is caller.eval_data(trainer)
        for cb in trainer.callbacks
    )  # fmt: skip


@rank_zero_only
def say_skipped(trainer: pl.Trainer, caller: EvalCallback) -> None:
    """One log line naming every label-needing evaluation skipped (said by the first of them)."""
    skipped = [cb for cb in trainer.callbacks if isinstance(cb, EvalCallback) and cb.eval_data(trainer) is None]
    if skipped and skipped[0] is caller:
        log.warning(
            "evaluation: %s skipped: the training data has no labels or no held-out split "
            "(set data.eval_root to a labelled train/<class>, val/<class> folder to run them); RankMe still runs",
            " and ".join(type(cb).__name__ for cb in skipped),
        )
