"""SimCLR multi-view augmentation on the GPU (Chen et al. 2020, Appendix A, "Data augmentation details")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from ssl_toolkit.augment.color import RandomOrderColorJitter
from ssl_toolkit.checks import check_int
from ssl_toolkit.rng import drawing_from


class _AntialiasedResizedCrop(K.RandomResizedCrop):
    """kornia's per-sample crop boxes, resampled in ONE batched ``torchvision.ops.roi_align`` call.

    kornia 0.9's ``RandomResizedCrop`` has no antialias option; shrinking a large crop by more than
    ~2x then aliases. ``roi_align`` with adaptive sampling averages ceil(box/out) bilinear samples
    per output pixel (a box filter), so it is antialiased when shrinking and plain half-pixel
    bilinear (torchvision's ``align_corners=False``) when enlarging; no per-sample Python loop and
    no host sync, which matters on the GPU.
    """

    def apply_transform(
        self, input: Tensor, params: dict[str, Tensor], flags: dict[str, Any], transform: Tensor | None = None
    ) -> Tensor:
        # params["src"]: (B, 4, 2) integer corners (x, y), clockwise from top-left, inclusive.
        src = params["src"].to(device=input.device, dtype=input.dtype)
        index = torch.arange(input.shape[0], device=input.device, dtype=input.dtype)[:, None]
        # Continuous box [left, right + 1) x [top, bottom + 1) in pixel-edge coordinates.
        boxes = torch.cat([index, src[:, 0], src[:, 2] + 1], dim=1)  # (B, 5): idx, x1, y1, x2, y2
        return roi_align(input, boxes, output_size=flags["size"], spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def _unless_never(op: nn.Module) -> nn.Module:
    """``op``, or Identity when its probability is 0: kornia still draws parameters and copies the
    batch for an op that never applies (the demo recipes set grayscale_p = blur_p = solarize_p = 0)."""
    return nn.Identity() if op.p == 0.0 else op


def _probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def _floats(name: str, value: Sequence[float], count: int) -> tuple[float, ...]:
    # YAML recipes deliver lists (omegaconf ListConfig), so accept any sequence of numbers.
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != count:
        raise ValueError(f"{name} must be a sequence of {count} numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _ordered_pair(name: str, value: Sequence[float], upper: float = float("inf")) -> tuple[float, float]:
    low, high = _floats(name, value, 2)
    if not 0.0 < low <= high <= upper:
        raise ValueError(f"{name} must satisfy 0 < low <= high <= {upper}, got {value!r}")
    return low, high


class SimCLRAugment(nn.Module):
    """SimCLR views: crop -> flip -> colour jitter -> grayscale -> blur -> solarize -> normalize.

    Every view of every sample draws its own parameters. Defaults are SimCLR's ImageNet recipe
    (colour strength s = 1: jitter 0.8/0.8/0.8/0.2 with p = 0.8, grayscale p = 0.2, blur p = 0.5 with
    sigma in [0.1, 2] and a kernel of 10% of the side); ``solarize_p`` > 0 gives BYOL-style views.

    Args:
        size: output side in px.
        num_views: views returned per call.
        crop_scale: area fraction range of the random resized crop.
        crop_ratio: aspect ratio range of the crop.
        flip_p: horizontal flip probability.
        brightness, contrast, saturation, hue: jitter strengths, torchvision semantics.
        jitter_p: colour jitter probability.
        grayscale_p: grayscale probability.
        blur_p: Gaussian blur probability.
        blur_sigma: blur sigma range.
        blur_kernel_size: odd kernel side; None -> about 10% of ``size``, odd, >= 3.
        solarize_p: probability of inverting the pixels >= 0.5.
        mean, std: per-channel normalization applied last.
    """

    def __init__(
        self,
        size: int,
        num_views: int = 2,
        crop_scale: Sequence[float] = (0.08, 1.0),
        crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        brightness: float = 0.8,
        contrast: float = 0.8,
        saturation: float = 0.8,
        hue: float = 0.2,
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: float = 0.5,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        blur_kernel_size: int | None = None,
        solarize_p: float = 0.0,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
    ) -> None:
        super().__init__()
        if not size > 0:
            raise ValueError(f"size must be > 0, got {size!r}")
        check_int("num_views", num_views)
        kernel = max(3, int(0.1 * size) // 2 * 2 + 1) if blur_kernel_size is None else blur_kernel_size
        if not (kernel >= 3 and kernel % 2 == 1):
            raise ValueError(f"blur_kernel_size must be an odd int >= 3, got {blur_kernel_size!r}")
        self.size, self.num_views, self.blur_kernel_size = int(size), int(num_views), int(kernel)
        self.pipeline = nn.Sequential(
            _AntialiasedResizedCrop(
                (self.size, self.size),
                scale=_ordered_pair("crop_scale", crop_scale, upper=1.0),
                ratio=_ordered_pair("crop_ratio", crop_ratio),
                align_corners=False,
            ),
            K.RandomHorizontalFlip(p=_probability("flip_p", flip_p)),
            RandomOrderColorJitter(brightness, contrast, saturation, hue, p=_probability("jitter_p", jitter_p)),
            _unless_never(K.RandomGrayscale(p=_probability("grayscale_p", grayscale_p))),
            _unless_never(
                K.RandomGaussianBlur(
                    self.blur_kernel_size, _ordered_pair("blur_sigma", blur_sigma), p=_probability("blur_p", blur_p)
                )
            ),
            # kornia's defaults (0.1, 0.1) jitter the threshold and add a brightness offset; SimCLR/BYOL
            # solarization is a plain "invert at or above 0.5".
            _unless_never(K.RandomSolarize(thresholds=0.0, additions=0.0, p=_probability("solarize_p", solarize_p))),
        )
        if not all(v > 0.0 for v in _floats("std", std, 3)):
            raise ValueError(f"std must be > 0, got {std!r}")
        self.normalize = K.Normalize(mean=_floats("mean", mean, 3), std=_floats("std", std, 3))

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        """Draw ``num_views`` independent views.

        Args:
            images: (B, C, H, W) uint8 with C in {1, 3}, on any device.
            generator: CPU generator every random parameter is drawn from (crop boxes, flips, jitter
                factors and order, grayscale/blur/solarize coins); None: torch's global CPU
                generator, which ``fit`` seeds per process (``ssl_toolkit.rng``).

        Returns:
            ``num_views`` float32 tensors (B, 3, size, size), normalized.
        """
        # One pipeline call over (V * B) samples: per-view Python overhead is paid once.
        with torch.no_grad(), torch.autocast(device_type=images.device.type, enabled=False), drawing_from(generator):
            views = self.normalize(self.pipeline(self._to_rgb_float(images, self.num_views)))
        return list(views.split(images.shape[0]))

    def eval_view(self, images: Tensor) -> Tensor:
        """Deterministic view for evaluation: resize to (size, size) if needed, then normalize.

        Args:
            images: (B, C, H, W) uint8 with C in {1, 3}.

        Returns:
            (B, 3, size, size) float32.
        """
        side = (self.size, self.size)
        with torch.no_grad(), torch.autocast(device_type=images.device.type, enabled=False):
            x = self._to_rgb_float(images)
            if x.shape[-2:] != side:
                x = F.interpolate(x, size=side, mode="bilinear", align_corners=False, antialias=True)
            return self.normalize(x)

    @staticmethod
    def _to_rgb_float(images: Tensor, repeats: int = 1) -> Tensor:
        """(B, 1 or 3, H, W) uint8 -> (repeats * B, 3, H, W) float32 in [0, 1], converted once."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be uint8 (B, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
        # Repeat while still uint8 (4x less memory traffic); gray inputs become 3 identical channels.
        return images.repeat(repeats, 1, 1, 1).expand(-1, 3, -1, -1).float().div_(255.0)
