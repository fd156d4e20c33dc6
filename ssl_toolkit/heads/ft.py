"""MoCo v2 with Feature Transformation (Zhu et al., ICCV 2021): the MoCo v2 head, transformed logits."""

from __future__ import annotations

import random

import torch
from torch import Tensor

from ssl_toolkit.heads.base import BatchInfo
from ssl_toolkit.heads.moco import MoCoV2Head
from ssl_toolkit.losses.feature_transform import FeatureTransformLoss


class MoCoV2FTHead(MoCoV2Head):
    """MoCo v2 plus Feature Transformation (Zhu et al., "Improving Contrastive Learning by
    Visualizing Feature Transformation", ICCV 2021; official code ``memory/mem_moco.py``).

    Everything of ``MoCoV2Head`` (projector, momentum projector, queue, symmetric loss), with the
    loss of each query / key pair (its ``pair_loss`` hook) computed on transformed features
    (``FeatureTransformLoss``)::

        positive extrapolation:  lam ~ 1 + Beta(pos_alpha, pos_alpha) in [1, 2]
                                 q^ = lam q + (1 - lam) k,  k^ = lam k + (1 - lam) q
        negative interpolation:  mu ~ Beta(neg_alpha, neg_alpha),  perm a random permutation of K
                                 queue' = mu queue + (1 - mu) queue[perm]

    The authors' defaults (README command): ``--mixnorm_target posneg --sep_alpha --pos_alpha 2.0
    --neg_alpha 1.6 --mask_distribution beta --expolation_mask``, ``dim_mask='none'`` (lam and mu are
    one scalar per call, not per dimension), ``postmix_norm`` off (no re-normalization), and the
    queue receives the original keys. Here each of the two symmetric losses draws its own lam, mu,
    perm. ``positive_extrapolation=False, negative_interpolation=False`` is ``MoCoV2Head`` exactly.

    Draws come from ``self.generator``, a CPU ``torch.Generator`` seeded with ``seed`` and owned by
    the head (never the global RNG): the Beta scalars are Python floats (no device copy, no host
    sync), and the permutation is drawn on the queue's device from a generator seeded from it. The
    same seed on every process gives every process the same draws, so a 2-process step equals the
    1-process step on the global batch. The generator state is saved in checkpoints
    (``get_extra_state``), so a resumed run continues the same stream. Decisions and reported
    numbers: ``docs/methods/feature_transformation.md``.

    Args:
        in_dim ... exclude_own_keys: as ``MoCoV2Head``.
        positive_extrapolation, negative_interpolation: the two switches.
        pos_alpha, neg_alpha: the Beta parameters (authors: 2.0 and 1.6).
        seed: seed of the head's generator.

    Shapes:
        views.feats / views.teacher: >= 2 tensors (B, F); the first two are x_1, x_2.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = False,
        queue_size: int = 65536,
        temperature: float = 0.2,
        base_momentum: float = 0.99,
        final_momentum: float = 1.0,
        symmetric: bool = True,
        exclude_own_keys: bool = True,
        positive_extrapolation: bool = True,
        negative_interpolation: bool = True,
        pos_alpha: float = 2.0,
        neg_alpha: float = 1.6,
        seed: int = 0,
    ) -> None:
        super().__init__(
            in_dim,
            hidden_dim,
            out_dim,
            num_layers,
            batch_norm,
            queue_size,
            temperature,
            base_momentum,
            final_momentum,
            symmetric,
            exclude_own_keys,
        )
        for name, a in (("pos_alpha", pos_alpha), ("neg_alpha", neg_alpha)):
            if a <= 0:
                raise ValueError(f"{name}: must be > 0, got {a}")
        self.loss = FeatureTransformLoss(temperature)
        self.positive_extrapolation, self.negative_interpolation = positive_extrapolation, negative_interpolation
        self.pos_alpha, self.neg_alpha = pos_alpha, neg_alpha
        self.generator = torch.Generator().manual_seed(seed)
        self._device_generators: dict[torch.device, torch.Generator] = {}

    def get_extra_state(self) -> Tensor:
        return self.generator.get_state()

    def set_extra_state(self, state: Tensor) -> None:
        self.generator.set_state(state)

    def _seed(self) -> int:
        return int(torch.randint(0, 2**62, (1,), generator=self.generator))

    def draw_beta(self, alpha: float) -> float:
        """One Beta(alpha, alpha) draw, a Python float, from the head's generator."""
        return random.Random(self._seed()).betavariate(alpha, alpha)

    def draw_permutation(self, size: int, device: torch.device) -> Tensor:
        """A random permutation (size,) on ``device``, from a device generator seeded by the head's."""
        gen = self._device_generators.get(device)
        if gen is None:
            gen = self._device_generators[device] = torch.Generator(device=device)
        gen.manual_seed(self._seed())
        return torch.randperm(size, generator=gen, device=device)

    def pair_loss(
        self, q: Tensor, k: Tensor, queue: Tensor, exclude: Tensor | None, batch: BatchInfo
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One query / key direction with fresh draws; logs lam and mu (1 and 1 when switched off)."""
        lam = 1.0 + self.draw_beta(self.pos_alpha) if self.positive_extrapolation else None
        mu, perm = None, None
        if self.negative_interpolation:
            mu, perm = self.draw_beta(self.neg_alpha), self.draw_permutation(queue.shape[0], queue.device)
        loss, logs = self.loss(q, k, queue, lam=lam, mu=mu, perm=perm, exclude=exclude)
        logs["ft_lambda"] = logs["pos_sim"].new_zeros(()) + (1.0 if lam is None else lam)  # no H2D copy
        logs["ft_mu"] = logs["pos_sim"].new_zeros(()) + (1.0 if mu is None else mu)
        return loss, logs
