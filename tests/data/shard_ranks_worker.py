"""One process of a 2-process gloo run over WebDataset shards, started by tests/data/test_shards.py
(through ``two_processes.run_ranks``).

    python tests/data/shard_ranks_worker.py RANK WORLD INIT_FILE OUT_DIR SHARD_PATTERN

Iterates two epochs of ``WebDatasetData.train_dataloader()`` (2 loader workers) and writes
``OUT_DIR/rank{RANK}.pt``: the sample indices of each epoch, in the order this process saw them
(``epochs``), and the number of batches per epoch (``batches``).
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from ssl_toolkit.data import WebDatasetData

if __name__ == "__main__":
    rank, world, init, out, pattern = sys.argv[1:6]
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=int(rank), world_size=int(world))
    data = WebDatasetData(pattern, image_size=8, batch_size=3, num_workers=2, shuffle_buffer=4)
    loader = data.train_dataloader()
    epochs = [[int(i) for batch in loader for i in batch[2]] for _ in range(2)]
    torch.save({"epochs": epochs, "batches": len(loader)}, f"{out}/rank{rank}.pt")
    dist.barrier()  # both ranks have written their results
    # Skip interpreter teardown: gloo's threads can abort the exit ('terminate called without an active
    # exception', status -6) after the results are safely written.
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)
