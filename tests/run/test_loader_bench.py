"""The loader baseline measured against items of a known cost (a 4 ms sleep each)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time

import pytest
from torch.utils.data import DataLoader

from conftest import REPO
from ssl_toolkit.run.loader_bench import KnownCostItems, known_cost_check, loader_throughput, main


@pytest.mark.parametrize("workers", [0, 2])
def test_rate_is_within_10_percent_of_the_known_cost(workers: int) -> None:
    # 4 ms per item: W workers give at most W * 250 items/s (1 worker's worth when loading in-process).
    result = known_cost_check(cost_ms=4.0, workers=workers, batch_size=16)
    bound = max(workers, 1) * 250.0
    assert result["bound_items_s"] == bound
    assert 0.9 * bound <= result["items_s"] <= 1.02 * bound, result
    assert result["batches"] == 8 * max(workers, 1) and result["warmup_batches"] == 2 * max(workers, 1)


def test_a_naive_measurement_of_the_same_items_is_far_off() -> None:
    # What a baseline that times 3 batches after the first of a 4-batch loader with 16 workers
    # reports: batches the other workers finished while the first one started count as free.
    loader = DataLoader(KnownCostItems(4 * 64, 4.0), batch_size=64, num_workers=16)
    it = iter(loader)
    next(it)
    start, count = time.perf_counter(), 0
    for batch in itertools.islice(it, 3):
        count += batch.shape[0]
    naive = count / (time.perf_counter() - start)
    del it
    # The 4 items/ms the 16 workers could give at most, and the 500 that 2 cores really give: the
    # naive figure is far above the first (measured 6,500-60,000 depending on the machine's load).
    assert naive > 16 * 250.0
    with pytest.raises(ValueError, match=r"loader: 4 batches, the measurement needs 160"):
        loader_throughput(loader)  # the method refuses a loader too short for 16 workers


def test_bad_counts_are_refused() -> None:
    loader = DataLoader(KnownCostItems(8, 1.0), batch_size=2)
    with pytest.raises(ValueError, match="batches_per_worker, warmup_per_worker: need >= 1"):
        loader_throughput(loader, warmup_per_worker=0)


def test_command_line_help_and_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "ssl_toolkit.run.loader_bench", "--help"], capture_output=True,
                          text=True, cwd=REPO, timeout=60)  # fmt: skip
    assert done.returncode == 0 and "--known-cost-ms" in done.stdout and "--batches-per-worker" in done.stdout
    assert main(["--known-cost-ms", "2", "--workers", "0", "--batches-per-worker", "4"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["bound_items_s"] == 500.0 and result["batches"] == 4 and result["items"] == 64


def test_bad_arguments_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert capsys.readouterr().err == "loader_bench: error: recipe: give a recipe YAML or --known-cost-ms\n"
    assert main(["--known-cost-ms", "4", "--batch-size", "0"]) == 2
    assert "--workers, --batch-size" in capsys.readouterr().err
    assert main(["missing.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("loader_bench: error:") and "missing.yaml" in err and err.count("\n") == 1
