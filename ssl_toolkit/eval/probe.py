"""Offline evaluation of a frozen backbone on features computed once: linear probe and k-NN.

Both splits are embedded once without augmentation (:func:`embed_labelled`); the classifiers then
train on the cached (N, F) tensors, so a 100-epoch probe costs seconds, not 100 passes over images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.data.base import ImageDataModule
from ssl_toolkit.embedding import EmbeddedSplit, embed_split
from ssl_toolkit.errors import ArgumentError, DataError
from ssl_toolkit.metrics import knn_scores, topk_accuracy


@dataclass
class ProbeResult:
    """Accuracies in [0, 1]; ``train_top1`` is None for k-NN (the bank would classify itself)."""

    top1: float
    top5: float
    train_top1: float | None = None


def labelled(datamodule: ImageDataModule) -> ImageDataModule:
    """The data a probe reads: ``datamodule.labelled_data()`` (the data itself when it has labels
    and a held-out split, else the recipe's ``eval_root``).

    Raises:
        DataError: the data has no labels or no held-out split, and the recipe names no ``eval_root``.
    """
    data = datamodule.labelled_data()
    if data is None:
        raise DataError(
            "data: the run's data has no labels or no held-out split; add "
            "data.eval_root=/path/to/labelled (train/<class>/, val/<class>/)"
        )
    return data


def embed_labelled(module: nn.Module, datamodule: ImageDataModule) -> tuple[EmbeddedSplit, EmbeddedSplit]:
    """Backbone features of the whole labelled train split (fixed order) and the val split of
    ``labelled(datamodule)``."""
    data = labelled(datamodule)
    train, val = embed_split(module, data.train_eval_dataloader()), embed_split(module, data.heldout_dataloader())
    check_finite_features(train.feats, "train split")
    check_finite_features(val.feats, "val split")
    return train, val


def check_finite_features(feats: Tensor, what: str) -> None:
    """Refuse features (N, F) with NaN/Inf: every score computed from them would be meaningless.

    Raises:
        DataError: naming ``what`` and how many rows are not finite.
    """
    bad = int((~torch.isfinite(feats)).any(dim=-1).sum()) if feats.numel() else 0
    if bad:
        raise DataError(f"features: {bad} of the {len(feats)} images of the {what} embed to NaN/Inf; "
                        "the checkpoint's weights are broken (use an earlier checkpoint)")  # fmt: skip


def _check_labels(split: EmbeddedSplit, num_classes: int, name: str) -> None:
    # Unlabelled folders carry -1: a probe on them would silently learn nothing.
    if split.labels.numel() == 0 or int(split.labels.min()) < 0 or int(split.labels.max()) >= num_classes:
        raise DataError(f"{name}: labels must lie in [0, {num_classes}); is this split labelled?")


def knn_probe(
    train: EmbeddedSplit, val: EmbeddedSplit, num_classes: int, k: int = 200, temperature: float = 0.07
) -> ProbeResult:
    """Weighted cosine k-NN (Wu et al., CVPR 2018, Eq. 4): train split as the bank, val as queries.

    Args:
        train: bank features (N, F) with labels (N,).
        val: query features (Q, F) with labels (Q,).
        num_classes: C.
        k: neighbours (all of the bank when it is smaller).
        temperature: weights exp(cos / temperature).
    """
    _check_labels(train, num_classes, "train")
    _check_labels(val, num_classes, "val")
    scores = knn_scores(train.feats, train.labels, val.feats, k, temperature, num_classes)
    return ProbeResult(topk_accuracy(scores, val.labels, 1), topk_accuracy(scores, val.labels, 5))


def linear_probe(
    train: EmbeddedSplit,
    val: EmbeddedSplit,
    num_classes: int,
    method: Literal["sgd", "lbfgs"] = "lbfgs",
    epochs: int = 100,
    lr: float | None = None,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    standardize: bool = True,
    seed: int = 0,
) -> ProbeResult:
    """Train ``nn.Linear(F, C)`` with cross-entropy on frozen, cached features; score val.

    ``lbfgs`` minimises the full-batch, L2-regularised logistic loss (a convex problem, as in the
    scikit-learn probes of CLIP/DINOv2) for ``epochs`` iterations with a strong-Wolfe line search.
    ``sgd`` runs ``epochs`` passes of momentum SGD in shuffled mini-batches with a cosine lr
    (the SimCLR/solo-learn protocol, on cached features instead of augmented images). Weights start
    at zero, so the result depends only on ``seed`` (batch order) and is deterministic on the CPU.

    Args:
        train: features (N, F) and labels (N,) to fit on.
        val: features (Q, F) and labels (Q,) to score.
        num_classes: C.
        method: ``"lbfgs"`` or ``"sgd"``.
        epochs: L-BFGS iterations, or SGD passes over ``train``.
        lr: step size (default 1.0 for L-BFGS, 0.1 for SGD).
        weight_decay: L2 penalty on the weights (not the bias): ``weight_decay / 2 * ||W||^2``.
        batch_size: SGD mini-batch size.
        standardize: scale features by the train mean/std (per dimension) first.
        seed: seeds the SGD batch order.

    Returns:
        val top-1/top-5 and train top-1.
    """
    if method not in ("sgd", "lbfgs"):
        raise ArgumentError(f"--method: {method!r} must be 'sgd' or 'lbfgs'")
    if epochs < 1 or batch_size < 1:
        raise ArgumentError(f"--epochs/batch_size: must be positive, got {epochs} and {batch_size}")
    _check_labels(train, num_classes, "train")
    _check_labels(val, num_classes, "val")
    x, y = train.feats.float(), train.labels.long().to(train.feats.device)
    x_val = val.feats.float().to(x.device)
    if standardize:
        mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)  # constant dimensions stay finite
        x, x_val = (x - mean) / std, (x_val - mean) / std
    linear = nn.Linear(x.shape[1], num_classes).to(x.device)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    with torch.enable_grad():
        if method == "lbfgs":
            _fit_lbfgs(linear, x, y, epochs, 1.0 if lr is None else lr, weight_decay)
        else:
            _fit_sgd(linear, x, y, epochs, 0.1 if lr is None else lr, weight_decay, batch_size, seed)
    with torch.no_grad():
        scores, train_scores = linear(x_val), linear(x)
    return ProbeResult(
        top1=topk_accuracy(scores, val.labels, 1),
        top5=topk_accuracy(scores, val.labels, 5),
        train_top1=topk_accuracy(train_scores, y, 1),
    )


def _fit_lbfgs(linear: nn.Linear, x: Tensor, y: Tensor, iterations: int, lr: float, weight_decay: float) -> None:
    optimizer = torch.optim.LBFGS(
        linear.parameters(), lr=lr, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x), y) + 0.5 * weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)


def _fit_sgd(
    linear: nn.Linear, x: Tensor, y: Tensor, epochs: int, lr: float, weight_decay: float, batch_size: int, seed: int
) -> None:
    groups = [{"params": [linear.weight], "weight_decay": weight_decay}, {"params": [linear.bias], "weight_decay": 0.0}]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9)
    steps = epochs * math.ceil(x.shape[0] / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator().manual_seed(seed)  # CPU generator: same order on any device
    for _ in range(epochs):
        for idx in torch.randperm(x.shape[0], generator=generator).to(x.device).split(batch_size):
            optimizer.zero_grad()
            F.cross_entropy(linear(x[idx]), y[idx]).backward()
            optimizer.step()
            scheduler.step()
