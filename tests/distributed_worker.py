"""One rank of a 2-process gloo run on the CPU, started by tests/test_distributed.py.

    python tests/distributed_worker.py CASE RANK WORLD INIT_FILE WORK_DIR

Reads ``WORK_DIR/inputs.pt`` (the global batch), runs CASE on this rank's slice, and writes
``WORK_DIR/rank{RANK}.pt`` with the loss and the gradients of the local inputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from ssl_toolkit.losses import NTXentLoss


def ntxent(inputs: dict, rank: int, world: int) -> dict:
    n = inputs["z_a"].shape[0] // world
    rows = slice(rank * n, (rank + 1) * n)
    z_a = inputs["z_a"][rows].clone().requires_grad_(True)
    z_b = inputs["z_b"][rows].clone().requires_grad_(True)
    loss = NTXentLoss(temperature=inputs["temperature"])(z_a, z_b)
    loss.backward()
    return {"loss": loss.detach(), "grad_a": z_a.grad, "grad_b": z_b.grad}


CASES = {"ntxent": ntxent}


def main() -> None:
    case, rank, world, init_file, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        out = CASES[case](torch.load(work / "inputs.pt"), rank, world)
        torch.save(out, work / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
