"""ImageNet-100: the standard 100-class ImageNet subset (CMC list), built as a tree of symlinks."""

from __future__ import annotations

import importlib.resources
import os
from collections import Counter
from pathlib import Path

SPLITS = ("train", "val")


def imagenet100_classes(classes_file: str | Path | None = None) -> list[str]:
    """Read a class list: one WordNet id per line, blank lines ignored.

    Args:
        classes_file: the list to read; ``None`` reads the packaged ``imagenet100_classes.txt``.

    Returns:
        The wnids in file order (100 for the packaged list).
    """
    if classes_file is None:
        text = importlib.resources.files("ssl_toolkit.data").joinpath("imagenet100_classes.txt").read_text()
    else:
        text = Path(classes_file).read_text()
    wnids = [line.strip() for line in text.splitlines() if line.strip()]
    duplicates = sorted(w for w, n in Counter(wnids).items() if n > 1)
    if duplicates:
        raise ValueError(f"classes_file: {classes_file or 'packaged list'} repeats {duplicates[:5]}")
    return wnids


def _check_source(imagenet: Path, wnids: list[str]) -> None:
    """Raise if a split folder is missing or flat, or if any wanted class folder is missing."""
    if not imagenet.is_dir():
        raise FileNotFoundError(f"imagenet: {imagenet} does not exist")
    for split in SPLITS:
        folder = imagenet / split
        if not folder.is_dir():
            raise FileNotFoundError(f"imagenet: {folder} does not exist (expected {split}/<wnid>/ folders)")
        if not any(entry.is_dir() for entry in os.scandir(folder)):
            raise ValueError(f"imagenet: {folder} is flat; sort its images into {split}/<wnid>/ class folders first")
    for split in SPLITS:  # layout problems first: a flat val would otherwise read as "all classes missing"
        folder = imagenet / split
        missing = [w for w in wnids if not (folder / w).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"imagenet: {folder} lacks {len(missing)} of {len(wnids)} classes, e.g. {', '.join(missing[:5])}"
            )


def make_imagenet100(imagenet_root: str | Path, out_root: str | Path, classes_file: str | Path | None = None) -> int:
    """Create ``out_root/{train,val}/<wnid>`` as symlinks to the class folders of a full ImageNet.

    Checks everything before creating anything. Rerunning is safe: correct symlinks are kept. An
    existing target that is not a symlink to the same folder is never replaced (error instead).

    Args:
        imagenet_root: holds ``train/<wnid>/`` and ``val/<wnid>/`` (val sorted into class folders).
        out_root: where the subset tree goes (created if needed).
        classes_file: class list, one wnid per line; ``None`` = the packaged ImageNet-100 list.

    Returns:
        Number of symlinks created by this call (0 when the tree was already complete).
    """
    imagenet, out = Path(imagenet_root).expanduser().resolve(), Path(out_root).expanduser()
    wnids = imagenet100_classes(classes_file)
    _check_source(imagenet, wnids)
    todo: list[tuple[Path, Path]] = []
    for split in SPLITS:
        for wnid in wnids:
            source, target = imagenet / split / wnid, out / split / wnid
            if target.is_symlink() and target.resolve() == source.resolve():
                continue
            if target.exists() or target.is_symlink():
                raise FileExistsError(f"out: {target} already exists and is not a symlink to {source}; remove it first")
            todo.append((source, target))
    for source, target in todo:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source, target_is_directory=True)
    return len(todo)
