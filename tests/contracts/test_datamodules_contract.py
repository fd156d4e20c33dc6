"""Contract shared by every entry of DATAMODULES (what recipes and callbacks rely on), driven by ``CASES``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from contracts.constructor import assert_plain_typed_constructor
from lightning.pytorch import LightningDataModule
from PIL import Image

from ssl_toolkit.callbacks.eval_plan import FeatureRequest, attach, plan_evaluation
from ssl_toolkit.data import DATAMODULES, SyntheticData
from ssl_toolkit.data.shard_writer import write_shards


def _tiny_folder(tmp: Path) -> dict[str, Any]:
    for split, n in (("train", 4), ("val", 2)):
        for c, colour in enumerate(((200, 20, 20), (20, 200, 20))):
            for i in range(n):
                path = tmp / split / f"class{c}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (20 + i, 18), colour).save(path)
    return {"root": str(tmp)}


def _tiny_file_list(tmp: Path) -> dict[str, Any]:
    _tiny_folder(tmp)
    for split in ("train", "val"):
        rows = sorted(p.relative_to(tmp).as_posix() for p in (tmp / split).rglob("*.png"))
        (tmp / f"{split}.csv").write_text("".join(f"{r},{r.split('/')[1]}\n" for r in rows))
    return {"root": str(tmp), "train_list": str(tmp / "train.csv"), "val_list": str(tmp / "val.csv")}


def _tiny_shards(tmp: Path) -> dict[str, Any]:
    _tiny_folder(tmp)
    for split, per_shard in (("train", 4), ("val", 4)):
        files = sorted((tmp / split).rglob("*.png"))
        write_shards([(str(p), int(p.parent.name[-1])) for p in files], str(tmp / f"{split}-%02d.tar"), per_shard)
    return {"train_shards": str(tmp / "train-{00..01}.tar"), "val_shards": str(tmp / "val-00.tar")}


# The contract table: per entry of DATAMODULES, a function of a scratch folder returning tiny
# constructor keywords (a data module without a row fails test_every_datamodule_has_exactly_one_row).
CASES: dict[str, Callable[[Path], dict[str, Any]]] = {
    "synthetic": lambda tmp: {"num_samples": 24, "num_val_samples": 8},
    "fashion_mnist": lambda tmp: {"train_samples": 24, "val_samples": 8},
    "image_folder": _tiny_folder,
    "file_list": _tiny_file_list,
    "webdataset": _tiny_shards,
}
BATCH, SIZE = 4, 16
WHOLE = {"image_folder", "file_list", "webdataset"}  # train batches of whole images + sizes (decode files)


def test_every_datamodule_has_exactly_one_row() -> None:
    assert set(CASES) == set(DATAMODULES), (
        f"missing: {set(DATAMODULES) - set(CASES)}, extra: {set(CASES) - set(DATAMODULES)}"
    )


@pytest.mark.parametrize("name", sorted(DATAMODULES))
def test_batches_follow_the_contract(name: str, tmp_path: Path) -> None:
    data = DATAMODULES[name](**CASES[name](tmp_path), image_size=SIZE, batch_size=BATCH, num_workers=0)
    data.setup("fit")
    assert data.num_train_samples >= BATCH and data.batch_size == BATCH
    assert data.val_dataloader() == []  # no evaluation planned: Lightning runs no validation loop
    # The validation loaders are those an evaluation plan attaches: held-out split, bank, subset rows.
    rows = (1, 3, 4)
    held_out, bank = FeatureRequest("val", source="labelled"), FeatureRequest("train", source="labelled")
    plan = plan_evaluation([held_out, bank, FeatureRequest("train", rows)])
    assert plan.layout() == ("labelled val", "labelled train")  # the whole-split bank holds the rows
    attach(plan_evaluation([held_out, replace(bank, rows=(0, 2)), FeatureRequest("train", rows)]), data)
    val, bank, subset = data.val_dataloader()
    assert torch.cat([b[2] for b in subset]).tolist() == list(rows) and len(bank.dataset) == 2
    loaders = (data.heldout_dataloader(), data.train_eval_dataloader(), val, bank, subset)
    for loader in loaders:
        images, labels, index = next(iter(loader))
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, SIZE, SIZE) and images.shape[0] <= BATCH
        assert labels.shape == index.shape == images.shape[:1]
        assert labels.dtype == index.dtype == torch.int64
    # Train batches: the images as above, or whole images of image files with their (h, w) sizes.
    images, labels, index, *whole = next(iter(data.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape[:2] == (BATCH, 3) and len(whole) == int(name in WHOLE)
    assert labels.shape == index.shape == (BATCH,) and labels.dtype == index.dtype == torch.int64
    if whole:
        (sizes,) = whole
        assert sizes.dtype == torch.int64 and sizes.shape == (BATCH, 2)
        assert sizes.max(0).values.tolist() == list(images.shape[-2:]) and sizes.min() >= 18  # 18 x (20..23) px
    else:
        assert images.shape[-2:] == (SIZE, SIZE)


@pytest.mark.parametrize("name", sorted(DATAMODULES))
def test_plain_typed_constructor(name: str) -> None:
    cls = DATAMODULES[name]
    assert issubclass(cls, LightningDataModule)
    names = assert_plain_typed_constructor(cls, set())
    assert {"image_size", "batch_size", "num_workers"} <= set(names)
    for method in (
        "train_dataloader",
        "val_dataloader",
        "heldout_dataloader",
        "train_eval_dataloader",
        "setup",
        "split_dataset",
        "eval_loader",
    ):
        assert callable(getattr(cls, method))
    assert isinstance(cls.num_classes, property) and isinstance(cls.num_train_samples, property)


def test_setup_is_idempotent() -> None:
    data = SyntheticData(num_samples=64, num_val_samples=16)
    data.setup("fit")
    train_set = data.train_set
    data.setup("validate")
    assert data.train_set is train_set
