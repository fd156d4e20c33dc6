"""Fashion-MNIST from the four idx gz files, held in memory at the target resolution."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from ssl_toolkit.data.base import ImageDataModule, TensorImageDataset, check_positive

INSTALL_HINT = "apt-get install -y dataset-fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049  # idx headers: uint8 data, 3 dims / 1 dim
_SLICE_SEED = 0


def read_idx_count(path: Path) -> int:
    """Count the items of an idx gz file from its header alone (reads 8 bytes)."""
    with gzip.open(path, "rb") as f:
        _, count = struct.unpack(">II", f.read(8))
    return count


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read a whole idx gz file.

    Returns:
        uint8 array of shape (N, 28, 28) for images or (N,) for labels.
    """
    with gzip.open(path, "rb") as f:
        data = f.read()
    found, count = struct.unpack(">II", data[:8])
    if found != magic:
        raise ValueError(f"{path}: idx magic number {found}, expected {magic}; the file is corrupt")
    if magic == _LABELS_MAGIC:
        return np.frombuffer(data, dtype=np.uint8, offset=8, count=count)
    rows, cols = struct.unpack(">II", data[8:16])
    return np.frombuffer(data, dtype=np.uint8, offset=16, count=count * rows * cols).reshape(count, rows, cols)


class FashionMNISTData(ImageDataModule):
    """Fashion-MNIST (10 classes); the held-out split is the 10k test set (``t10k-*``).

    Images are resized once at ``setup`` (antialiased bilinear) and kept as uint8 (N, 1, S, S); the
    dataset replicates the gray channel to (3, S, S) on access.

    Args:
        root: folder holding the four ``*-ubyte.gz`` files.
        image_size: side S of the (3, S, S) uint8 images.
        batch_size: samples per batch, per process.
        num_workers: dataloader workers.
        train_samples: keep only this many train images (``None`` = all 60000); a fixed-seed
            permutation picks them, so every class is represented.
        val_samples: same for the held-out split (``None`` = all 10000).
        classes_per_batch: P x K class-balanced train batches (see ``ImageDataModule``).
    """

    def __init__(
        self,
        root: str = "/usr/share/datasets/fashion-mnist",
        image_size: int = 32,
        batch_size: int = 256,
        num_workers: int = 2,
        train_samples: int | None = None,
        val_samples: int | None = None,
        classes_per_batch: int | None = None,
    ) -> None:
        super().__init__(image_size, batch_size, num_workers, classes_per_batch)
        check_positive(train_samples=train_samples, val_samples=val_samples)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"root: {self.root} does not exist; install Fashion-MNIST with `{INSTALL_HINT}`")
        for name in (*FILES["train"], *FILES["val"]):
            if not (self.root / name).is_file():
                raise FileNotFoundError(f"root: {self.root} has no {name}; install Fashion-MNIST with `{INSTALL_HINT}`")
        self._available = {split: read_idx_count(self.root / files[0]) for split, files in FILES.items()}
        for arg, split, wanted in (("train_samples", "train", train_samples), ("val_samples", "val", val_samples)):
            if wanted is not None and wanted > self._available[split]:
                raise ValueError(f"{arg}: {wanted} exceeds the {self._available[split]} images in {self.root}")
        self._wanted = {"train": train_samples, "val": val_samples}

    @property
    def num_classes(self) -> int:
        """Fashion-MNIST has 10 classes."""
        return 10

    @property
    def num_train_samples(self) -> int:
        """Train split size after ``train_samples``."""
        return self._wanted["train"] or self._available["train"]

    def _build(self) -> tuple[TensorImageDataset, TensorImageDataset]:
        return self._load("train"), self._load("val")

    def _load(self, split: str) -> TensorImageDataset:
        image_file, label_file = FILES[split]
        images = torch.from_numpy(read_idx(self.root / image_file, _IMAGES_MAGIC).copy())  # (N, 28, 28)
        labels = torch.from_numpy(read_idx(self.root / label_file, _LABELS_MAGIC).astype(np.int64))  # (N,)
        wanted = self._wanted[split]
        if wanted is not None:
            # Slice before resizing so small runs never pay for the full split.
            keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_SLICE_SEED))[:wanted]
            images, labels = images[keep], labels[keep]
        images = images[:, None]  # (N, 1, 28, 28)
        if self.image_size != images.shape[-1]:
            # uint8 in, uint8 out: torchvision's native uint8 antialiased path, no float copy.
            images = TF.resize(images, [self.image_size, self.image_size], antialias=True)
        return TensorImageDataset(images.contiguous(), labels)
