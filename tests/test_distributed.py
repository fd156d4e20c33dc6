"""1 process vs 2 processes (gloo, CPU) on the same global batch: same loss, same gradients."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("distributed_worker.py")
REPO = Path(__file__).resolve().parent.parent


def run_two_ranks(case: str, inputs: dict, tmp_path: Path) -> list[dict]:
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    init = tmp_path / "init"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), case, str(r), "2", str(init), str(tmp_path)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]


@pytest.mark.distributed
def test_moco_queue_and_gradients_two_processes_equal_one(tmp_path: Path) -> None:
    from ssl_toolkit.heads import BatchInfo, MoCoV2Head, Views

    torch.manual_seed(0)
    b, f = 8, 12  # global batch 8 -> 4 per rank
    kwargs = {"in_dim": f, "hidden_dim": 16, "out_dim": 8, "queue_size": 40}
    head = MoCoV2Head(**kwargs)
    head.queue_index[:3] = torch.tensor([1, 6, 20])  # older keys of samples 1 and 6 are in the queue
    feats = [torch.randn(b, f) for _ in range(2)]
    teacher = [torch.randn(b, f) for _ in range(2)]
    index = torch.arange(b)
    inputs = {"kwargs": kwargs, "state": head.state_dict(), "feats": feats, "teacher": teacher, "index": index}
    ranks = run_two_ranks("mocov2_head", inputs, tmp_path)

    local = [x.clone().requires_grad_(True) for x in feats]
    out = head(Views(local, teacher=teacher), BatchInfo(labels=index, index=index, step=0, epoch=0))
    out.loss.backward()
    torch.testing.assert_close(torch.stack([r["loss"] for r in ranks]).mean(), out.loss.detach())
    for v in range(2):  # DDP averages gradients: each rank's local gradient is 2 x dL/dz of its rows
        torch.testing.assert_close(torch.cat([r["grads"][v] for r in ranks]) / 2, local[v].grad)
    for r in ranks:  # every rank enqueued the keys of the global batch, in the 1-process order
        torch.testing.assert_close(r["queue"], head.queue, rtol=0, atol=0)
        assert torch.equal(r["queue_index"], head.queue_index) and int(r["queue_ptr"]) == 16
