"""RankMe (and optionally alpha-ReQ): label-free spectral scores of the representations, for
checkpoint and run selection."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch import Tensor

from ssl_toolkit.callbacks.eval_features import EvalCallback, datamodule_of, project
from ssl_toolkit.callbacks.eval_plan import FeatureRequest
from ssl_toolkit.checks import check_int
from ssl_toolkit.data.subset import fixed_subset
from ssl_toolkit.embedding import EmbeddedSplit
from ssl_toolkit.metrics import rankme
from ssl_toolkit.metrics_spectral import alpha_req as alpha_req_of
from ssl_toolkit.metrics_spectral import default_fit_start

log = logging.getLogger(__name__)


class RankMe(EvalCallback):
    """Effective rank (Garrido, Balestriero, Najman, LeCun, ICML 2023, Eq. 1) of the backbone
    features and of the projector embeddings on a fixed random subset of the train split.

    RankMe(Z) = exp(-sum_k p_k log p_k), p_k = sigma_k(Z) / ||sigma(Z)||_1 + eps, with sigma_k the
    singular values of the raw N x D matrix (:func:`ssl_toolkit.metrics.rankme`). No labels are
    used. The ``min(num_samples, N)`` rows are drawn once, at random (not the first rows, which
    a class-sorted split would bias), kept in the callback state and restored on resume, so every
    evaluation of a run scores the same images. The rows are a validation loader of their own,
    unless the k-NN bank already holds them (the whole train split, or the same
    seeded draw): then RankMe takes them from the bank's features and no image is embedded twice.
    Compare values only between runs of the same method.

    With ``alpha_req=True`` the same rows also give alpha-ReQ (Agrawal et al., NeurIPS 2022): the
    power-law decay alpha of the covariance eigenspectrum, lambda_k ~ k^-alpha, fitted over ranks
    6..100 (all ranks below 20 dimensions; :func:`ssl_toolkit.metrics_spectral.alpha_req`), from
    the same features at the cost of one D x D eigendecomposition; no image is embedded again.
    ``ssl-toolkit select --metric alpha_req`` computes the same number offline.

    Logs (whenever Lightning's validation loop runs):
        ``val/rankme`` (backbone features ``module.embed``) and ``val/rankme_proj`` (projector
        ``module.project``; only when the module has ``project``). Monitor ``val/rankme`` with
        ``ModelCheckpoint(monitor="val/rankme", mode="max")`` to keep checkpoints without labels.
        With ``alpha_req``: ``val/alpha_req`` and ``val/alpha_req_proj`` (NaN when fewer than 2
        non-zero eigenvalues lie in the fitted ranks, e.g. a collapsed representation).

    Args:
        num_samples: rows N of Z (25,600 in the paper).
        eps: the paper's 1e-7 for float32.
        seed: seed of the subset draw.
        alpha_req: also log alpha-ReQ of both.
    """

    def __init__(self, num_samples: int = 25600, eps: float = 1e-7, seed: int = 0, alpha_req: bool = False) -> None:
        super().__init__()
        check_int("num_samples", num_samples)
        if not eps > 0:  # p_k = 0 would give 0 * log 0 = nan
            raise ValueError(f"eps: must be > 0, got {eps!r}")
        check_int("seed", seed, minimum=0)
        if not isinstance(alpha_req, bool):
            raise ValueError(f"alpha_req: must be true or false, got {alpha_req!r}")
        self.num_samples, self.eps, self.seed, self.alpha_req = num_samples, float(eps), seed, alpha_req
        self.indices: Tensor | None = None  # (M,) sorted train-split positions, drawn once
        self._said_partial = False  # the "embedded k of M samples" line is said once per process
        self.sanity_checking = False  # Lightning's sanity check embeds 2 batches: not a cut to report

    def draw(self, num_train: int) -> Tensor:
        """Draw (once) and return the subset: ``min(num_samples, num_train)`` sorted positions."""
        if self.indices is None:
            self.indices = fixed_subset(num_train, self.num_samples, self.seed)
        elif int(self.indices.max()) >= num_train:
            raise ValueError(f"num_samples: stored subset reaches row {int(self.indices.max())} of {num_train}")
        return self.indices

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Drawn before a checkpoint is restored, which then overrides it (the plan follows the
        # restored rows: on_load_checkpoint comes after setup, see load_state_dict).
        self.draw(int(datamodule_of(trainer, self).num_train_samples))
        super().setup(trainer, pl_module, stage)

    def requests(self, datamodule: Any) -> Mapping[str, FeatureRequest]:
        return {"subset": FeatureRequest("train", FeatureRequest.rows_of(self.draw(int(datamodule.num_train_samples))))}

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.sanity_checking = trainer.sanity_checking
        super().on_validation_epoch_end(trainer, pl_module)

    def compute(self, pl_module: pl.LightningModule, datamodule: Any) -> dict[str, float]:
        split = self.store.split("subset")
        if split is None:
            return {}
        return self.score(pl_module, split)

    @torch.no_grad()
    def score(self, module: Any, split: EmbeddedSplit) -> dict[str, float]:
        """RankMe of the subset's rows of ``split`` (train-split features sorted by index).

        Args:
            module: offers ``project(feats) -> (B, D)`` for ``val/rankme_proj`` (optional).
            split: features of the subset or of a superset (the k-NN bank); rows not in the subset
                are ignored, so the value does not depend on where the rows came from.

        Returns:
            ``{"val/rankme": float, "val/rankme_proj": float}`` (no ``_proj`` without ``project``),
            and ``val/alpha_req(_proj)`` when ``alpha_req``; ``{}`` when the evaluation embedded
            none of the subset's rows (``trainer.limit_val_batches`` embeds only the first batches
            of each loader), said in one log line. A partly embedded subset is scored on the rows
            there are, also said once: RankMe grows with the row count, so compare such values
            only among themselves.
        """
        assert self.indices is not None
        feats = split.feats[torch.isin(split.index, self.indices.to(split.index.device))]
        if feats.shape[0] < self.indices.numel() and not self.sanity_checking:
            self._say_partial(feats.shape[0], self.indices.numel())
        if feats.shape[0] == 0:
            return {}
        spaces = {"": feats}
        if hasattr(module, "project"):
            spaces["_proj"] = project(module, feats)
        metrics = {f"val/rankme{suffix}": rankme(x, self.eps) for suffix, x in spaces.items()}
        if self.alpha_req:
            metrics.update({f"val/alpha_req{suffix}": alpha_or_nan(x) for suffix, x in spaces.items()})
        return metrics

    def _say_partial(self, rows: int, wanted: int) -> None:
        if self._said_partial:
            return
        self._said_partial = True
        if rank_zero_only.rank != 0:  # every process scores the same gathered rows: one line is enough
            return
        if rows == 0:
            log.warning("RankMe: the evaluation embedded none of its %d samples (trainer.limit_val_batches embeds "
                        "only the first batches); val/rankme not computed", wanted)  # fmt: skip
        else:
            log.warning("RankMe: the evaluation embedded %d of its %d samples (trainer.limit_val_batches); "
                        "val/rankme is computed on those", rows, wanted)  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {} if self.indices is None else {"indices": self.indices.clone()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "indices" in state_dict:
            self.indices = state_dict["indices"].cpu().long()


def alpha_or_nan(x: Tensor) -> float:
    """alpha-ReQ of (N, D) ``x`` over the default ranks for D, or NaN when too few eigenvalues are
    non-zero there (a collapsed representation must not stop training)."""
    try:
        return alpha_req_of(x, fit_start=default_fit_start(x.shape[1]))
    except ValueError:
        return float("nan")
