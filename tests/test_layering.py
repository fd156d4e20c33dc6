"""The package's layering and naming rules, checked on the source tree itself."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "ssl_toolkit"
# Which part of the package may import which. A part is a sub-package (``heads``) or a top-level
# module (``backbone``); it may always import itself. Layers point down only: the training core
# (CORE) never imports the services of the tools (SERVICES), and those never import ``run/``.
CORE: dict[str, set[str]] = {
    # leaves: no import from inside the package
    "backbone": set(), "checks": set(), "distributed": set(), "ema": set(), "metrics": set(),
    "metrics_contrastive": set(), "metrics_spectral": set(), "optim": set(), "rng": set(),
    "sync_batchnorm": set(),
    "diagnostics": {"embedding", "metrics", "metrics_contrastive"},
    "embedding": {"distributed"},
    "process_state": {"distributed"},
    # the families and the module that composes them
    "augment": {"checks", "rng"},
    "data": {"checks", "distributed", "rng"},
    "losses": {"checks", "distributed"},
    "heads": {"checks", "distributed", "ema", "losses"},
    "callbacks": {"checks", "data", "diagnostics", "distributed", "embedding", "metrics", "metrics_contrastive",
                  "metrics_spectral", "rng"},
    "module": {"backbone", "checks", "distributed", "ema", "embedding", "heads", "optim", "process_state"},
}  # fmt: skip
SERVICES: dict[str, set[str]] = {  # used by both eval/ and run/, below them
    "errors": set(),
    "run_folder": {"errors"},
    "recipe": {*CORE, "errors"},
}
MAY_IMPORT: dict[str, set[str]] = {
    **CORE,
    **SERVICES,
    "eval": {*CORE, *SERVICES},  # offline tools over checkpoints
    "run": {*CORE, *SERVICES, "eval"},  # fit, resume, export and the CLI (which dispatches to eval/)
    "api": {*CORE, *SERVICES, "eval", "run"},
    "__init__": {*CORE, *SERVICES, "eval", "run", "api"},  # the package's lazy exports
}


def part_of(module: str) -> str | None:
    """``ssl_toolkit.heads.moco`` -> ``heads``; ``ssl_toolkit`` -> ``__init__``; other packages -> None."""
    names = module.split(".")
    if names[0] != "ssl_toolkit":
        return None
    return names[1] if len(names) > 1 else "__init__"


def imported_modules(path: Path) -> set[str]:
    """Every absolute module an ``import`` / ``from ... import`` names anywhere in the file (relative
    imports resolved), plus strings that are exactly a module path (the package's lazy exports)."""
    package = ".".join(("ssl_toolkit", *path.relative_to(PACKAGE).parent.parts))
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            names.add(".".join([*base, node.module] if node.module else base))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.fullmatch(r"ssl_toolkit(\.\w+)+", node.value):
                names.add(node.value)
    return names


def test_the_table_points_down() -> None:
    below_tools = {*CORE, *SERVICES}
    assert all(deps <= set(CORE) for deps in CORE.values()), "the core imports only the core"
    assert all(deps <= below_tools for deps in SERVICES.values()), "errors/recipe/run_folder import no tool"
    assert "run" not in MAY_IMPORT["eval"] and "eval" in MAY_IMPORT["run"]


PARTS = sorted(PACKAGE.rglob("*.py"))


def test_every_part_has_a_row() -> None:
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PARTS}
    assert {"module", "heads", "recipe", "eval", "run"} <= parts
    missing = sorted(parts - set(MAY_IMPORT))
    assert not missing, f"{missing}: add a row to MAY_IMPORT in tests/test_layering.py (which parts may it import?)"


@pytest.mark.parametrize("path", PARTS, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_imports_follow_the_table(path: Path) -> None:
    part = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    allowed = MAY_IMPORT.get(part, set()) | {part}
    bad = sorted(m for m in imported_modules(path) if part_of(m) is not None and part_of(m) not in allowed)
    assert not bad, f"{path.relative_to(REPO)} imports {bad}: {part}/ may import only {sorted(allowed)}"


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


def test_data_layer_mentions_no_callback() -> None:
    # Data modules offer splits; which images an evaluation needs is declared by the callbacks and
    # planned in callbacks/eval_plan.py. So nothing under data/ may import callbacks/, name one of
    # its classes or the word "callback" (in code, strings or comments), or use the old evaluation
    # roles ("bank", "rankme", "pairs" as strings; eval_plan).
    import io
    import re
    import tokenize

    classes = sorted(
        node.name
        for path in (PACKAGE / "callbacks").glob("*.py")
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.ClassDef)
    )
    assert {"KNNProbe", "RankMe", "Diagnostics", "LinearProbe", "EvalCallback"} <= set(classes)
    words = re.compile(r"\b(" + "|".join(classes) + r"|eval_plan)\b|(?i:\bcallbacks?\b)")
    roles = {"bank", "rankme", "pairs"}

    def violations(source: str, package: str = "ssl_toolkit.data") -> list[str]:
        found = []
        for node in ast.walk(ast.parse(source)):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):  # relative imports resolved against ``package``
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                module = ".".join(part for part in (base, node.module) if part)
                names = [module] + [f"{module}.{alias.name}" for alias in node.names]
            found += [f"imports {n}" for n in names if n.startswith("ssl_toolkit.callbacks")]
            if isinstance(node, ast.Constant) and node.value in roles:
                found.append(f"evaluation role {node.value!r}")
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            hit = (
                words.search(token.string) if token.type in (tokenize.NAME, tokenize.STRING, tokenize.COMMENT) else None
            )
            if hit:
                found.append(f"line {token.start[0]} names {hit.group(0)!r}")
        return found

    # The check catches each kind of mention, and passes plain data code.
    assert violations("from ssl_toolkit.callbacks.eval_plan import plan_evaluation\n")
    assert violations("from ..callbacks import knn\n") and violations("from ssl_toolkit import callbacks\n")
    assert violations("x = 1  # served to KNNProbe\n") and violations('role = "bank"\n')
    assert violations('"""The RankMe rows."""\n') and violations("self.eval_plan = None\n")
    assert not violations("from ssl_toolkit.data.subset import fixed_subset\nrows = 3  # a subset of a split\n")

    bad = {}
    for path in sorted((PACKAGE / "data").rglob("*.py")):
        package = ".".join(("ssl_toolkit",) + path.relative_to(PACKAGE).parts[:-1])
        if found := violations(path.read_text(), package):
            bad[path.relative_to(REPO).as_posix()] = found
    assert not bad, f"data/ must offer splits, not serve callbacks: {bad}"
