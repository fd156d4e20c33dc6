"""GPU batch augmentations applied after the batch reaches the device: kornia and torchvision kernels,
every parameter drawn from the toolkit's own generators (``ssl_toolkit.rng``), never torch's global ones."""

from __future__ import annotations

from ssl_toolkit.augment.color import JitterParams, RandomOrderColorJitter, apply_color_jitter
from ssl_toolkit.augment.multicrop import MultiCropAugment
from ssl_toolkit.augment.simclr import SimCLRAugment

# Recipe name -> augmentation class; the only registry in this package.
AUGMENTS = {"simclr": SimCLRAugment, "multicrop": MultiCropAugment}

__all__ = [
    "AUGMENTS",
    "JitterParams",
    "MultiCropAugment",
    "RandomOrderColorJitter",
    "SimCLRAugment",
    "apply_color_jitter",
]
