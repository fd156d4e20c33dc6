"""Generated, class-dependent images for smoke tests and quick end-to-end runs."""

from __future__ import annotations

import math

import torch

from ssl_toolkit.data.base import ImageDataModule, TensorImageDataset, check_positive

_CHUNK = 4096


def render_synthetic(
    num_samples: int, num_classes: int, image_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw balanced labelled images: a coloured, oriented grating patch on a noisy background.

    Class c fixes the patch's hue (c / K around the colour wheel) and its stripe orientation
    (c / K of a half turn), so colour, shape and texture all carry the label and a tiny network
    learns it even when augmentation removes colour. Position, stripe phase and noise are random.

    Args:
        num_samples: N.
        num_classes: K.
        image_size: S.
        generator: seeded CPU generator; the same state gives the same images.

    Returns:
        ``(images, labels)``: uint8 (N, 3, S, S) and int64 (N,).
    """
    size, patch = image_size, max(image_size // 2, 1)
    labels = torch.randperm(num_samples, generator=generator) % num_classes  # balanced, shuffled
    offsets = torch.randint(0, size - patch + 1, (num_samples, 2), generator=generator)
    phases = torch.rand(num_samples, generator=generator) * 2 * math.pi
    noise = torch.randn(num_samples, 3, size, size, generator=generator)

    frac = labels.float() / num_classes  # (N,)
    hue = frac[:, None] + torch.tensor([0.0, 1 / 3, 2 / 3])  # (N, 3)
    colour = 0.5 + 0.5 * torch.cos(2 * math.pi * hue)  # (N, 3) in [0, 1]
    angle = math.pi * frac  # (N,)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    wave = xx * torch.cos(angle)[:, None, None] + yy * torch.sin(angle)[:, None, None]  # (N, S, S)
    stripes = 0.5 + 0.5 * torch.sin(2 * math.pi * wave / max(patch / 3, 2.0) + phases[:, None, None])

    rows, cols = torch.arange(size)[None, :], torch.arange(size)[None, :]
    in_rows = (rows >= offsets[:, :1]) & (rows < offsets[:, :1] + patch)  # (N, S)
    in_cols = (cols >= offsets[:, 1:]) & (cols < offsets[:, 1:] + patch)  # (N, S)
    mask = (in_rows[:, :, None] & in_cols[:, None, :]).float()[:, None]  # (N, 1, S, S)

    foreground = colour[:, :, None, None] * (0.3 + 0.7 * stripes[:, None])  # (N, 3, S, S)
    images = mask * foreground + (1 - mask) * 0.5 + 0.08 * noise
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, labels


class SyntheticData(ImageDataModule):
    """In-memory synthetic dataset whose labels are learnable (see ``render_synthetic``).

    Args:
        num_samples: train split size.
        num_val_samples: held-out split size.
        num_classes: number of classes K.
        image_size: side S of the (3, S, S) uint8 images.
        batch_size: samples per batch, per process.
        num_workers: dataloader workers (0 is fastest for in-memory data).
        seed: the same seed gives the same images and labels in both splits.
        classes_per_batch: P x K class-balanced train batches (see ``ImageDataModule``).
    """

    def __init__(
        self,
        num_samples: int = 512,
        num_val_samples: int = 128,
        num_classes: int = 4,
        image_size: int = 32,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        classes_per_batch: int | None = None,
    ) -> None:
        super().__init__(image_size, batch_size, num_workers, classes_per_batch)
        check_positive(num_samples=num_samples, num_val_samples=num_val_samples, num_classes=num_classes)
        if image_size < 4:
            raise ValueError(f"image_size: {image_size} is too small for a visible pattern (need >= 4)")
        self.num_samples = num_samples
        self.num_val_samples = num_val_samples
        self._num_classes = num_classes
        self.seed = seed

    @property
    def num_classes(self) -> int:
        """Number of classes K."""
        return self._num_classes

    @property
    def num_train_samples(self) -> int:
        """Train split size."""
        return self.num_samples

    def _build(self) -> tuple[TensorImageDataset, TensorImageDataset]:
        # One generator for both splits in a fixed order: train and val differ, and both depend on
        # the seed alone.
        generator = torch.Generator().manual_seed(self.seed)
        return self._render(self.num_samples, generator), self._render(self.num_val_samples, generator)

    def _render(self, num_samples: int, generator: torch.Generator) -> TensorImageDataset:
        # Fixed-size chunks bound the float32 intermediates (about 16x the uint8 result) for large N.
        chunks = [
            render_synthetic(min(_CHUNK, num_samples - start), self._num_classes, self.image_size, generator)
            for start in range(0, num_samples, _CHUNK)
        ]
        return TensorImageDataset(torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks]))
