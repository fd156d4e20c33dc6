"""The package's layering and naming rules, checked on the source tree itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "ssl_toolkit"
PLUMBING = ("ssl_toolkit.run", "ssl_toolkit.eval")  # the only places that know recipes / offline tools
# The Python API sits above everything (it calls run/'s loaders and fit); __init__ exports it lazily.
FACADE = {PACKAGE / "api.py", PACKAGE / "__init__.py"}
CORE_FILES = sorted(
    p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in ("run", "eval") and p not in FACADE
)


def imported_modules(path: Path) -> set[str]:
    """Every absolute module an ``import`` / ``from ... import`` names anywhere in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_files_are_found() -> None:
    names = {p.relative_to(PACKAGE).as_posix() for p in CORE_FILES}
    assert {"module.py", "backbone.py", "heads/base.py", "losses/ntxent.py", "callbacks/knn.py"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_core_never_imports_run_or_eval(path: Path) -> None:
    bad = sorted(m for m in imported_modules(path) if m.startswith(PLUMBING))
    assert not bad, f"{path.relative_to(REPO)} imports {bad}: the training core must not depend on run/ or eval/"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_nothing_below_the_api_imports_it(path: Path) -> None:
    if path == PACKAGE / "__init__.py":
        return  # the package's lazy exports are the one place that names it
    tree = ast.parse(path.read_text(), filename=str(path))
    via_package = [  # `from ssl_toolkit import fit` / `import api` reach it through __init__
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "ssl_toolkit" and node.level == 0
        for alias in node.names
    ]
    assert "ssl_toolkit.api" not in imported_modules(path), f"{path.relative_to(REPO)} imports the top-level API"
    assert not via_package, f"{path.relative_to(REPO)} imports {via_package} from the top-level package"


def test_import_ssl_toolkit_loads_nothing_heavy() -> None:
    # The API's names are imported on first use: `import ssl_toolkit` (and a CLI's --help) stays instant.
    code = "import sys, ssl_toolkit; print(sorted(m for m in ('torch', 'lightning', 'timm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]"


def test_no_module_is_named_after_a_standard_library_module() -> None:
    clashes = sorted(
        p.relative_to(REPO).as_posix()
        for p in PACKAGE.rglob("*")
        if (p.suffix == ".py" or p.is_dir()) and p.stem in sys.stdlib_module_names
    )
    assert not clashes, clashes
    out = subprocess.run([sys.executable, "-c", "import select, ssl_toolkit; print(select.__file__)"],
                         capture_output=True, text=True, check=True, cwd=PACKAGE).stdout  # fmt: skip
    assert "ssl_toolkit" not in out


def test_the_repository_refers_to_nothing_outside_it() -> None:
    words = ("DESIGN.md", "methods.md", "shared/")
    roots = [REPO / d for d in ("ssl_toolkit", "recipes", "tools", "docs")] + [REPO / "README.md"]
    hits = [
        f"{p.relative_to(REPO)}: {w}"
        for root in roots
        for p in ([root] if root.is_file() else sorted(root.rglob("*")))
        if p.is_file() and p.suffix in (".py", ".md", ".yaml", ".sh", ".txt")
        for w in words
        if w in p.read_text(errors="replace")
    ]
    assert not hits, hits
