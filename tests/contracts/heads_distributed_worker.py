"""One rank of the 2-process head contract run (gloo, CPU), started by test_heads_contract.py.

    python tests/contracts/heads_distributed_worker.py RANK WORLD INIT_FILE OUT_DIR NAME [NAME ...]

Builds each head from its table row with the same seed as the 1-process test, runs it on this rank's
rows of the same global batch, and writes ``OUT_DIR/rank{RANK}.pt`` with, per head, the loss and the
gradients of the local features and of the parameters, and the buffers after the step (queues,
centres).
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from contracts.test_heads_contract import build, inputs

from ssl_toolkit.heads import Views


def main(rank: int, world: int, init: str, out: str, names: list[str]) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    results = {}
    for name in names:
        head = build(name)
        views, batch = inputs(name)
        n = views.feats[0].shape[0] // world
        rows = slice(rank * n, (rank + 1) * n)
        feats = [f[rows].clone().requires_grad_(True) for f in views.feats]
        teacher = None if views.teacher is None else [t[rows] for t in views.teacher]
        local = type(batch)(labels=batch.labels[rows], index=batch.index[rows], step=batch.step, epoch=batch.epoch)
        loss = head(Views(feats, teacher=teacher), local).loss
        loss.backward()
        results[name] = {
            "loss": loss.detach(),
            "feat_grads": [f.grad for f in feats],
            "param_grads": {k: p.grad for k, p in head.named_parameters() if p.grad is not None},
            "buffers": {k: b.clone() for k, b in head.named_buffers()},
        }
    torch.save(results, f"{out}/rank{rank}.pt")
    dist.barrier()  # both ranks have written their results
    # Skip interpreter teardown: gloo's threads can abort the exit ('terminate called without an active
    # exception', status -6) after the results are safely written.
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:])
