"""ImageNet-style class folders (``root/train/<class>/*.JPEG``, ``root/val/<class>/*``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch.utils.data import Dataset

from ssl_toolkit.data.base import ImageDataModule, check_positive
from ssl_toolkit.data.image_files import EXTENSIONS, FileCheck, check_files, decode_resized

log = logging.getLogger(__name__)
_SHOWN = 10  # bad file names spelled out in a log line or an error


def class_folders(directory: Path) -> list[str]:
    """Sorted names of the sub-folders of ``directory`` (hidden ones skipped, symlinks followed)."""
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))


def load_image(path: str, image_size: int, resize_size: int) -> torch.Tensor:
    """Decode (any mode, to RGB), resize the shorter side to ``resize_size`` and center-crop, with
    one resampling step (see ``decode_resized``).

    Returns:
        uint8 (3, image_size, image_size).
    """
    return TF.pil_to_tensor(decode_resized(path, image_size, resize_size))


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
        """Return ``(uint8 (3, S, S), class index, index)``.

        A file that passed ``check_files`` but fails to decode now (changed since, or corrupt in
        a way the cheap check does not see) is logged and replaced by the next decodable sample,
        so a batch is never short.
        """
        for offset in range(len(self)):
            i = (index + offset) % len(self)
            path = self.paths[i].decode()
            try:
                return load_image(path, self.image_size, self.resize_size), int(self.labels[i]), i
            except Exception as e:  # noqa: BLE001 - any decoder error: skip the file, keep training
                log.warning("image_folder: %s cannot be decoded (%s); using the next image", path, e)
        raise RuntimeError("image_folder: no file of the split can be decoded")


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
        max_bad_fraction: the largest fraction of undecodable image files (empty, truncated,
            corrupt, not an image) per split that is skipped with a report; above it ``setup``
            fails. Files in other modes (grayscale, CMYK, RGBA, 16-bit...) are converted to RGB.

    Every file is checked once when the data is set up (header + end marker, see
    ``check_files``): skipped and converted files are counted and named in the log, and listed in
    ``skipped``.
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
        max_bad_fraction: float = 0.01,
    ) -> None:
        super().__init__(image_size, batch_size, num_workers, classes_per_batch)
        check_positive(resize_size=resize_size)
        if not 0 <= max_bad_fraction < 1:
            raise ValueError(f"max_bad_fraction: must be in [0, 1), got {max_bad_fraction!r}")
        self.max_bad_fraction = max_bad_fraction
        self.skipped: list[tuple[str, str]] = []  # (path, reason) of every skipped image file
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
        found = check_files(directory, class_to_idx)
        self.skipped += found.bad
        total = len(found.samples) + len(found.bad)
        if found.bad and len(found.bad) > self.max_bad_fraction * total:
            raise ValueError(
                f"max_bad_fraction: {len(found.bad)} of {total} image files in {directory} cannot be decoded "
                f"({len(found.bad) / total:.1%} > {self.max_bad_fraction:.1%}): {_names(found.bad, directory)}; "
                "remove or replace them, or raise data.max_bad_fraction"
            )
        if not found.samples:
            raise FileNotFoundError(f"root: {directory} holds no images with extensions {', '.join(EXTENSIONS)}")
        _report(directory, found)
        return ImageFileDataset(found.samples, self.image_size, self.resize_size)


def _names(bad: list[tuple[str, str]], directory: Path) -> str:
    shown = ", ".join(f"{os.path.relpath(p, directory)} ({why})" for p, why in bad[:_SHOWN])
    return shown + (f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else "")


@rank_zero_only
def _report(directory: Path, found: FileCheck) -> None:
    """One log line per kind of problem, on rank 0 (every rank checks the same files)."""
    total = len(found.samples) + len(found.bad)
    if found.bad:
        log.warning("image_folder: %s: skipped %d of %d image files: %s", directory, len(found.bad), total,
                    _names(found.bad, directory))  # fmt: skip
    if found.modes:
        modes = ", ".join(f"{n} {mode}" for mode, n in sorted(found.modes.items()))
        log.warning("image_folder: %s: converted to RGB on load: %s", directory, modes)
    if found.ignored:
        log.warning("image_folder: %s: ignored %d files without an image extension (%s): %s", directory,
                    len(found.ignored), ", ".join(EXTENSIONS), _names([(p, "ignored") for p in found.ignored],
                    directory).replace(" (ignored)", ""))  # fmt: skip
