"""Image paths listed in a text or CSV file (how large datasets and curated subsets are handed around)."""

from __future__ import annotations

import csv
import logging
import os
from typing import Literal

from lightning.fabric.utilities.rank_zero import rank_zero_only

from ssl_toolkit.data.base import Collate, ImageDataModule, check_positive
from ssl_toolkit.data.image_files import FileCheck, add_checked, check_folder_args, shown
from ssl_toolkit.data.image_folder import ImageFileDataset, eval_folder, names, report
from ssl_toolkit.data.whole_image import pad_collate

log = logging.getLogger(__name__)
HEADERS = (["path"], ["path", "label"])  # an optional first row, skipped


def read_list(path: str, arg: str) -> list[tuple[str, str | None]]:
    """The ``(image path, label or None)`` rows of a list file.

    Format: one row per image, ``path`` or ``path<sep>label``; ``sep`` is a comma in a ``.csv`` file
    (quote paths holding commas, as CSV does) and a tab in any other file (``.txt``, ``.tsv``...).
    Blank lines and lines starting with ``#`` are skipped, and so is a header row ``path[,label]``.
    The file is read as UTF-8; bytes that are not UTF-8 stay the file name's own bytes.

    Args:
        path: the list file.
        arg: the constructor argument that named it (for errors).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a row with more than two columns or an empty path (names the file and line).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{arg}: {shown(path)} does not exist")
    delimiter = "," if path.lower().endswith(".csv") else "\t"
    rows: list[tuple[str, str | None]] = []
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        for line_no, row in enumerate(csv.reader(f, delimiter=delimiter), start=1):
            if not row or not "".join(row).strip() or row[0].startswith("#"):
                continue
            if line_no == 1 and [c.strip().lower() for c in row] in HEADERS:
                continue
            if len(row) > 2 or not row[0].strip():
                raise ValueError(
                    f"{arg}: {shown(path)} line {line_no}: expected path or path{delimiter!r}label, got {row!r}"
                )
            rows.append((row[0], row[1].strip() if len(row) == 2 else None))
    return rows


class FileListData(ImageDataModule):
    """Images named in list files, paths relative to ``root``; labelled by a label column or not at all.

    A list row is ``path`` or ``path,label`` (see ``read_list``). Labels are integer class indices
    (``num_classes`` = largest + 1) or class names (indices = the sorted names of the train list).
    A listed file that is missing or cannot be decoded is skipped and named in the log like any
    other bad file (``max_bad_fraction``); every file is checked once at ``setup``.

    Args:
        root: folder the listed paths are relative to (absolute paths in a list are kept as they are).
        train_list: the train split's list file.
        val_list: the held-out split's list file; None = no held-out split.
        image_size: side S of the (3, S, S) uint8 evaluation images (resize + center crop);
            training batches hold whole images (``max_side``, see ``ImageFolderData``).
        batch_size: samples per batch, per process.
        num_workers: dataloader workers.
        labels: ``column``: every train row has a label; ``none``: labels are ignored (label -1);
            ``auto``: ``column`` when the train list has a label column, else ``none``.
        resize_size: shorter side before the evaluation crop (None = ``image_size``).
        classes_per_batch: P x K class-balanced train batches (see ``ImageDataModule``).
        max_bad_fraction: the largest fraction of missing or undecodable files per split that is
            skipped with a report; above it ``setup`` fails.
        eval_root: a separate labelled class-folder dataset for k-NN and the linear probe (see
            ``ImageFolderData``).
        max_side: the longest side of a training image in pixels (larger ones are scaled down).

    Raises:
        FileNotFoundError: ``root`` or a list file does not exist.
        ValueError: a bad argument, a malformed row, rows without labels under ``labels: column``,
            val labels that are not train labels.
    """

    def __init__(
        self,
        root: str,
        train_list: str,
        val_list: str | None = None,
        image_size: int = 224,
        batch_size: int = 256,
        num_workers: int = 8,
        labels: Literal["auto", "column", "none"] = "auto",
        resize_size: int | None = None,
        classes_per_batch: int | None = None,
        max_bad_fraction: float = 0.01,
        eval_root: str | None = None,
        max_side: int = 512,
    ) -> None:
        super().__init__(image_size, batch_size, num_workers, classes_per_batch)
        check_positive(resize_size=resize_size, max_side=max_side)
        self.max_side = max_side
        if labels not in ("auto", "column", "none"):
            raise ValueError(f"labels: expected auto, column or none, got {labels!r}")
        check_folder_args(os.fspath(root), image_size, resize_size, max_bad_fraction)
        self.root, self.train_list, self.val_list = root, train_list, val_list
        self.resize_size = resize_size or image_size
        self.max_bad_fraction = max_bad_fraction
        self.train_rows = read_list(train_list, "train_list")
        self.val_rows = None if val_list is None else read_list(val_list, "val_list")
        if not self.train_rows:
            raise ValueError(f"train_list: {shown(train_list)} lists no images")
        with_label = sum(label is not None for _, label in self.train_rows)
        if labels == "auto":
            labels = "column" if with_label else "none"
        if labels == "column" and with_label < len(self.train_rows):
            first = next(p for p, label in self.train_rows if label is None)
            raise ValueError(f"labels: column, but {shown(train_list)} has rows without a label (e.g. {shown(first)})")
        self.labels = labels
        self.classes: list[str] = []
        self.class_to_idx: dict[str, int] = {}
        if labels == "column":
            self._index_classes()
        self.eval_data = None if eval_root is None else eval_folder(eval_root, self)
        _say_layout(self)

    def _index_classes(self) -> None:
        names_ = sorted({label for _, label in self.train_rows})
        if all(n.lstrip("-").isdigit() for n in names_):  # integer class indices
            values = sorted({int(n) for n in names_})
            if values[0] < 0:
                raise ValueError(f"train_list: {shown(self.train_list)} has a negative label {values[0]}")
            self.classes = [str(i) for i in range(values[-1] + 1)]
            self.class_to_idx = {n: int(n) for n in names_}
        else:
            self.classes = names_
            self.class_to_idx = {n: i for i, n in enumerate(names_)}
        unknown = sorted({label for _, label in self.val_rows or () if label is not None} - set(self.class_to_idx))
        if unknown:
            raise ValueError(f"val_list: {shown(self.val_list)} has labels not in the train list: {unknown[:5]}")

    @property
    def num_classes(self) -> int:
        """Number of classes (0 without labels)."""
        return len(self.classes)

    @property
    def num_train_samples(self) -> int:
        """Usable train images (checks the files on first use if ``setup`` has not run)."""
        self.setup()
        return len(self.train_set)

    def train_source(self) -> tuple[ImageFileDataset, Collate]:
        """Whole images of the train split, batched with their sizes (``whole_image.pad_collate``)."""
        return self.train_set.whole_images(self.max_side), pad_collate

    def _build(self) -> tuple[ImageFileDataset, ImageFileDataset | None]:
        train = self._split(self.train_rows, self.train_list)
        return train, None if self.val_rows is None else self._split(self.val_rows, self.val_list)

    def _split(self, rows: list[tuple[str, str | None]], list_file: str) -> ImageFileDataset:
        found = FileCheck()
        for path, label in rows:
            index = self.class_to_idx.get(label, -1) if self.labels == "column" and label is not None else -1
            add_checked(found, os.path.join(self.root, path), index)
        self.skipped += found.bad
        total = len(rows)
        if found.bad and len(found.bad) > self.max_bad_fraction * total:
            raise ValueError(
                f"max_bad_fraction: {len(found.bad)} of {total} files listed in {shown(list_file)} are missing or "
                f"cannot be decoded ({len(found.bad) / total:.1%} > {self.max_bad_fraction:.1%}): "
                f"{names(found.bad, self.root)}; fix the list, or raise data.max_bad_fraction"
            )
        if not found.samples:
            raise FileNotFoundError(f"root: none of the files listed in {shown(list_file)} is a usable image")
        report("file_list", list_file, found, base=self.root)
        return ImageFileDataset(found.samples, self.image_size, self.resize_size)


@rank_zero_only
def _say_layout(data: FileListData) -> None:
    if data.labels == "column":
        what = f"labels=column: {data.num_classes} classes in {shown(data.train_list)}"
        empty = sorted(set(range(data.num_classes)) - set(data.class_to_idx.values()))
        if empty:  # integer labels 0 and 7 only: indices 0..7, six of them never seen
            shown_empty = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
            what += (f" (integer labels: indices 0 to {data.num_classes - 1}, up to the largest label; "
                     f"{len(empty)} of them have no image: {shown_empty})")  # fmt: skip
    else:
        what = f"labels=none: {len(data.train_rows)} images listed in {shown(data.train_list)}, label -1"
    val = "no held-out split" if data.val_list is None else f"held-out split {shown(data.val_list)}"
    log.warning("file_list: %s; %s", what, val)
