"""ImageNet-style class folders (``root/train/<class>/*.JPEG``, ``root/val/<class>/*``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import make_dataset

from ssl_toolkit.data.base import ImageDataModule, check_positive

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # matched case-insensitively


def class_folders(directory: Path) -> list[str]:
    """Sorted names of the sub-folders of ``directory`` (hidden ones skipped, symlinks followed)."""
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))


def load_image(path: str, image_size: int, resize_size: int) -> torch.Tensor:
    """Decode, resize the shorter side to ``resize_size`` and center-crop.

    Returns:
        uint8 (3, image_size, image_size).
    """
    with Image.open(path) as img:
        # JPEG only: decode at the smallest 1/2^k scale still >= resize_size, far cheaper than a
        # full decode; other formats ignore the call.
        img.draft("RGB", (resize_size, resize_size))
        img = img.convert("RGB")
    img = TF.resize(img, resize_size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return TF.pil_to_tensor(TF.center_crop(img, [image_size, image_size]))


class ImageFileDataset(Dataset):
    """Labelled image files decoded on access.

    Args:
        samples: ``(path, class_index)`` pairs.
        image_size: side S of the returned (3, S, S) uint8 images.
        resize_size: shorter side after resizing, before the center crop (>= image_size).
    """

    def __init__(self, samples: list[tuple[str, int]], image_size: int, resize_size: int) -> None:
        # numpy arrays rather than a list of Python strings: worker processes read them without
        # touching refcounts, so forked workers do not copy the whole list page by page.
        self.paths = np.array([path for path, _ in samples], dtype=np.bytes_)
        self.labels = np.array([label for _, label in samples], dtype=np.int64)
        self.image_size = image_size
        self.resize_size = resize_size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        """Return ``(uint8 (3, S, S), class index, index)``."""
        image = load_image(self.paths[index].decode(), self.image_size, self.resize_size)
        return image, int(self.labels[index]), index


class ImageFolderData(ImageDataModule):
    """Train/val class folders; class indices are the sorted train folder names.

    Args:
        root: dataset root holding ``train_dir`` and ``val_dir``.
        image_size: side S of the (3, S, S) uint8 images (center crop).
        batch_size: samples per batch, per process.
        num_workers: dataloader workers (decoding is the CPU bottleneck).
        train_dir: train split folder under ``root``.
        val_dir: held-out split folder under ``root``, same class names as ``train_dir``.
        resize_size: shorter side before the crop (``None`` = ``image_size``, i.e. the largest
            central square).
        classes_per_batch: P x K class-balanced train batches (see ``ImageDataModule``).
    """

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        batch_size: int = 256,
        num_workers: int = 8,
        train_dir: str = "train",
        val_dir: str = "val",
        resize_size: int | None = None,
        classes_per_batch: int | None = None,
    ) -> None:
        super().__init__(image_size, batch_size, num_workers, classes_per_batch)
        check_positive(resize_size=resize_size)
        if resize_size is not None and resize_size < image_size:
            raise ValueError(f"resize_size: {resize_size} is smaller than image_size {image_size}")
        self.root = Path(root)
        self.resize_size = resize_size or image_size
        self.train_path, self.val_path = self.root / train_dir, self.root / val_dir
        if not self.root.is_dir():
            raise FileNotFoundError(f"root: {self.root} does not exist")
        for arg, path in (("train_dir", self.train_path), ("val_dir", self.val_path)):
            if not path.is_dir():
                raise FileNotFoundError(f"{arg}: {path} does not exist (root: {self.root})")
        self.classes = class_folders(self.train_path)
        if not self.classes:
            raise FileNotFoundError(f"root: {self.root} has no class sub-folders in {train_dir}/")
        val_classes = class_folders(self.val_path)
        if not val_classes:
            raise FileNotFoundError(
                f"root: {self.root} has no class sub-folders in {val_dir}/ (sort val images into class folders)"
            )
        unknown = sorted(set(val_classes) - set(self.classes))
        if unknown:
            raise ValueError(
                f"root: {self.root}/{val_dir} has {len(unknown)} classes not in {train_dir}/: {unknown[:5]}"
            )

    @property
    def num_classes(self) -> int:
        """Number of train class folders."""
        return len(self.classes)

    @property
    def num_train_samples(self) -> int:
        """Train split size (lists the train folder on first use if ``setup`` has not run)."""
        self.setup()
        return len(self.train_set)

    def _build(self) -> tuple[ImageFileDataset, ImageFileDataset]:
        return self._split(self.train_path), self._split(self.val_path)

    def _split(self, directory: Path) -> ImageFileDataset:
        class_to_idx = {name: i for i, name in enumerate(self.classes)}
        # Class folders missing from val are skipped; empty class folders are allowed.
        samples = make_dataset(str(directory), class_to_idx, extensions=EXTENSIONS, allow_empty=True)
        if not samples:
            raise FileNotFoundError(f"root: {directory} holds no images with extensions {', '.join(EXTENSIONS)}")
        return ImageFileDataset(samples, self.image_size, self.resize_size)
