"""RankMe: label-free effective rank of the representations, for checkpoint and run selection."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from ssl_toolkit.callbacks.eval_features import (
    EvalCallback,
    datamodule_of,
    is_cached,
    others_need,
    project,
    split_features,
    subset_features,
)
from ssl_toolkit.checks import check_int
from ssl_toolkit.data.subset import fixed_subset
from ssl_toolkit.metrics import rankme


class RankMe(EvalCallback):
    """Effective rank (Garrido, Balestriero, Najman, LeCun, ICML 2023, Eq. 1) of the backbone
    features and of the projector embeddings on a fixed random subset of the train split.

    RankMe(Z) = exp(-sum_k p_k log p_k), p_k = sigma_k(Z) / ||sigma(Z)||_1 + eps, with sigma_k the
    singular values of the raw N x D matrix (:func:`ssl_toolkit.metrics.rankme`). No labels are
    used. The ``min(num_samples, N)`` rows are drawn once, at random (not the first rows, which
    a class-sorted split would bias), kept in the callback state and restored on resume, so every
    evaluation of a run scores the same images. When another evaluation callback embeds the whole
    train split at the same epoch end, RankMe takes its rows from those features instead of
    running the backbone again. Compare values only between runs of the same method.

    Logs (every ``every_n_epochs`` epochs, at the training epoch end):
        ``val/rankme`` (backbone features ``module.embed``) and ``val/rankme_proj`` (projector
        ``module.project``; only when the module has ``project``). Monitor ``val/rankme`` with
        ``ModelCheckpoint(monitor="val/rankme", mode="max")`` to keep checkpoints without labels.

    Args:
        num_samples: rows N of Z (25,600 in the paper).
        eps: the paper's 1e-7 for float32.
        every_n_epochs: evaluation period in epochs.
        seed: seed of the subset draw.
    """

    def __init__(self, num_samples: int = 25600, eps: float = 1e-7, every_n_epochs: int = 1, seed: int = 0) -> None:
        super().__init__(every_n_epochs)
        check_int("num_samples", num_samples)
        if not eps > 0:  # p_k = 0 would give 0 * log 0 = nan
            raise ValueError(f"eps: must be > 0, got {eps!r}")
        check_int("seed", seed, minimum=0)
        self.num_samples, self.eps, self.seed = num_samples, float(eps), seed
        self.indices: Tensor | None = None  # (M,) sorted train-split positions, drawn once

    def draw(self, num_train: int) -> Tensor:
        """Draw (once) and return the subset: ``min(num_samples, num_train)`` sorted positions."""
        if self.indices is None:
            self.indices = fixed_subset(num_train, self.num_samples, self.seed)
        elif int(self.indices.max()) >= num_train:
            raise ValueError(f"num_samples: stored subset reaches row {int(self.indices.max())} of {num_train}")
        return self.indices

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":  # drawn before a checkpoint is restored, which then overrides it
            self.draw(len(datamodule_of(trainer, self).train_eval_dataloader().dataset))

    @torch.no_grad()
    def evaluate(
        self, module: nn.Module, datamodule: Any, step: int | None = None, from_train_split: bool = False
    ) -> dict[str, float]:
        """RankMe of ``module``'s features (and projections) on the subset of the train split.

        Args:
            module: offers ``embed(uint8 images) -> (B, F)`` and optionally ``project(feats) -> (B, D)``.
            datamodule: offers ``train_eval_dataloader()``.
            step: training step of the weights; whole-split features are shared per step.
            from_train_split: take the rows from the whole train split's features (memoized per
                step) instead of embedding only the subset; set when another callback needs them.

        Returns:
            ``{"val/rankme": float, "val/rankme_proj": float}`` (no ``_proj`` without a head).
        """
        indices = self.draw(len(datamodule.train_eval_dataloader().dataset))
        if from_train_split or (step is not None and is_cached(module, datamodule, "train", step)):
            split = split_features(module, datamodule, "train", step)
            feats = split.feats[torch.searchsorted(split.index, indices.to(split.index.device))]
        else:
            feats = subset_features(module, datamodule, indices).feats
        # Fixed subset, rows in index order either way: the value does not depend on the path.
        metrics = {"val/rankme": rankme(feats, self.eps)}
        if hasattr(module, "project"):
            metrics["val/rankme_proj"] = rankme(project(module, feats), self.eps)
        return metrics

    def epoch_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        share = others_need(trainer, self, "train")
        datamodule = datamodule_of(trainer, self)
        return self.evaluate(pl_module, datamodule, step=trainer.global_step, from_train_split=share)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.indices is None else {"indices": self.indices.clone()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "indices" in state_dict:
            self.indices = state_dict["indices"].cpu().long()
