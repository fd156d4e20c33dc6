"""The loader baseline against items of a known cost (4 ms each), next to the old gpu_check.sh method.

    PYTHONPATH=. python benchmarks/loader_baseline_check.py

The old method: a 4-batch loader (1024 items, batch 256) fed by 16 workers, the first batch untimed,
the other 3 timed; it counts batches the other workers prepared while the first one started.
``known_cost_check``: ``ssl_toolkit.run.loader_bench.loader_throughput`` on W = 2 and 4 workers.
W workers can deliver at most W x 250 items/s.
"""

from __future__ import annotations

import time

from torch.utils.data import DataLoader

from ssl_toolkit.run.loader_bench import KnownCostItems, known_cost_check


def old_method(workers: int = 16) -> float:
    loader = DataLoader(KnownCostItems(1024, 4.0), batch_size=256, num_workers=workers, persistent_workers=True)
    batches = iter(loader)
    next(batches)
    start, count = time.perf_counter(), 0
    for batch in batches:
        count += batch.shape[0]
    return count / (time.perf_counter() - start)


if __name__ == "__main__":
    print(f"old gpu_check method, 16 workers: {old_method():.0f} items/s; at most {16 * 250}")
    for w in (2, 4):
        r = known_cost_check(4.0, w, 16)
        print(f"loader_throughput, {w} workers: {r['items_s']:.1f} items/s of at most {r['bound_items_s']:.0f} "
              f"({r['ratio']:.3f})")  # fmt: skip
