"""The multi-process launcher (tests/two_processes.py): results in rank order, and a failed or hung
rank ends the run with every rank's stderr instead of a hang."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from two_processes import run_ranks

# A rank-explicit worker without gloo (starts fast): rank 1 fails or hangs as asked, rank 0 waits
# for a file that never comes, as a rank waiting on a collective would.
WORKER = """
import sys, time
rank, world, init, out, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
if mode == "ok":
    import torch
    torch.save({"rank": rank, "world": world}, f"{out}/rank{rank}.pt")
    sys.exit(0)
if rank == 1 and mode == "fail":
    sys.exit("rank 1 says no")
print(f"rank {rank} waiting", file=sys.stderr, flush=True)
time.sleep(600)
"""


@pytest.fixture
def worker(tmp_path: Path) -> Path:
    path = tmp_path / "worker.py"
    path.write_text(WORKER)
    return path


def test_results_come_back_in_rank_order(worker: Path, tmp_path: Path) -> None:
    assert run_ranks(worker, tmp_path / "out", ["ok"], world=3) == [{"rank": r, "world": 3} for r in range(3)]


def test_a_failed_rank_ends_the_run_with_every_rank_stderr(worker: Path, tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(AssertionError) as failure:
        run_ranks(worker, tmp_path / "out", ["fail"], timeout=120)
    assert time.monotonic() - start < 60  # rank 0 was killed, not waited for
    message = str(failure.value)
    assert "a rank failed" in message and "rank 1 says no" in message and "exit status 1" in message
    assert "process 0: exit status -9" in message  # killed while waiting


def test_a_hung_run_ends_at_the_timeout_with_every_rank_stderr(worker: Path, tmp_path: Path) -> None:
    with pytest.raises(AssertionError) as failure:
        run_ranks(worker, tmp_path / "out", ["hang"], timeout=5)
    message = str(failure.value)
    assert "still running after 5 s" in message and "rank 0 waiting" in message and "rank 1 waiting" in message
