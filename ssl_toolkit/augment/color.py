"""Colour jitter with torchvision semantics: per-sample factors *and* a per-sample random order."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from kornia.enhance import adjust_hue
from torch import Tensor, nn

from ssl_toolkit.rng import stream, uniform

# torchvision's ``rgb_to_grayscale`` weights (ITU-R 601-2 luma), which its contrast and saturation use.
_LUMA = (0.2989, 0.587, 0.114)
HUE = 3  # op index of the hue shift; 0, 1, 2 are brightness, contrast, saturation


class JitterParams(NamedTuple):
    """Per-sample draws of :class:`RandomOrderColorJitter`, on the device of the images they jitter.

    Attributes:
        factors: (B, 4) float; brightness, contrast, saturation multipliers and hue shift in turns.
        order: (B, 4) long; row i is a permutation of 0..3, op ``order[i, k]`` runs k-th on sample i.
        applied: (B,) bool; whether sample i is jittered at all.
    """

    factors: Tensor
    order: Tensor
    applied: Tensor


def _blend(images: Tensor, op: Tensor, factor: Tensor) -> Tensor:
    """One of torchvision's linear ops per sample: ``(f x + (1 - f) ref).clamp(0, 1)`` with ``ref``
    0 (brightness, op 0), the mean of the sample's grayscale image (contrast, 1) or the grayscale
    image (saturation, 2) (torchvision's ``_blend``). ``factor`` 1 leaves a sample exactly as it is.

    Args:
        images: (B, 3, H, W) float in [0, 1].
        op: (B,) long in 0..3 (3 is treated as contrast; give it factor 1).
        factor: (B,) float.
    """
    r, g, b = images.unbind(dim=1)
    gray = r.mul(_LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2]).unsqueeze(1)  # (B, 1, H, W)
    mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
    op = op.view(-1, 1, 1, 1)
    ref = torch.where(op == 2, gray, mean).mul_((op != 0).to(images.dtype))
    factor = factor.to(images.dtype).view(-1, 1, 1, 1)
    return images.mul(factor).add_(ref.mul_(1.0 - factor)).clamp_(0.0, 1.0)


def apply_color_jitter(images: Tensor, factors: Tensor, order: Tensor, applied: Tensor | None = None) -> Tensor:
    """Jitter every sample with its own factors, in its own op order, with no host sync.

    The three linear ops (brightness, contrast, saturation: blends, ``_blend``) cost a few
    elementwise passes; the hue shift (an HSV round trip) costs more. So each sample's order is run
    as: its linear ops placed before its hue shift (positions 0..2, one blend each over the whole
    batch, factor 1 where a sample has nothing there), the hue shift once over the batch (kept only
    where it is drawn and non-zero, so untouched samples stay bit-exact), then its linear ops placed
    after it (positions 1..3). Every op clamps to [0, 1], as torchvision's float kernels do.

    Args:
        images: (B, 3, H, W) float in [0, 1], any device.
        factors: (B, 4) as in :class:`JitterParams`, on ``images``' device.
        order: (B, 4) as in :class:`JitterParams`, on ``images``' device.
        applied: (B,) bool; samples left unchanged where False (None: all are jittered).

    Returns:
        (B, 3, H, W) jittered images, same device and dtype as ``images``.
    """
    if applied is None:
        applied = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
    hue_at = (order == HUE).to(torch.uint8).argmax(dim=1)  # (B,) position of the hue shift
    out = _linear_ops(images, factors, order, applied, range(3), lambda k: k < hue_at)
    shift = factors[:, HUE]
    shifted = adjust_hue(out, shift.to(out.dtype) * (2.0 * math.pi)).clamp_(0.0, 1.0)  # kornia takes radians
    out = torch.where((applied & (shift != 0.0)).view(-1, 1, 1, 1), shifted, out)
    return _linear_ops(out, factors, order, applied, range(1, 4), lambda k: k > hue_at)


def _linear_ops(
    images: Tensor, factors: Tensor, order: Tensor, active: Tensor, positions: range, placed: Callable[[int], Tensor]
) -> Tensor:
    """Run the op at each of ``positions`` on the samples where ``active & placed(position)``."""
    out = images
    for position in positions:
        op = order[:, position]
        factor = torch.where(active & placed(position), factors.gather(1, op[:, None]).squeeze(1), 1.0)
        out = _blend(out, op, factor)
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
        # Plain floats, not buffers: moving the module moves nothing; draws follow the images' device.
        self.low: tuple[float, ...] = tuple(max(0.0, 1.0 - s) for s in strengths) + (-float(hue),)
        self.high: tuple[float, ...] = tuple(1.0 + s for s in strengths) + (float(hue),)
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}, p={self.p}"

    def sample_params(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> JitterParams:
        """Independent factors (uniform in [low, high]), orders (uniform permutations) and coin
        flips (``p``) for ``batch_size`` samples, drawn in that order from ``generator`` on its own
        device and returned on ``device``.

        Args:
            batch_size: B.
            generator: None: the toolkit's generator for ``device`` (``ssl_toolkit.rng.stream``).
            device: where the params go (None: the generator's device; the CPU without either).
        """
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        generator = stream(device) if generator is None else generator
        low, high = (torch.tensor(v).to(device, non_blocking=True) for v in (self.low, self.high))  # no sync
        factors = low + (high - low) * uniform(generator, (batch_size, 4), device, torch.float32)
        order = uniform(generator, (batch_size, 4), device, torch.float32).argsort(dim=1)  # a uniform permutation
        applied = uniform(generator, (batch_size,), device, torch.float32) < self.p
        return JitterParams(factors, order, applied)

    def forward(
        self, images: Tensor, params: JitterParams | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Jitter a batch, with no host sync.

        Args:
            images: (B, 3, H, W) float in [0, 1].
            params: draws to use instead of fresh ones (replay, tests); any device.
            generator: generator of fresh draws (None: the toolkit's generator for ``images``' device).

        Returns:
            (B, 3, H, W); samples not drawn for jitter are returned unchanged.
        """
        if params is None:
            params = self.sample_params(images.shape[0], generator, images.device)
        factors, order, applied = (t.to(images.device, non_blocking=True) for t in params)
        return apply_color_jitter(images, factors, order, applied)
