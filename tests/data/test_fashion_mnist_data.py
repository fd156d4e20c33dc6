"""FashionMNISTData on the system copy of the dataset (apt-get install -y dataset-fashion-mnist)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_toolkit.data import FashionMNISTData
from ssl_toolkit.data.fashion_mnist import FILES, read_idx

ROOT = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def data() -> FashionMNISTData:
    # Deliberately no skip: a machine without the dataset fails here with the install hint.
    module = FashionMNISTData(root=str(ROOT), image_size=32, batch_size=64, num_workers=0, train_samples=256)
    module.setup("fit")
    return module


def test_slice_batches(data: FashionMNISTData) -> None:
    assert data.num_classes == 10 and data.num_train_samples == 256
    images, labels, index = next(iter(data.train_dataloader()))
    assert images.shape == (64, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and ((labels >= 0) & (labels < 10)).all()
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2])
    assert images.float().std() > 10  # real content, not a blank resize
    assert len(torch.unique(data.train_set.labels)) == 10  # the slice mixes classes


def test_index_matches_position(data: FashionMNISTData) -> None:
    batches = list(data.train_eval_dataloader())
    assert torch.equal(torch.cat([b[2] for b in batches]), torch.arange(256))
    images, labels, index = batches[1]
    assert torch.equal(images[3, 0], data.train_set.images[index[3], 0])
    assert labels[3] == data.train_set.labels[index[3]]


def test_val_split_is_t10k() -> None:
    module = FashionMNISTData(root=str(ROOT), image_size=28, num_workers=0)
    module.setup()
    images, labels = read_idx(ROOT / FILES["val"][0], 2051), read_idx(ROOT / FILES["val"][1], 2049)
    assert len(module.val_set) == 10000
    assert np.array_equal(module.val_set.images[:, 0].numpy(), images)  # 28 px: no resize
    val_images, val_labels, val_index = next(iter(module.heldout_dataloader()))
    assert torch.equal(val_index, torch.arange(len(val_index)))
    assert np.array_equal(val_labels.numpy(), labels[: len(val_labels)])


def test_slice_is_deterministic(data: FashionMNISTData) -> None:
    other = FashionMNISTData(root=str(ROOT), batch_size=64, num_workers=0, train_samples=256, val_samples=50)
    other.setup()
    assert torch.equal(other.train_set.images, data.train_set.images)
    assert len(other.val_set) == 50


def test_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as error:
        FashionMNISTData(root=str(missing))
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"root: {missing}")
    assert "apt-get install -y dataset-fashion-mnist" in message


def test_missing_file(tmp_path: Path) -> None:
    for name in FILES["train"] + FILES["val"][:1]:
        (tmp_path / name).symlink_to(ROOT / name)
    with pytest.raises(FileNotFoundError, match=f"root: {tmp_path} has no t10k-labels-idx1-ubyte.gz"):
        FashionMNISTData(root=str(tmp_path))


def test_too_many_samples() -> None:
    with pytest.raises(ValueError, match="^train_samples: 60001 exceeds"):
        FashionMNISTData(root=str(ROOT), train_samples=60001)
