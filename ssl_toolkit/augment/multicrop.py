"""Multi-crop views on the GPU (Caron et al. 2020, SwAV Sec. 3.2): G global + L local crops."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ssl_toolkit.augment.simclr import SimCLRAugment, _ordered_pair
from ssl_toolkit.checks import check_int
from ssl_toolkit.rng import stream


class MultiCropAugment(nn.Module):
    """G global crops of side ``size`` and L local crops of side ``local_size``, each group with
    its own crop-scale range, every crop of every sample with its own random parameters.

    Each group is one ``SimCLRAugment`` (batched roi_align crops of the whole image, per-sample colour jitter in a
    per-sample order, grayscale, blur, solarize, normalize), so a call costs one pipeline pass per
    group; the blur kernel is about 10% of each group's side. Defaults are SwAV's ImageNet
    setting (``scripts/swav_400ep_pretrain.sh``): 2 x 224 px with scale (0.14, 1) + 6 x 96 px with
    scale (0.05, 0.14), colour strength 1, blur p = 0.5 on all crops. ``SSLModule`` runs the
    backbone once per resolution, i.e. twice per step here. Any head that takes V views can use
    these views (SimCLR/DCL average their loss over all view pairs).

    Args:
        size: global crop side in px (also the side of ``eval_view``).
        num_global: G >= 1.
        global_scale: area fraction range of the global crops.
        local_size: local crop side in px.
        num_local: L >= 0 (0: global crops only).
        local_scale: area fraction range of the local crops.
        crop_ratio: aspect ratio range of every crop.
        flip_p, brightness, contrast, saturation, hue, jitter_p, grayscale_p, blur_p, blur_sigma,
            solarize_p, mean, std: as in ``SimCLRAugment``, shared by both groups.

    Shapes:
        (B, C, H, W) uint8 -> G tensors (B, 3, size, size) then L tensors
        (B, 3, local_size, local_size), float32, normalized.

    Example:
        >>> aug = MultiCropAugment(size=224, num_global=2, local_size=96, num_local=6)
        >>> views = aug(torch.randint(0, 256, (4, 3, 256, 256), dtype=torch.uint8))
        >>> [v.shape[-1] for v in views]
        [224, 224, 96, 96, 96, 96, 96, 96]
    """

    def __init__(
        self,
        size: int = 224,
        num_global: int = 2,
        global_scale: Sequence[float] = (0.14, 1.0),
        local_size: int = 96,
        num_local: int = 6,
        local_scale: Sequence[float] = (0.05, 0.14),
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
        solarize_p: float = 0.0,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
    ) -> None:
        super().__init__()
        check_int("num_global", num_global)
        if num_local < 0:
            raise ValueError(f"num_local: must be >= 0, got {num_local}")
        if not (size > 0 and local_size > 0):
            raise ValueError(f"size/local_size: must be > 0, got {size} and {local_size}")
        shared = dict(crop_ratio=crop_ratio, flip_p=flip_p, brightness=brightness, contrast=contrast,
                      saturation=saturation, hue=hue, jitter_p=jitter_p, grayscale_p=grayscale_p,
                      blur_p=blur_p, blur_sigma=blur_sigma, solarize_p=solarize_p, mean=mean, std=std)  # fmt: skip
        scale = _ordered_pair("global_scale", global_scale, upper=1.0)
        self.global_crops = SimCLRAugment(size, num_global, crop_scale=scale, **shared)  # type: ignore[arg-type]
        self.local_crops: SimCLRAugment | None = None
        if num_local > 0:
            scale = _ordered_pair("local_scale", local_scale, upper=1.0)
            self.local_crops = SimCLRAugment(local_size, num_local, crop_scale=scale, **shared)  # type: ignore[arg-type]
        self.size, self.num_global, self.num_local = int(size), int(num_global), int(num_local)
        self.local_size = int(local_size)

    @property
    def view_sizes(self) -> dict[str, int]:
        """Sides in px of the views it returns, keyed by the constructor keyword (recipe key) that
        sets each: ``size``, and ``local_size`` when there are local crops."""
        return {"size": self.size, "local_size": self.local_size} if self.num_local else {"size": self.size}

    def forward(
        self,
        images: Tensor,
        generator: torch.Generator | None = None,
        sizes: Tensor | None = None,
        normalized: bool = True,
    ) -> list[Tensor]:
        """(B, C, H, W) uint8 -> G global then L local float views (see class docstring); every
        parameter is drawn from ``generator`` (on its own device; None: the toolkit's generator for
        ``images``' device, ``ssl_toolkit.rng.stream``; never torch's global ones). Global and
        local crops alike are drawn relative to the whole image (its valid region ``sizes``, (B, 2)
        (height, width), when given) and resampled from it; ``normalized`` as in ``SimCLRAugment``."""
        with torch.no_grad(), torch.autocast(device_type=images.device.type, enabled=False):
            x = SimCLRAugment._to_float(images)  # converted once for both groups
            generator = stream(images.device) if generator is None else generator  # one stream for both
            views = list(self._normalize(self.global_crops.views_of(x, sizes, generator), normalized).split(x.shape[0]))
            if self.local_crops is not None:
                local = self.local_crops.views_of(x, sizes, generator)
                views += list(self._normalize(local, normalized).split(x.shape[0]))
        return views

    def _normalize(self, views: Tensor, normalized: bool) -> Tensor:
        return self.global_crops.normalize(views) if normalized else views

    def eval_view(self, images: Tensor) -> Tensor:
        """Deterministic (B, 3, size, size) view for evaluation, as ``SimCLRAugment.eval_view``."""
        return self.global_crops.eval_view(images)
