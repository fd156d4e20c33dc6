"""Which images the validation loop embeds: the evaluation callbacks' requests, merged into loaders.

Every evaluation callback declares what it needs to see, name -> :class:`FeatureRequest` (which
data, which split, which rows, which views; ``EvalCallback.requests``). :func:`plan_evaluation`
merges the requests of every evaluation callback of a fit into one :class:`EvalPlan`, its
``loaders``: Lightning's validation loop runs ``SSLModule.validation_step`` over each, and
``dataloader_idx`` i reads ``plan.loaders[i]``. The data module only offers its splits
(``split_dataset``, ``eval_loader``, ``labelled_data``); it is told the plan's loaders through its
``validation_loaders`` hook (:func:`attach`), and knows nothing of who asked for what.

Merging, so that no image is embedded twice in one evaluation:

* un-augmented requests that differ only in their rows share one loader over the union of their
  rows (None, the whole split, wins); each callback keeps only its own rows (``FeatureStore``
  ``rows``). Requests for views share a loader only when they are identical: a chunk's views are
  seeded by its first row, so other rows would give other views;
* a request on the training data is served by a loader of the same split and views on the
  labelled data when both are the same data (no separate ``eval_root``) and that loader holds
  every row it asks for (RankMe's rows from the k-NN bank).

Loaders come un-augmented first, then views; labelled data before training data; the held-out
split before the train split. With the toolkit's callbacks that is:

    ============  ==========  ======================================  ===================
    data          split       rows                                    requested by
    ============  ==========  ======================================  ===================
    labelled      val         all                                     KNNProbe, LinearProbe
    labelled      train       all, or KNNProbe's ``bank_size`` rows   KNNProbe, LinearProbe
                                                                      (``eval_root`` only)
    training      train       RankMe's ``num_samples`` rows           RankMe (when no bank
                                                                      above holds them)
    training      val (else   Diagnostics' ``num_images`` rows, 2     Diagnostics
                  train)      views, in fixed chunks
    ============  ==========  ======================================  ===================

A request with ``views`` > 0 is loaded in fixed chunks of the data's ``batch_size`` images
(:class:`~ssl_toolkit.callbacks.chunks.Chunks`), each one :class:`~ssl_toolkit.embedding.EvalBatch`
whose views are seeded by the chunk's first row, so they are the same whichever process embeds it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ssl_toolkit.callbacks.chunks import Chunks

Source = Literal["training", "labelled"]
Split = Literal["train", "val"]


@dataclass(frozen=True)
class FeatureRequest:
    """What one evaluation callback needs embedded.

    Attributes:
        split: ``"train"`` or ``"val"`` (the held-out split).
        rows: ascending distinct positions in the split, or None for all of it.
        views: 0 = the images as they are (features (B, F)); V > 0 = V views of the module's
            training augmentation per image (features (B, V, F)), seeded per fixed chunk.
        seed: seed of the views (views > 0 only).
        source: ``"training"`` (the data the module trains on) or ``"labelled"`` (the data module's
            ``labelled_data()``: the training data, or the recipe's separate ``eval_root``).

    Raises:
        ValueError: an unknown split or source, views < 0, a seed without views, or rows that are
            not ascending and distinct.
    """

    split: Split
    rows: tuple[int, ...] | None = None
    views: int = 0
    seed: int = 0
    source: Source = "training"

    def __post_init__(self) -> None:
        if self.split not in ("train", "val"):
            raise ValueError(f"split: expected 'train' or 'val', got {self.split!r}")
        if self.source not in ("training", "labelled"):
            raise ValueError(f"source: expected 'training' or 'labelled', got {self.source!r}")
        if self.views < 0:
            raise ValueError(f"views: must be >= 0, got {self.views}")
        if self.views == 0 and self.seed != 0:
            raise ValueError("seed: only augmented views (views > 0) are seeded")
        if self.rows is not None and any(a >= b for a, b in zip(self.rows, self.rows[1:])):
            raise ValueError("rows: must be ascending and distinct")

    @staticmethod
    def rows_of(rows: Tensor | None) -> tuple[int, ...] | None:
        """``rows`` (M,) int positions as the ascending tuple a request holds (None stays None)."""
        return None if rows is None else tuple(torch.unique(rows).tolist())

    def row_tensor(self) -> Tensor | None:
        """``rows`` as an (M,) int64 tensor, or None."""
        return None if self.rows is None else torch.tensor(self.rows, dtype=torch.long)

    def covers(self, rows: tuple[int, ...] | None) -> bool:
        """Whether this request's rows include ``rows`` (None = the whole split)."""
        if self.rows is None:
            return True
        return rows is not None and set(rows) <= set(self.rows)


@dataclass(frozen=True)
class EvalPlan:
    """The validation loaders of one fit.

    Attributes:
        loaders: one merged request per loader; ``dataloader_idx`` i reads ``loaders[i]``.
        shared: whether the labelled data is the training data itself (no ``eval_root``).
    """

    loaders: tuple[FeatureRequest, ...] = ()
    shared: bool = False

    def loader_of(self, request: FeatureRequest) -> int:
        """The ``dataloader_idx`` whose loader carries ``request``'s images.

        Raises:
            ValueError: the plan was made without this request.
        """
        for i, loader in enumerate(self.loaders):
            if _key(loader) == _key(request) and loader.covers(request.rows):
                return i
        if self.shared and request.source == "training":
            return self.loader_of(replace(request, source="labelled"))
        raise ValueError(f"request: {request.split} split, {request.views} views is not in this evaluation plan")

    def layout(self) -> tuple[str, ...]:
        """One short line per loader, e.g. ``("labelled val", "labelled train", "training val x2")``."""
        return tuple(f"{r.source} {r.split}" + (f" x{r.views}" if r.views else "") for r in self.loaders)

    def dataloaders(self, datamodule: Any) -> list[DataLoader]:
        """The loaders, in ``dataloader_idx`` order, over ``datamodule``'s splits (:func:`request_loader`)."""
        return [request_loader(loader, datamodule) for loader in self.loaders]


def plan_evaluation(requests: Iterable[FeatureRequest], shared: bool = True) -> EvalPlan:
    """Merge the requests of every evaluation callback into one plan (module docstring: the rules).

    Args:
        requests: every callback's requests.
        shared: whether the labelled data is the training data itself (no separate ``eval_root``),
            so a training-data request may be served by a labelled-data loader.
    """
    merged: dict[tuple, FeatureRequest] = {}
    for request in requests:
        key = _key(request)
        if key not in merged:
            merged[key] = request
        elif merged[key].rows is not None:
            rows = None if request.rows is None else tuple(sorted(set(merged[key].rows) | set(request.rows)))
            merged[key] = replace(merged[key], rows=rows)
    loaders = [r for r in merged.values() if not (shared and _labelled_twin_covers(r, merged))]
    loaders.sort(key=lambda r: (r.views, r.source == "training", r.split == "train", r.seed, r.rows or ()))
    return EvalPlan(loaders=tuple(loaders), shared=shared)


def _labelled_twin_covers(request: FeatureRequest, merged: dict[tuple, FeatureRequest]) -> bool:
    """Whether ``request`` reads the training data and a merged labelled-data request of the same
    split, views and seed holds every row of it (the same images when both are the same data)."""
    twin = merged.get(_key(replace(request, source="labelled")))
    return request.source == "training" and twin is not None and twin.covers(request.rows)


def _key(request: FeatureRequest) -> tuple:
    """What must match for two requests to share a loader: everything but the rows, and the rows
    too for views (their chunks, and so their views, follow the rows)."""
    return request.source, request.split, request.views, request.seed, request.rows if request.views else None


def labelled_of(datamodule: Any) -> Any | None:
    """The data label-needing evaluations read: ``datamodule.labelled_data()`` (the training data
    when it has labels and a held-out split, else the recipe's ``eval_root`` data, else None), or
    ``datamodule`` itself when it has no such method."""
    pick = getattr(datamodule, "labelled_data", None)  # a plain LightningDataModule has none
    return pick() if pick is not None else datamodule


def request_loader(request: FeatureRequest, datamodule: Any) -> DataLoader:
    """The un-shuffled loader of ``request``'s images: ``(images, labels, index)`` batches of the
    data's ``batch_size`` for views 0, else one whole :class:`~ssl_toolkit.callbacks.chunks.Chunks`
    chunk of ``batch_size`` images per batch.

    Raises:
        ValueError: a ``labelled`` request and no labelled data (see ``data.eval_root``).
    """
    data = datamodule if request.source == "training" else labelled_of(datamodule)
    if data is None:
        raise ValueError(f"{request.split}: no labelled data for this evaluation loader (see data.eval_root)")
    dataset = data.split_dataset(request.split, request.row_tensor())
    if request.views == 0:
        return data.eval_loader(dataset, data.batch_size)
    return data.eval_loader(Chunks(dataset, data.batch_size, request.views, request.seed), None)


def attach(plan: EvalPlan, datamodule: Any) -> None:
    """Make ``plan``'s loaders the validation loop's (the data module's ``validation_loaders`` hook)."""
    datamodule.validation_loaders = partial(plan.dataloaders, datamodule)
