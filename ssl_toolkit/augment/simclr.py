"""SimCLR multi-view augmentation on the GPU (Chen et al. 2020, Appendix A, "Data augmentation details")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.augment.color import RandomOrderColorJitter
from ssl_toolkit.augment.crop import random_resized_crops
from ssl_toolkit.augment.photometric import PhotometricOps
from ssl_toolkit.checks import check_int
from ssl_toolkit.rng import stream


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

    Every view of every sample draws its own parameters. The crop is drawn relative to each whole
    image (its valid region when ``forward`` gets ``sizes``: the file data modules hand over whole
    images at their own resolution) and resampled from it once (``augment.crop``), as torchvision's
    ``RandomResizedCrop`` on the original does. Defaults are SimCLR's ImageNet recipe
    (colour strength s = 1: jitter 0.8/0.8/0.8/0.2 with p = 0.8, grayscale p = 0.2, blur p = 0.5 with
    sigma in [0.1, 2] and a kernel of 10% of the side); ``solarize_p`` > 0 gives BYOL-style views.

    Args:
        size: output side in px.
        num_views: views returned per call.
        crop_scale: area fraction range of the random resized crop, of the whole image.
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
        self.crop_scale = _ordered_pair("crop_scale", crop_scale, upper=1.0)
        self.crop_ratio = _ordered_pair("crop_ratio", crop_ratio)
        # After the crop (``random_resized_crops``), on the (V B, 3, size, size) views.
        self.pipeline = PhotometricOps(
            flip_p=_probability("flip_p", flip_p),
            jitter=RandomOrderColorJitter(brightness, contrast, saturation, hue, p=_probability("jitter_p", jitter_p)),
            grayscale_p=_probability("grayscale_p", grayscale_p),
            blur_p=_probability("blur_p", blur_p),
            blur_sigma=_ordered_pair("blur_sigma", blur_sigma),
            blur_kernel_size=self.blur_kernel_size,
            # SimCLR/BYOL solarization is a plain "invert at or above 0.5" (no threshold jitter).
            solarize_p=_probability("solarize_p", solarize_p),
        )
        if not all(v > 0.0 for v in _floats("std", std, 3)):
            raise ValueError(f"std must be > 0, got {std!r}")
        # Plain floats, like every setting here: the module holds no tensor, so moving it (to another
        # device, dtype, or the meta device and back) changes nothing.
        self.mean, self.std = _floats("mean", mean, 3), _floats("std", std, 3)

    def forward(
        self,
        images: Tensor,
        generator: torch.Generator | None = None,
        sizes: Tensor | None = None,
        normalized: bool = True,
    ) -> list[Tensor]:
        """Draw ``num_views`` independent views, each crop drawn relative to its whole image.

        Args:
            images: (B, C, H, W) uint8 with C in {1, 3}, on any device: whole images, each in the
                top-left corner of its canvas when ``sizes`` is given (``pad_collate``).
            generator: generator every random parameter is drawn from, on its own device (crop
                boxes, flips, jitter factors and order, grayscale/blur/solarize coins and blur
                sigmas); None: the toolkit's own generator for ``images``' device
                (``ssl_toolkit.rng.stream``, seeded per process). No draw touches torch's global
                generators.
            sizes: (B, 2) int64 (height, width) of each image's valid region ``[0, h) x [0, w)``
                (the file data modules' fourth batch entry); None: every image fills (H, W).
            normalized: False: the views in [0, 1] before the normalization (``ssl-toolkit views``).

        Returns:
            ``num_views`` float32 tensors (B, 3, size, size), normalized unless ``normalized`` is False.
        """
        with torch.no_grad(), torch.autocast(device_type=images.device.type, enabled=False):
            views = self.views_of(self._to_float(images), sizes, generator)
            if normalized:
                views = self.normalize(views)
        return list(views.split(images.shape[0]))

    def views_of(self, images: Tensor, sizes: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """The un-normalized views of float images in [0, 1] (``forward`` without the conversion).

        Args:
            images: (B, C, H, W) float32 in [0, 1], C in {1, 3}.
            sizes: as in ``forward``.
            generator: as in ``forward``.

        Returns:
            (V B, 3, size, size) float32 in [0, 1], view-major (rows v B .. v B + B - 1 are view v).
        """
        generator = stream(images.device) if generator is None else generator
        # Crop boxes first, then the per-view ops, all from the same stream.
        crops = random_resized_crops(
            images, sizes, self.num_views, self.size, self.crop_scale, self.crop_ratio, generator
        )
        return self.pipeline(crops.expand(-1, 3, -1, -1).contiguous(), generator)  # gray: 3 equal channels

    def normalize(self, views: Tensor) -> Tensor:
        """``(views - mean) / std`` per channel of (N, 3, H, W) float views; no host sync."""
        mean, std = (torch.tensor(v, dtype=views.dtype).view(1, 3, 1, 1) for v in (self.mean, self.std))
        return (views - mean.to(views.device, non_blocking=True)) / std.to(views.device, non_blocking=True)

    @property
    def view_sizes(self) -> dict[str, int]:
        """Side in px of the views it returns, keyed by the constructor keyword (recipe key) that sets it."""
        return {"size": self.size}

    def eval_view(self, images: Tensor) -> Tensor:
        """Deterministic view for evaluation: resize to (size, size) if needed, then normalize.

        Args:
            images: (B, C, H, W) uint8 with C in {1, 3}.

        Returns:
            (B, 3, size, size) float32.
        """
        side = (self.size, self.size)
        with torch.no_grad(), torch.autocast(device_type=images.device.type, enabled=False):
            x = self._to_float(images).expand(-1, 3, -1, -1)
            if x.shape[-2:] != side:
                x = F.interpolate(x, size=side, mode="bilinear", align_corners=False, antialias=True)
            return self.normalize(x)

    @staticmethod
    def _to_float(images: Tensor) -> Tensor:
        """(B, 1 or 3, H, W) uint8 -> the same float32 in [0, 1] (a gray input keeps one channel)."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be uint8 (B, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
        return images.float().div_(255.0)
