"""Two DDP processes through ``ssl-toolkit fit``, for tests/integration/test_ddp_process_state.py.

    torchrun --standalone --nproc_per_node 2 tests/integration/ddp_process_state_worker.py SWAV_YAML MOCO_YAML OUT_DIR

1. SwAV (per-process queue) for the recipe's steps; 2. the same run resumed (``resume=auto``) for
one more step; 3. MoCo v2 (a queue identical on every process). Every process writes
``OUT_DIR/<fit>-<hook>-rank<r>.pt`` at ``on_train_start`` (after a resume has been restored) and at
``on_train_end``: the head's queue (SwAV: its extra state; MoCo: the buffers) and the names of the
buffers the DDP wrapper broadcasts before each forward (``named_module_buffers``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ssl_toolkit.heads import SwAVHead
from ssl_toolkit.module import SSLModule
from ssl_toolkit.run.cli import main

OUT = Path(sys.argv[3])
FIT = {"name": ""}


def _dump(module: SSLModule, hook: str) -> None:
    head = module.head
    if isinstance(head, SwAVHead):
        queue = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in head.queue.get_extra_state().items()}
    else:  # MoCo
        queue = {name: getattr(head, name).clone() for name in ("queue", "queue_ptr")}
    ddp = module.trainer.strategy.model
    broadcast = sorted(getattr(ddp, "named_module_buffers", {}))
    record = {"queue": queue, "broadcast": broadcast, "step": module.global_step}
    torch.save(record, OUT / f"{FIT['name']}-{hook}-rank{module.global_rank}.pt")


_original_start = SSLModule.on_train_start


def _on_train_start(self: SSLModule) -> None:
    _original_start(self)
    _dump(self, "start")


def _on_train_end(self: SSLModule) -> None:
    _dump(self, "end")


SSLModule.on_train_start = _on_train_start  # type: ignore[method-assign]
SSLModule.on_train_end = _on_train_end  # type: ignore[method-assign]

if __name__ == "__main__":
    torch.set_num_threads(1)
    swav, moco = sys.argv[1], sys.argv[2]
    for name, argv in (("swav", ["fit", swav]), ("swav_resumed", ["fit", swav, "resume=auto", "trainer.max_steps=4"]),
                       ("moco", ["fit", moco])):  # fmt: skip
        FIT["name"] = name
        code = main(argv)
        if code:
            sys.exit(code)
