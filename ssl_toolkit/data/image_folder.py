"""Image folders as users have them: ``train/<class>/...`` class folders, or any flat or nested
folder of images without classes; with or without a held-out ``val/`` split."""

from __future__ import annotations

import copy
import logging
import os
from typing import Literal

import numpy as np
import torch
import torchvision.transforms.functional as TF
from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch.utils.data import Dataset

from ssl_toolkit.data.base import Collate, ImageDataModule, check_positive
from ssl_toolkit.data.image_files import (
    EXTENSIONS,
    FileCheck,
    check_folder_args,
    decode_resized,
    find_images,
    path_array,
    shown,
)
from ssl_toolkit.data.whole_image import load_whole, pad_collate

log = logging.getLogger(__name__)
_SHOWN = 10  # bad file names spelled out in a log line or an error
Labels = Literal["auto", "folders", "none"]


def class_folders(directory: str) -> list[str]:
    """Sorted names of the sub-folders of ``directory`` (hidden ones skipped, symlinks followed)."""
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))


def load_image(path: str, image_size: int, resize_size: int) -> torch.Tensor:
    """Decode (any mode, to upright RGB), resize the shorter side to ``resize_size`` and
    center-crop, with one resampling step (see ``decode_resized``).

    Returns:
        uint8 (3, image_size, image_size).
    """
    return TF.pil_to_tensor(decode_resized(path, image_size, resize_size))


class ImageFileDataset(Dataset):
    """Image files decoded on access: center crops for evaluation, whole images for training views.

    Args:
        samples: ``(path, label)`` pairs; label -1 = unlabelled.
        image_size: side S of the returned (3, S, S) uint8 images.
        resize_size: shorter side after resizing, before the center crop (>= image_size).
        max_side: None: center crops; else whole images, longer side at most ``max_side``
            (``whole_image.decode_whole``), of their own size (3, h, w) (see ``whole_images``).
    """

    def __init__(
        self, samples: list[tuple[str, int]], image_size: int, resize_size: int, max_side: int | None = None
    ) -> None:
        self.paths = path_array([path for path, _ in samples])  # any file name, see path_array
        self.labels = np.array([label for _, label in samples], dtype=np.int64)
        self.image_size = image_size
        self.resize_size = resize_size
        self.max_side = max_side

    def whole_images(self, max_side: int) -> ImageFileDataset:
        """The same files (the same arrays, not copied) as whole images for the training views:
        items ``(uint8 (3, h, w), label, index)``, batched by ``whole_image.pad_collate``."""
        whole = copy.copy(self)
        whole.max_side = max_side
        return whole

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        """Return ``(uint8 (3, S, S), label, index)`` (whole images: ``(uint8 (3, h, w), ...)``).

        A file that passed ``check_file`` but fails to decode now (changed since, or corrupt in
        a way the cheap check does not see) is logged and replaced by the next decodable sample,
        so a batch is never short.
        """
        for offset in range(len(self)):
            i = (index + offset) % len(self)
            path = os.fsdecode(self.paths[i])
            try:
                if self.max_side is not None:
                    return load_whole(path, self.max_side), int(self.labels[i]), i
                return load_image(path, self.image_size, self.resize_size), int(self.labels[i]), i
            except Exception as e:  # noqa: BLE001 - any decoder error: skip the file, keep training
                log.warning("image files: %s cannot be decoded (%s); using the next image", shown(path), e)
        raise RuntimeError("image files: no file of the split can be decoded")


class ImageFolderData(ImageDataModule):
    """Images in folders, labelled by class folder or not labelled at all.

    Layouts (``root`` may hold a ``train_dir`` and a ``val_dir``, or be the train split itself):

    * class folders: ``root/train/<class>/**`` (+ ``root/val/<class>/**``); class indices are the
      sorted train folder names.
    * unlabelled: any flat or nested folder of images (``root/*.jpg``, ``root/2019/*/*.jpg``...);
      every sample has label -1 and ``num_classes`` is 0.
    * no held-out split: without a ``val_dir`` folder the data has only a train split (label-free
      evaluations still run; label-needing ones need ``eval_root``).

    Symbolic links are followed, but each real folder is walked once (a link loop, or two links to
    one place, is skipped and named in the log) and each real file is one sample. Any file name
    the operating system allows is read (non-ASCII, spaces, names that are not valid UTF-8).

    Training batches hold whole images (``max_side``; the views are cut from them on the device,
    see ``whole_image``); the evaluation loaders hold center crops of ``image_size``.

    Args:
        root: dataset root.
        image_size: side S of the (3, S, S) uint8 evaluation images (resize + center crop).
        batch_size: samples per batch, per process.
        num_workers: dataloader workers (decoding is the CPU bottleneck).
        train_dir: train split folder under ``root``. When the default ``train`` is absent, ``root``
            itself is the train split; a folder named otherwise must exist.
        val_dir: held-out split folder under ``root``; None = no held-out split. When the default
            ``val`` is absent there is no held-out split; a folder named otherwise must exist.
        labels: ``folders``: the train split's sub-folders are the classes; ``none``: no labels,
            every image under the split (label -1); ``auto``: ``folders`` when the train split holds
            sub-folders and no image files of its own, else ``none`` (the choice is logged).
        resize_size: shorter side before the evaluation crop (``None`` = ``image_size``, i.e. the
            largest central square).
        classes_per_batch: P x K class-balanced train batches (see ``ImageDataModule``).
        max_bad_fraction: the largest fraction of undecodable image files (empty, truncated,
            corrupt, not an image) per split that is skipped with a report; above it ``setup``
            fails. Files in other modes (grayscale, CMYK, RGBA, 16-bit...) are converted to RGB.
        eval_root: a separate labelled class-folder dataset (``eval_root/train/<class>``,
            ``eval_root/val/<class>``) for the k-NN and linear-probe evaluations, e.g. when
            pretraining on unlabelled images; None = evaluate on this data when it has labels.
        max_side: the longest side of a training image in pixels: larger images are scaled down
            to it, smaller ones keep their size.

    Every file is checked once when the data is set up (header + end marker, see ``check_file``):
    skipped and converted files are counted and named in the log, and listed in ``skipped``.

    Raises:
        FileNotFoundError: ``root`` (or a named ``train_dir``/``val_dir``) does not exist, or a
            split holds no images (at ``setup``).
        ValueError: a bad argument, or val classes that are not train classes.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        batch_size: int = 256,
        num_workers: int = 8,
        train_dir: str = "train",
        val_dir: str | None = "val",
        labels: Labels = "auto",
        resize_size: int | None = None,
        classes_per_batch: int | None = None,
        max_bad_fraction: float = 0.01,
        eval_root: str | None = None,
        max_side: int = 512,
    ) -> None:
        super().__init__(image_size, batch_size, num_workers, classes_per_batch)
        check_positive(resize_size=resize_size, max_side=max_side)
        self.max_side = max_side
        if labels not in ("auto", "folders", "none"):
            raise ValueError(f"labels: expected auto, folders or none, got {labels!r}")
        self.max_bad_fraction = max_bad_fraction
        self.root = os.fspath(root)
        self.resize_size = resize_size or image_size
        check_folder_args(self.root, image_size, resize_size, max_bad_fraction)
        self.train_path = os.path.join(self.root, train_dir)
        if not os.path.isdir(self.train_path):
            if train_dir != "train":
                raise FileNotFoundError(
                    f"train_dir: {shown(self.train_path)} does not exist (root: {shown(self.root)})"
                )
            self.train_path = self.root
        self.val_path: str | None = None if val_dir is None else os.path.join(self.root, val_dir)
        if self.val_path is not None and not os.path.isdir(self.val_path):
            if val_dir != "val":
                raise FileNotFoundError(f"val_dir: {shown(self.val_path)} does not exist (root: {shown(self.root)})")
            self.val_path = None
        self.labels = self._resolve_labels(labels)
        self.classes = class_folders(self.train_path) if self.labels == "folders" else []
        if self.labels == "folders" and not self.classes:
            raise FileNotFoundError(
                f"labels: folders, but {shown(self.train_path)} has no class sub-folders (set data.labels=none)"
            )
        if self.labels == "folders" and self.val_path is not None:
            val_classes = class_folders(self.val_path)
            if not val_classes:
                raise FileNotFoundError(f"val_dir: {shown(self.val_path)} has no class sub-folders "
                                        "(sort val images into class folders, or set data.val_dir=null)")  # fmt: skip
            unknown = sorted(set(val_classes) - set(self.classes))
            if unknown:
                raise ValueError(
                    f"root: {shown(self.val_path)} has {len(unknown)} classes not in the train split: {unknown[:5]}"
                )
        self.eval_data = None if eval_root is None else eval_folder(eval_root, self)
        _say_layout(self)

    def _resolve_labels(self, labels: Labels) -> Labels:
        if labels != "auto":
            return labels
        entries = [e for e in os.scandir(self.train_path) if not e.name.startswith(".")]
        images = any(e.is_file() and e.name.lower().endswith(EXTENSIONS) for e in entries)
        val = self.val_path and os.path.realpath(self.val_path)
        folders = any(e.is_dir() and os.path.realpath(e.path) != val for e in entries)
        return "folders" if folders and not images else "none"

    @property
    def num_classes(self) -> int:
        """Number of train class folders (0 without labels)."""
        return len(self.classes)

    @property
    def num_train_samples(self) -> int:
        """Train split size (lists the train folder on first use if ``setup`` has not run)."""
        self.setup()
        return len(self.train_set)

    def train_source(self) -> tuple[ImageFileDataset, Collate]:
        """Whole images of the train split, batched with their sizes (``whole_image.pad_collate``)."""
        return self.train_set.whole_images(self.max_side), pad_collate

    def _build(self) -> tuple[ImageFileDataset, ImageFileDataset | None]:
        # The root as train split must not take in the val folder beside it.
        exclude = (self.val_path,) if self.val_path is not None and self.train_path == self.root else ()
        train = self._split(self.train_path, exclude)
        return train, None if self.val_path is None else self._split(self.val_path, ())

    def _split(self, directory: str, exclude: tuple[str, ...]) -> ImageFileDataset:
        found = find_images(directory, self.classes if self.labels == "folders" else None, exclude)
        self.skipped += found.bad
        total = len(found.samples) + len(found.bad)
        if found.bad and len(found.bad) > self.max_bad_fraction * total:
            raise ValueError(
                f"max_bad_fraction: {len(found.bad)} of {total} image files in {shown(directory)} cannot be "
                f"decoded ({len(found.bad) / total:.1%} > {self.max_bad_fraction:.1%}): "
                f"{names(found.bad, directory)}; remove or replace them, or raise data.max_bad_fraction"
            )
        if not found.samples:
            raise FileNotFoundError(f"root: {shown(directory)} holds no images with extensions {', '.join(EXTENSIONS)}")
        report("image_folder", directory, found)
        return ImageFileDataset(found.samples, self.image_size, self.resize_size)


def eval_folder(eval_root: str, data: ImageDataModule) -> ImageFolderData:
    """The labelled class-folder data behind ``eval_root``, with ``data``'s image and loader settings.

    Raises:
        FileNotFoundError / ValueError: as ``ImageFolderData``, with ``eval_root`` named.
    """
    try:
        return ImageFolderData(
            eval_root, data.image_size, data.batch_size, data.num_workers, labels="folders",
            resize_size=getattr(data, "resize_size", None),  # in-memory data modules have none
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"eval_root: {str(e).split(': ', 1)[-1]}") from None


def names(bad: list[tuple[str, str]], directory: str) -> str:
    """The first bad files as ``relative/path (reason)``, comma-separated, ``and N more``."""
    shown_ = ", ".join(f"{shown(os.path.relpath(p, directory))} ({why})" for p, why in bad[:_SHOWN])
    return shown_ + (f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else "")


@rank_zero_only
def _say_layout(data: ImageFolderData) -> None:
    split = "" if data.train_path == data.root else f"{os.path.basename(data.train_path)}/ of "
    if data.labels == "folders":
        what = f"labels=folders: {len(data.classes)} class folders in {split}{shown(data.root)}"
    else:
        what = f"labels=none: every image under {split}{shown(data.root)}, label -1"
    val = "no held-out split" if data.val_path is None else f"held-out split {shown(data.val_path)}"
    log.warning("image_folder: %s; %s", what, val)


@rank_zero_only
def report(kind: str, where: str, found: FileCheck, base: str | None = None) -> None:
    """One log line per kind of problem, on rank 0 (every rank checks the same files).

    Args:
        kind: the data module's recipe name (first word of each line).
        where: the split's folder or list file.
        found: what the check found.
        base: folder the file names are shown relative to (default: ``where``).
    """
    total = len(found.samples) + len(found.bad)
    base = where if base is None else base
    place = shown(where)

    def listed(paths: list[str]) -> str:
        return names([(p, "") for p in paths], base).replace(" ()", "")

    if found.bad:
        log.warning("%s: %s: skipped %d of %d image files: %s", kind, place, len(found.bad), total,
                    names(found.bad, base))  # fmt: skip
    if found.modes:
        modes = ", ".join(f"{n} {mode}" for mode, n in sorted(found.modes.items()))
        log.warning("%s: %s: converted to RGB on load: %s", kind, place, modes)
    if found.ignored:
        log.warning("%s: %s: ignored %d files without an image extension (%s): %s", kind, place,
                    len(found.ignored), ", ".join(EXTENSIONS), listed(found.ignored))  # fmt: skip
    if found.walked_once:
        log.warning("%s: %s: %d symbolic links lead to folders or files already read; each is read once, "
                    "skipped: %s", kind, place, len(found.walked_once), listed(found.walked_once))  # fmt: skip
    if found.loose:
        log.warning("%s: %s: ignored %d images outside the class folders (labels=folders): %s", kind, place,
                    len(found.loose), listed(found.loose))  # fmt: skip
    if found.empty_classes:
        log.warning("%s: %s: %d class folders hold no usable image (still counted as classes): %s", kind,
                    place, len(found.empty_classes), ", ".join(map(shown, found.empty_classes[:_SHOWN])))  # fmt: skip
