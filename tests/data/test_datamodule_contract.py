"""Contract shared by every entry of DATAMODULES (what recipes and callbacks rely on)."""

from __future__ import annotations

import inspect
import typing

import pytest
from lightning.pytorch import LightningDataModule

from ssl_toolkit.data import DATAMODULES, SyntheticData


@pytest.mark.parametrize("name", sorted(DATAMODULES))
def test_plain_typed_constructor(name: str) -> None:
    cls = DATAMODULES[name]
    assert issubclass(cls, LightningDataModule)
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters)  # no *args/**kwargs
    hints = typing.get_type_hints(cls.__init__)  # annotations resolve (recipe type checks need this)
    assert {p.name for p in parameters} <= set(hints)
    assert {"image_size", "batch_size", "num_workers"} <= {p.name for p in parameters}
    for method in ("train_dataloader", "val_dataloader", "heldout_dataloader", "train_eval_dataloader", "setup"):
        assert callable(getattr(cls, method))
    assert isinstance(cls.num_classes, property) and isinstance(cls.num_train_samples, property)


def test_setup_is_idempotent() -> None:
    data = SyntheticData(num_samples=64, num_val_samples=16)
    data.setup("fit")
    train_set = data.train_set
    data.setup("validate")
    assert data.train_set is train_set
