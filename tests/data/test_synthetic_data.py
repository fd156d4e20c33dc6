"""SyntheticData: batch contract, determinism, learnable class dependence."""

from __future__ import annotations

import pytest
import torch

from ssl_toolkit.data import SyntheticData


@pytest.fixture(scope="module")
def data() -> SyntheticData:
    module = SyntheticData(num_samples=256, num_val_samples=64, num_classes=4, image_size=24, batch_size=16)
    module.setup("fit")
    return module


@pytest.mark.parametrize("loader", ["train_dataloader", "heldout_dataloader", "train_eval_dataloader"])
def test_batch_contract(data: SyntheticData, loader: str) -> None:
    images, labels, index = next(iter(getattr(data, loader)()))
    assert images.shape == (16, 3, 24, 24) and images.dtype == torch.uint8
    assert labels.shape == (16,) and labels.dtype == torch.int64
    assert index.shape == (16,) and index.dtype == torch.int64
    assert ((labels >= 0) & (labels < data.num_classes)).all()


def test_loader_lengths_and_order(data: SyntheticData) -> None:
    assert data.num_train_samples == 256 and data.num_classes == 4
    assert len(data.train_dataloader()) == 256 // 16
    indices = torch.cat([batch[2] for batch in data.train_eval_dataloader()])
    assert torch.equal(indices, torch.arange(256))  # fixed order, every sample once
    val = torch.cat([batch[1] for batch in data.heldout_dataloader()])
    assert torch.equal(val, data.val_set.labels)
    assert len(val) == 64


def test_drop_last_and_shuffle() -> None:
    module = SyntheticData(num_samples=40, num_val_samples=8, batch_size=16)
    seen = torch.cat([batch[2] for batch in module.train_dataloader()])
    assert len(seen) == 32  # 40 // 16 full batches only
    assert not torch.equal(seen, torch.arange(32))


def test_deterministic_under_seed() -> None:
    a, b, c = (SyntheticData(num_samples=128, num_val_samples=32, seed=s) for s in (3, 3, 4))
    for module in (a, b, c):
        module.setup()
    assert torch.equal(a.train_set.images, b.train_set.images)
    assert torch.equal(a.val_set.labels, b.val_set.labels)
    assert not torch.equal(a.train_set.images, c.train_set.images)
    assert not torch.equal(a.train_set.images[:32], a.val_set.images)  # splits differ


def test_classes_balanced_and_learnable(data: SyntheticData) -> None:
    images, labels = data.train_set.images.float(), data.train_set.labels
    assert torch.bincount(labels, minlength=4).tolist() == [64] * 4
    means = torch.stack([images[labels == k].mean(0) for k in range(4)])  # (K, 3, S, S)
    assert torch.cdist(means.flatten(1), means.flatten(1)).fill_diagonal_(1e9).min() > 100
    # Nearest class-mean on raw pixels already separates the held-out split.
    val = data.val_set
    predicted = torch.cdist(val.images.float().flatten(1), means.flatten(1)).argmin(1)
    assert (predicted == val.labels).float().mean() > 0.9


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"num_samples": 0}, "num_samples"), ({"batch_size": -1}, "batch_size"), ({"image_size": 2}, "image_size")],
)
def test_invalid_arguments(kwargs: dict[str, int], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}: "):
        SyntheticData(**kwargs)


def test_batch_larger_than_split_is_an_error() -> None:
    with pytest.raises(ValueError, match="batch_size: 64"):
        SyntheticData(num_samples=32, batch_size=64).train_dataloader()
