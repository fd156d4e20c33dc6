"""Every ``>>>`` example in a docstring of the package runs and prints what it says (doctest)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest
import torch

import ssl_toolkit

REPO = Path(__file__).resolve().parent.parent
# The package itself (its docstring shows the registries) and every module in it.
MODULES = ["ssl_toolkit", *sorted(m.name for m in pkgutil.walk_packages(ssl_toolkit.__path__, "ssl_toolkit."))]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _examples(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, name, globs={**vars(module), "torch": torch})
    return [t for t in tests if t.examples]


WITH_EXAMPLES = [name for name in MODULES if _examples(name)]


def test_the_package_has_examples() -> None:
    # A finder that silently found nothing would make the test below vacuous.
    assert len(WITH_EXAMPLES) >= 10, WITH_EXAMPLES


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As a user at the repository root would run them (the Python API's examples train
    # recipes/tiny/simclr.yaml), in a fresh folder: their runs/ go to tmp_path.
    (tmp_path / "recipes").symlink_to(REPO / "recipes")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in _examples(name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name} (output above)"
