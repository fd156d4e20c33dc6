"""Contract shared by every entry of DATAMODULES (what recipes and callbacks rely on)."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningDataModule
from PIL import Image

from ssl_toolkit.data import DATAMODULES, SyntheticData
from ssl_toolkit.data.shard_writer import write_shards


def _images(root: Path) -> list[tuple[str, int]]:
    """Six small JPEGs in root/train/<class>/ and two in root/val/<class>/."""
    out = []
    for split, count in (("train", 3), ("val", 1)):
        for label, name in enumerate(("a", "b")):
            for i in range(count):
                path = root / split / name / f"{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (12, 10), (80 * label, 10 * i, 0)).save(path)
                out.append((str(path), label))
    return out


def _folder(tmp: Path) -> dict[str, Any]:
    _images(tmp)
    return {"root": str(tmp)}


def _file_list(tmp: Path) -> dict[str, Any]:
    files = _images(tmp)
    (tmp / "train.csv").write_text("".join(f"{p},{y}\n" for p, y in files if "/train/" in p))
    return {"root": str(tmp), "train_list": str(tmp / "train.csv")}


def _shards(tmp: Path) -> dict[str, Any]:
    files = [f for f in _images(tmp) if "/train/" in f[0]]
    write_shards(files, str(tmp / "s-%02d.tar"), 3)
    return {"train_shards": str(tmp / "s-{00..01}.tar")}


# One row per DATAMODULES entry: tiny constructor keywords (a new data module must add its row).
TINY: dict[str, Callable[[Path], dict[str, Any]]] = {
    "image_folder": _folder,
    "file_list": _file_list,
    "webdataset": _shards,
    "fashion_mnist": lambda tmp: {"train_samples": 6, "val_samples": 2},
    "synthetic": lambda tmp: {"num_samples": 6, "num_val_samples": 2},
}


def test_every_datamodule_has_a_row() -> None:
    assert TINY.keys() == DATAMODULES.keys()


@pytest.mark.parametrize("name", sorted(DATAMODULES))
def test_batches_are_uint8_images_labels_and_indices(name: str, tmp_path: Path) -> None:
    data = DATAMODULES[name](**TINY[name](tmp_path), image_size=8, batch_size=2, num_workers=0)
    assert data.num_train_samples == 6 and len(data.train_dataloader()) == 3
    for loader in (data.train_dataloader(), data.train_eval_dataloader()):
        images, labels, index = next(iter(loader))
        assert images.dtype == torch.uint8 and images.shape == (2, 3, 8, 8)
        assert labels.dtype == torch.int64 and index.dtype == torch.int64 and labels.shape == index.shape == (2,)
        assert all(-1 <= int(y) < max(data.num_classes, 1) for y in labels)
    assert data.has_labels  # every tiny row is labelled


@pytest.mark.parametrize("name", sorted(DATAMODULES))
def test_plain_typed_constructor(name: str) -> None:
    cls = DATAMODULES[name]
    assert issubclass(cls, LightningDataModule)
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters)  # no *args/**kwargs
    hints = typing.get_type_hints(cls.__init__)  # annotations resolve (recipe type checks need this)
    assert {p.name for p in parameters} <= set(hints)
    assert {"image_size", "batch_size", "num_workers"} <= {p.name for p in parameters}
    for method in ("train_dataloader", "val_dataloader", "train_eval_dataloader", "setup"):
        assert callable(getattr(cls, method))
    assert isinstance(cls.num_classes, property) and isinstance(cls.num_train_samples, property)


def test_setup_is_idempotent() -> None:
    data = SyntheticData(num_samples=64, num_val_samples=16)
    data.setup("fit")
    train_set = data.train_set
    data.setup("validate")
    assert data.train_set is train_set
