"""The README's recipe-section table lists exactly the registries' names and classes; the Python
examples of README "From Python" and docs/python_api.md run; a number the README states has no second
home in BENCHMARKS.md or docs/ (one home per number: the README links to it instead)."""

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


# A measured or published number: at least two decimals (0.7927, 77.64) or a percentage (78.2%).
NUMBER = re.compile(r"(?<![\w.])(\d+\.\d{2,}|\d+(?:\.\d+)?\s?%)(?![\w.]*\d)")


def stated_numbers(markdown: str) -> set[str]:
    """The numbers of a page's prose and output blocks; yaml, bash and python blocks (settings and
    commands, not results) are left out."""
    prose = re.sub(r"^```(yaml|bash|python)\n.*?^```", "", markdown, flags=re.S | re.M)
    return {m.group(1) for m in NUMBER.finditer(prose)}


def test_stated_numbers_finds_results_not_settings() -> None:
    text = "k-NN 0.7927 and 78.2% (t 0.2, 3 steps, 1e-4)\n```yaml\nlr: 0.35\n```\n```\nval/knn_top1: 0.6894\n```\n"
    assert stated_numbers(text) == {"0.7927", "78.2%", "0.6894"}


def test_readme_numbers_have_one_home() -> None:
    others = [README.parent / "BENCHMARKS.md", *sorted((README.parent / "docs").rglob("*.md"))]
    twice = {
        number: [p.relative_to(README.parent).as_posix() for p in others if number in stated_numbers(p.read_text())]
        for number in stated_numbers(README.read_text())
    }
    assert not {n: pages for n, pages in twice.items() if pages}, "in README.md and elsewhere: link instead"
