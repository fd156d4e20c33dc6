"""The README's recipe-section table lists exactly the registries' names and classes; the Python
examples of README "From Python" and docs/python_api.md run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

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


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def from_python_section() -> str:
    """README's "## From Python" section, which must come right after "## Quick start"."""
    headings = re.findall(r"^## (.+)$", README.read_text(), flags=re.M)
    assert headings[headings.index("Quick start") + 1] == "From Python", headings[:4]
    return README.read_text().split("## From Python\n")[1].split("\n## ")[0]


def run_blocks(blocks: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Run the blocks in order in one namespace, from a fresh folder that has the repository's recipes/."""
    (tmp_path / "recipes").symlink_to(README.parent / "recipes")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    return namespace


def test_readme_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(from_python_section())
    assert len(blocks) == 3 and sum(b.count("\n") for b in blocks) <= 30
    ns = run_blocks(blocks, tmp_path, monkeypatch)
    assert ns["result"].checkpoint == Path("runs/tiny_simclr/checkpoints/last.ckpt") and ns["result"].steps == 2
    assert ns["features"].shape == (8, ns["backbone"].feature_dim) == (8, 96)
    assert torch.isfinite(ns["loss"]) and ns["model"].conv1.weight.grad is not None


def test_python_api_page_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    ns = run_blocks(python_blocks((README.parent / "docs" / "python_api.md").read_text()), tmp_path, monkeypatch)
    assert ns["result"].run_dir == Path("runs/api_demo") and ns["run"].step == 2
    assert ns["photo_features"].shape == (1, 96) and ns["logits"].shape == (4, 10)
    assert ns["projections"].shape == (4, 32) and torch.isfinite(ns["loss"])
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "head.loss.temprature: unknown key (known: temperature)"  # the UserError example
