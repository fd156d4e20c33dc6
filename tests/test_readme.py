"""The README's recipe-section table lists exactly the registries' names and classes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ssl_toolkit.augment import AUGMENTS
from ssl_toolkit.callbacks import CALLBACKS
from ssl_toolkit.data import DATAMODULES
from ssl_toolkit.heads import HEADS
from ssl_toolkit.losses import LOSSES
from ssl_toolkit.optim import OPTIMIZERS, SCHEDULERS

README = Path(__file__).resolve().parent.parent / "README.md"
REGISTRIES = {"HEADS": HEADS, "LOSSES": LOSSES, "AUGMENTS": AUGMENTS, "DATAMODULES": DATAMODULES,
              "OPTIMIZERS": OPTIMIZERS, "SCHEDULERS": SCHEDULERS, "CALLBACKS": CALLBACKS}  # fmt: skip


def table_row(registry: str) -> list[str]:
    """The cells of the recipe-section table row that names ``(`REGISTRY`)`` in its first cell."""
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and f"(`{registry}`" in cells[0]:
            return cells
    raise AssertionError(f"README.md: no recipe-section table row for {registry}")


@pytest.mark.parametrize("registry", sorted(REGISTRIES))
def test_readme_table_lists_the_registry(registry: str) -> None:
    cells = table_row(registry)
    names = re.findall(r"`([a-z0-9_]+)`", cells[1].split("(or")[0])
    assert names == list(REGISTRIES[registry]), f"README lists {names}, {registry} has {list(REGISTRIES[registry])}"
    classes = re.findall(r"`([A-Za-z0-9_]+)`", cells[2])
    assert [c.__name__ for c in REGISTRIES[registry].values()] == [c for c in classes if c[0].isupper()]
