"""Optimizer and learning-rate schedule factories (recipe sections ``optimizer`` and ``scheduler``).

A factory holds the recipe's hyper-parameters; ``SSLModule.configure_optimizers`` calls it once the
global batch size and the number of steps are known. Learning rates are given per 256 images and
scaled linearly by the global batch (solo-learn's convention: lr * batch * devices * nodes / 256).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import timm.optim
import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def param_groups(model: nn.Module, weight_decay: float, exclude_bias_n_norm: bool = True) -> list[dict]:
    """Two groups: weights with decay, and biases / norm parameters (ndim <= 1) without.

    The no-decay group also skips LARS adaptation (``lars_adapt``; solo-learn's
    ``exclude_bias_n_norm``); the weights are adapted whatever ``weight_decay`` is, 0 included.
    With ``exclude_bias_n_norm=False`` there is one group: every parameter decays and is adapted
    (``torch.optim.SGD(model.parameters(), weight_decay=...)`` as in MoCo's and solo-learn's plain
    SGD, and apex ``LARC`` over all parameters as in the official SwAV ``main_swav.py``).
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not exclude_bias_n_norm:
        return [{"params": trainable, "weight_decay": weight_decay, "lars_adapt": True}]
    decay, no_decay = [], []
    for p in trainable:
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_adapt": True},
        {"params": no_decay, "weight_decay": 0.0, "lars_adapt": False},
    ]


class OptimizerFactory:
    """Base of the optimizer factories: the recipe's hyper-parameters, built into an optimizer once the
    global batch is known (``build``). ``SSLModule`` takes any of them as ``optimizer``."""

    lr: float
    weight_decay: float
    exclude_bias_n_norm: bool = True  # biases and norm parameters: no weight decay, no LARS adaptation

    def _check(self) -> None:
        # One check for every factory: momentum, trust_coefficient and betas exist only on some.
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if not 0 <= getattr(self, "momentum", 0) < 1:
            raise ValueError(f"momentum: must be in [0, 1), got {self.momentum}")
        if getattr(self, "trust_coefficient", 1) <= 0:
            raise ValueError(f"trust_coefficient: must be > 0, got {self.trust_coefficient}")
        if not all(0 <= b < 1 for b in getattr(self, "betas", ())):
            raise ValueError(f"betas: must be in [0, 1), got {self.betas}")

    def scaled_lr(self, global_batch_size: int) -> float:
        return self.lr * global_batch_size / 256

    def build(self, params: Iterable[dict], global_batch_size: int) -> Optimizer:
        raise NotImplementedError


class LARSFactory(OptimizerFactory):
    """LARS (You et al., 2017) through ``timm.optim.Lars``; solo-learn's eta = trust_coefficient.

    trust ratio = trust_coefficient * |w| / (|g| + weight_decay * |w|); with trust_clip it is
    min(ratio / lr, 1) (LARC clipping, solo-learn's ``clip_lr``). Every group with ``lars_adapt``
    (``param_groups``: the weights, not biases and norms) is adapted, also at weight_decay 0: timm's
    ``Lars`` by itself adapts only groups with weight_decay != 0, which made LARS plain SGD there.
    ``exclude_bias_n_norm=False`` adapts and decays every parameter: apex ``LARC(trust_coefficient=
    0.001, clip=False)`` over ``model.parameters()`` in the official SwAV ``main_swav.py``.
    """

    def __init__(
        self,
        lr: float = 0.3,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        trust_coefficient: float = 0.02,
        trust_clip: bool = True,
        exclude_bias_n_norm: bool = True,
    ) -> None:
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum
        self.trust_coefficient, self.trust_clip = trust_coefficient, trust_clip
        self.exclude_bias_n_norm = exclude_bias_n_norm
        self._check()

    def build(self, params: Iterable[dict], global_batch_size: int) -> Optimizer:
        # timm reads always_adapt per group; groups without lars_adapt keep timm's rule (wd != 0).
        groups = [{**g, "always_adapt": bool(g.get("lars_adapt", False))} for g in params]
        return timm.optim.Lars(
            groups,
            lr=self.scaled_lr(global_batch_size),
            momentum=self.momentum,
            trust_coeff=self.trust_coefficient,
            trust_clip=self.trust_clip,
        )


class SGDFactory(OptimizerFactory):
    """``torch.optim.SGD`` with momentum (foreach implementation).

    ``exclude_bias_n_norm=False`` decays biases and norm parameters too (MoCo's and solo-learn's
    ``torch.optim.SGD(params, weight_decay=...)``); the default exempts them (``param_groups``).
    """

    def __init__(
        self,
        lr: float = 0.05,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        nesterov: bool = False,
        exclude_bias_n_norm: bool = True,
    ) -> None:
        self.lr, self.weight_decay, self.momentum, self.nesterov = lr, weight_decay, momentum, nesterov
        self.exclude_bias_n_norm = exclude_bias_n_norm
        self._check()

    def build(self, params: Iterable[dict], global_batch_size: int) -> Optimizer:
        return torch.optim.SGD(
            params, lr=self.scaled_lr(global_batch_size), momentum=self.momentum, nesterov=self.nesterov
        )


class AdamWFactory(OptimizerFactory):
    """``torch.optim.AdamW`` (decoupled weight decay)."""

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
    ) -> None:
        self.lr, self.weight_decay, self.betas = lr, weight_decay, (float(betas[0]), float(betas[1]))
        self._check()

    def build(self, params: Iterable[dict], global_batch_size: int) -> Optimizer:
        return torch.optim.AdamW(params, lr=self.scaled_lr(global_batch_size), betas=self.betas)


OPTIMIZERS = {"lars": LARSFactory, "sgd": SGDFactory, "adamw": AdamWFactory}


class WarmupCosine:
    """Linear warm-up from ``start_factor * lr`` to lr, then cosine decay to ``min_factor * lr``.

    Stepped every optimizer step (solo-learn's ``warmup_cosine`` with ``interval=step``).
    ``warmup_epochs`` is converted to steps with the trainer's steps per epoch; fractions are fine.
    """

    def __init__(self, warmup_epochs: float = 10.0, start_factor: float = 1e-4, min_factor: float = 0.0) -> None:
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs: must be >= 0, got {warmup_epochs}")
        if not 0 <= start_factor <= 1 or not 0 <= min_factor <= 1:
            raise ValueError("start_factor and min_factor: must be in [0, 1]")
        self.warmup_epochs, self.start_factor, self.min_factor = warmup_epochs, start_factor, min_factor

    def build(self, optimizer: Optimizer, total_steps: int, steps_per_epoch: int) -> LambdaLR:
        warmup = min(int(round(self.warmup_epochs * steps_per_epoch)), total_steps)
        return LambdaLR(optimizer, _WarmupCosineFactor(warmup, total_steps, self.start_factor, self.min_factor))


class _WarmupCosineFactor:
    # A callable object (not a lambda) so LambdaLR can put it in the checkpoint.
    def __init__(self, warmup: int, total: int, start: float, floor: float) -> None:
        self.warmup, self.total, self.start, self.floor = warmup, total, start, floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start + (1 - self.start) * step / self.warmup
        progress = min((step - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


SCHEDULERS = {"warmup_cosine": WarmupCosine}
