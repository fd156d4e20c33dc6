"""Weighted k-NN accuracy of the backbone features, evaluated while pretraining runs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ssl_toolkit.callbacks.eval_features import EvalCallback, Split, split_features
from ssl_toolkit.checks import check_int
from ssl_toolkit.metrics import knn_scores, topk_accuracy


class KNNProbe(EvalCallback):
    """k-NN classification of the val split against the un-augmented labelled train split.

    Weighted vote of Wu et al. (CVPR 2018, "Unsupervised Feature Learning via Non-Parametric
    Instance Discrimination", Eq. 4 / Sec. 3.4): cosine similarity s_i to the k nearest bank
    features, each neighbour votes for its class with weight exp(s_i / temperature). Both splits
    are embedded with ``module.embed`` in eval mode and gathered over processes, so every process
    logs the same values. Train samples labelled -1 (unknown) are left out of the bank.

    Logs (every ``every_n_epochs`` epochs, at the training epoch end):
        ``val/knn_top1``, and ``val/knn_top5`` when the data has more than 5 classes.

    Args:
        k: neighbours per query (200 in Wu et al.).
        temperature: vote sharpness (0.07 in Wu et al.).
        every_n_epochs: evaluation period in epochs.
        chunk_size: queries scored at once; memory is chunk_size x train-split size.

    Example:
        >>> import lightning.pytorch as pl
        >>> trainer = pl.Trainer(callbacks=[KNNProbe(k=20)])  # then trainer.fit(module, datamodule=data)
        >>> [type(c).__name__ for c in trainer.callbacks if isinstance(c, KNNProbe)]
        ['KNNProbe']
    """

    splits: tuple[Split, ...] = ("train", "val")
    needs_labels = True

    def __init__(self, k: int = 200, temperature: float = 0.07, every_n_epochs: int = 1, chunk_size: int = 256) -> None:
        super().__init__(every_n_epochs)
        check_int("k", k)
        if not temperature > 0:
            raise ValueError(f"temperature: must be > 0, got {temperature!r}")
        check_int("chunk_size", chunk_size)
        self.k, self.temperature, self.chunk_size = k, float(temperature), chunk_size

    @torch.no_grad()
    def evaluate(self, module: nn.Module, datamodule: Any, step: int | None = None) -> dict[str, float]:
        """k-NN accuracy of ``module``'s features on ``datamodule``'s val split.

        Args:
            module: offers ``embed(uint8 images) -> (B, F)``.
            datamodule: offers ``train_eval_dataloader()``, ``val_dataloader()``, ``num_classes``.
            step: training step of the weights; features are shared with other callbacks per step.

        Returns:
            ``{"val/knn_top1": float}`` (+ ``"val/knn_top5"`` when there are more than 5 classes).
        """
        bank = split_features(module, datamodule, "train", step)
        query = split_features(module, datamodule, "val", step)
        known = bank.labels >= 0
        num_classes = int(datamodule.num_classes)
        scores = knn_scores(
            bank.feats[known], bank.labels[known], query.feats, self.k, self.temperature, num_classes, self.chunk_size
        )
        metrics = {"val/knn_top1": topk_accuracy(scores, query.labels, 1)}
        if num_classes > 5:
            metrics["val/knn_top5"] = topk_accuracy(scores, query.labels, 5)
        return metrics
