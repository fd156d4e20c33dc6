"""Colour jitter with torchvision semantics: per-sample factors *and* a per-sample random order."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from kornia.enhance import (
    adjust_brightness_accumulative,
    adjust_contrast_with_mean_subtraction,
    adjust_hue,
    adjust_saturation_with_gray_subtraction,
)
from torch import Tensor, nn


def _adjust_hue_turns(images: Tensor, shift: Tensor) -> Tensor:
    # torchvision measures the hue shift in turns ([-0.5, 0.5]); kornia takes radians.
    return adjust_hue(images, shift * (2.0 * math.pi))


# Position j is op j of a permutation and column j of the factor matrix. These are the kornia
# variants with torchvision's formulas: kornia's plain `adjust_brightness` is additive,
# `adjust_contrast` a bare multiply and `adjust_saturation` works in HSV, none of which match.
_OPS: tuple[Callable[[Tensor, Tensor], Tensor], ...] = (
    adjust_brightness_accumulative,
    adjust_contrast_with_mean_subtraction,
    adjust_saturation_with_gray_subtraction,
    _adjust_hue_turns,
)
# Factor that leaves an image unchanged; rows holding it skip the op, which saves work and keeps
# the HSV round trip of the hue op from perturbing images that should be untouched.
_NEUTRAL: tuple[float, ...] = (1.0, 1.0, 1.0, 0.0)


class JitterParams(NamedTuple):
    """Per-sample draws of :class:`RandomOrderColorJitter`, kept on the CPU (bookkeeping only).

    Attributes:
        factors: (B, 4) float; brightness, contrast, saturation multipliers and hue shift in turns.
        order: (B, 4) long; row i is a permutation of 0..3, op ``order[i, k]`` runs k-th on sample i.
        applied: (B,) bool; whether sample i is jittered at all.
    """

    factors: Tensor
    order: Tensor
    applied: Tensor


def apply_color_jitter(images: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """Jitter every sample with its own factors, in its own op order.

    At each of the 4 positions each op runs once, on the subset of samples that have it there, so
    the total work is about 4 ops over the batch (not 16). Every op clamps to [0, 1] afterwards,
    as torchvision's float kernels do.

    Args:
        images: (B, 3, H, W) float in [0, 1], any device.
        factors: (B, 4) as in :class:`JitterParams`.
        order: (B, 4) as in :class:`JitterParams`; read on the CPU to pick subsets without syncs.

    Returns:
        (B, 3, H, W) jittered images, same device and dtype as ``images``.
    """
    factors_cpu, order_cpu = factors.cpu(), order.cpu()
    device_factors = factors.to(images.device, images.dtype, non_blocking=True)
    out = images.clone()
    for position in range(4):
        for op_index, op in enumerate(_OPS):
            selected = (order_cpu[:, position] == op_index) & (factors_cpu[:, op_index] != _NEUTRAL[op_index])
            rows = selected.nonzero().squeeze(1).to(images.device, non_blocking=True)
            if rows.numel() > 0:
                out[rows] = op(out[rows], device_factors[rows, op_index]).clamp_(0.0, 1.0)
    return out


class RandomOrderColorJitter(nn.Module):
    """torchvision-style ``ColorJitter`` for batches, as used by SimCLR (Chen et al. 2020, Appendix A).

    ``kornia.augmentation.ColorJitter`` draws one order of the 4 ops per call, shared by the whole
    batch; torchvision (and hence the SimCLR recipe) draws it per image. Here each sample gets its
    own factors, its own order and its own coin flip for ``p``.

    Args:
        brightness: multiplier drawn from [max(0, 1 - brightness), 1 + brightness].
        contrast: blend factor with the grayscale mean, drawn like ``brightness``.
        saturation: blend factor with the grayscale image, drawn like ``brightness``.
        hue: hue shift in turns drawn from [-hue, hue]; at most 0.5.
        p: probability that a sample is jittered.
    """

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float, p: float = 1.0) -> None:
        super().__init__()
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not value >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p!r}")
        strengths = (float(brightness), float(contrast), float(saturation))
        # Plain floats, not buffers: draws happen on the CPU whatever device the module is moved to.
        self.low: tuple[float, ...] = tuple(max(0.0, 1.0 - s) for s in strengths) + (-float(hue),)
        self.high: tuple[float, ...] = tuple(1.0 + s for s in strengths) + (float(hue),)
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}, p={self.p}"

    def sample_params(self, batch_size: int, generator: torch.Generator | None = None) -> JitterParams:
        """Draw independent factors, orders and coin flips for ``batch_size`` samples from
        ``generator`` (a CPU generator; None: torch's global CPU generator)."""
        low, high = torch.tensor(self.low), torch.tensor(self.high)
        factors = low + (high - low) * torch.rand(batch_size, 4, generator=generator)
        order = torch.rand(batch_size, 4, generator=generator).argsort(dim=1)  # uniform random permutation per row
        applied = torch.rand(batch_size, generator=generator) < self.p
        return JitterParams(factors, order, applied)

    def forward(self, images: Tensor, params: JitterParams | None = None) -> Tensor:
        """Jitter a batch.

        Args:
            images: (B, 3, H, W) float in [0, 1].
            params: draws to use instead of fresh ones (replay, tests).

        Returns:
            (B, 3, H, W); samples not drawn for jitter are returned unchanged.
        """
        if params is None:
            params = self.sample_params(images.shape[0])
        rows = params.applied.cpu().nonzero().squeeze(1)
        if rows.numel() == images.shape[0]:
            return apply_color_jitter(images, params.factors, params.order)
        out = images.clone()
        if rows.numel() > 0:
            device_rows = rows.to(images.device, non_blocking=True)
            out[device_rows] = apply_color_jitter(images[device_rows], params.factors[rows], params.order[rows])
        return out
