"""Weighted k-NN accuracy of the backbone features, evaluated while pretraining runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from ssl_toolkit.callbacks.eval_features import EvalCallback, labelled_of
from ssl_toolkit.callbacks.eval_plan import FeatureRequest
from ssl_toolkit.checks import check_int
from ssl_toolkit.data.subset import fixed_subset
from ssl_toolkit.embedding import EmbeddedSplit
from ssl_toolkit.metrics import knn_scores, topk_accuracy


class KNNProbe(EvalCallback):
    """k-NN classification of the held-out split against the un-augmented labelled train split.

    Weighted vote of Wu et al. (CVPR 2018, "Unsupervised Feature Learning via Non-Parametric
    Instance Discrimination", Eq. 4 / Sec. 3.4): cosine similarity s_i to the k nearest bank
    features, each neighbour votes for its class with weight exp(s_i / temperature)
    (:func:`ssl_toolkit.metrics.knn_scores`, scored by :func:`ssl_toolkit.metrics.topk_accuracy`:
    the same code as ``ssl-toolkit knn``). Both splits are embedded by the validation loop
    (``SSLModule.validation_step``, eval mode) and gathered over processes, so every process logs
    the same values. Train samples labelled -1 (unknown) are left out of the bank. Without labelled
    data (no labels or no held-out split, and no ``data.eval_root``) it is skipped (one log line).

    Logs (when Lightning's validation loop runs: ``val_check_interval``, ``check_val_every_n_epoch``):
        ``val/knn_top1``, and ``val/knn_top5`` when the data has more than 5 classes.

    Args:
        k: neighbours per query (200 in Wu et al.).
        temperature: vote sharpness (0.07 in Wu et al.).
        chunk_size: queries scored at once; memory is chunk_size x bank size.
        bank_size: train images in the bank: a fixed random subset
            (:func:`ssl_toolkit.data.subset.fixed_subset`, drawn once from ``bank_seed``) bounds the
            cost of every evaluation on large data; None = the whole train split.
        bank_seed: seed of the bank draw.

    Example:
        >>> import lightning.pytorch as pl
        >>> trainer = pl.Trainer(callbacks=[KNNProbe(k=20)])  # then trainer.fit(module, datamodule=data)
        >>> [type(c).__name__ for c in trainer.callbacks if isinstance(c, KNNProbe)]
        ['KNNProbe']
    """

    needs_labels = True

    def __init__(
        self,
        k: int = 200,
        temperature: float = 0.07,
        chunk_size: int = 256,
        bank_size: int | None = None,
        bank_seed: int = 0,
    ) -> None:
        super().__init__()
        check_int("k", k)
        if not temperature > 0:
            raise ValueError(f"temperature: must be > 0, got {temperature!r}")
        check_int("chunk_size", chunk_size)
        check_int("bank_size", bank_size, optional=True)
        check_int("bank_seed", bank_seed, minimum=0)
        self.k, self.temperature, self.chunk_size = k, float(temperature), chunk_size
        self.bank_size, self.bank_seed = bank_size, bank_seed

    def bank_rows(self, num_train: int) -> Tensor | None:
        """(M,) sorted train positions of the bank, or None for the whole split."""
        if self.bank_size is None or self.bank_size >= num_train:
            return None
        return fixed_subset(num_train, self.bank_size, self.bank_seed)

    def requests(self, datamodule: Any) -> Mapping[str, FeatureRequest]:
        data = labelled_of(datamodule)  # the training data, or the recipe's eval_root
        if data is None:
            return {}  # skipped: no labels
        bank = FeatureRequest.rows_of(self.bank_rows(int(data.num_train_samples)))
        return {
            "val": FeatureRequest("val", source="labelled"),
            "bank": FeatureRequest("train", bank, source="labelled"),
        }

    def compute(self, pl_module: pl.LightningModule, datamodule: Any) -> dict[str, float]:
        bank, query = self.store.split("bank"), self.store.split("val")
        if bank is None or query is None:
            return {}
        return self.score(bank, query, int(labelled_of(datamodule).num_classes))

    @torch.no_grad()
    def score(self, bank: EmbeddedSplit, query: EmbeddedSplit, num_classes: int) -> dict[str, float]:
        """k-NN accuracy of ``query`` (Q, F) against ``bank`` (N, F).

        Returns:
            ``{"val/knn_top1": float}`` (+ ``"val/knn_top5"`` when there are more than 5 classes).
        """
        known = bank.labels >= 0
        scores = knn_scores(
            bank.feats[known], bank.labels[known], query.feats, self.k, self.temperature, num_classes, self.chunk_size
        )
        metrics = {"val/knn_top1": topk_accuracy(scores, query.labels, 1)}
        if num_classes > 5:
            metrics["val/knn_top5"] = topk_accuracy(scores, query.labels, 5)
        return metrics
