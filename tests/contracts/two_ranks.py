"""Launch a contract table's 2-rank gloo worker once and read back what each rank wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def run_two_ranks(worker: Path, out: Path, args: list[str]) -> list[dict]:
    """``python WORKER RANK 2 OUT/init OUT *args`` for ranks 0 and 1; returns ``torch.load(OUT/rank{r}.pt)``."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(r), "2", str(out / "init"), str(out), *args],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for r in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-4000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]
