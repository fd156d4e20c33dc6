"""One rank of the 2-process loss contract run (gloo, CPU), started by test_losses_contract.py.

    python tests/contracts/losses_distributed_worker.py RANK WORLD INIT_FILE OUT_DIR

Runs every loss of the contract table on this rank's rows of the same global batch and writes
``OUT_DIR/rank{RANK}.pt`` with, per loss, the loss and the gradients of the local projections.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from contracts.test_losses_contract import CASES, call_loss, projections

from ssl_toolkit.losses import LOSSES


def main(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    results = {}
    for name, kwargs in CASES.items():
        z_a, z_b = projections()
        n = z_a.shape[0] // world
        rows = slice(rank * n, (rank + 1) * n)
        a, b = z_a[rows].clone().requires_grad_(True), z_b[rows].clone().requires_grad_(True)
        loss = call_loss(LOSSES[name](**kwargs), a, b)
        loss.backward()
        results[name] = {"loss": loss.detach(), "grad_a": a.grad, "grad_b": b.grad}
    torch.save(results, f"{out}/rank{rank}.pt")
    dist.barrier()  # both ranks have written their results
    # Skip interpreter teardown: gloo's threads can abort the exit ('terminate called without an active
    # exception', status -6) after the results are safely written.
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
