"""Every repository path that the code, the tests and the documentation name exists, and the test
files keep one basename each (tests/README.md: where a test file goes).

A named path is a word that starts with one of the repository's top-level folders (``tests/``,
``ssl_toolkit/``, ``tools/``, ``docs/``, ``benchmarks/``, ``recipes/``, ``docker/``) and ends in a
file suffix, e.g. ``tests/run/test_resume.py`` or ``docs/cluster.md``; globs and placeholders
(``<name>``, ``{x}``, ``*``) are not paths. A file moved or deleted without its mentions fails here.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCANNED = ["ssl_toolkit", "tests", "tools", "docs", "benchmarks", "recipes", "docker", "README.md", "BENCHMARKS.md"]
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sh", ".txt", ".cfg", ".toml"}
NAMED = re.compile(
    r"(?<![\w./<>{}*-])((?:tests|ssl_toolkit|tools|docs|benchmarks|recipes|docker)/[\w./-]*\w"
    r"\.(?:py|md|yaml|yml|sh|txt|csv|json|toml|cfg))(?![\w*<>{}])"
)
# Named on purpose though absent here, each with its reason.
NOT_HERE = {
    "tools/select.py": "the file that must not exist (it would shadow the stdlib's select)",
    "docs/methods/mymethod.md": "the placeholder of docs/adding_a_head.md",
    "recipes/x.yaml": "the placeholder recipe of the preemption messages",
    "benchmarks/imagenet/resnet50/dcl.py": "a file of lightly's repository",
    "tools/rankme_experiment.py": "deleted in 3a9763c; the measurement it made is kept as history",
}


def _files() -> list[Path]:
    files = []
    for name in SCANNED:
        root = REPO / name
        files += [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES)
    return [p for p in files if p != Path(__file__).resolve()]  # this file names its exceptions


def test_every_named_repository_path_exists() -> None:
    missing, seen = [], set()
    for path in _files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for named in NAMED.findall(line):
                seen.add(named)
                if named not in NOT_HERE and not (REPO / named).exists():
                    missing.append(f"{path.relative_to(REPO)}:{number}: {named}")
    assert not missing, "named but not in the repository:\n" + "\n".join(missing)
    assert {"tests/run/test_resume.py", "docs/cluster.md"} <= seen  # the scan finds paths at all
    assert set(NOT_HERE) <= seen, set(NOT_HERE) - seen  # an exception no longer needed goes


def test_no_two_test_files_share_a_basename() -> None:
    # tests/ and its folders are not packages: the helpers are imported by basename from sys.path.
    names = Counter(p.name for p in (REPO / "tests").rglob("*.py") if p.name != "__init__.py")
    assert not [name for name, count in names.items() if count > 1]
