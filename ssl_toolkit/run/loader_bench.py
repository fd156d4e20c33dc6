"""Throughput of a data loader on its own, measured so that worker start-up and prefetch do not count.

    python -m ssl_toolkit.run.loader_bench RECIPE [key=value ...] [--batches-per-worker N] [--warmup-per-worker N]
    python -m ssl_toolkit.run.loader_bench --known-cost-ms 4 --workers 2 --batch-size 16

The first form measures the recipe's train loader (decode, resize, collate, its ``data.num_workers``);
the second checks the method itself on items that each sleep a known time (the loader can deliver
at most ``workers * 1000 / ms`` items/s). The last line printed is JSON.

The method. A loader with W workers hands batch i to worker i mod W and keeps up to
``prefetch_factor`` batches per worker in flight, so:

* the first ``warmup_per_worker`` batches of every worker are not timed (process start, imports,
  the dataset's pickling, file caches; at least 1: a worker's first batch carries its start-up);
* the clock starts when the last warm-up batch arrives and stops when the
  ``batches_per_worker * W``-th batch after it arrives: a whole number of rounds of every worker,
  timed arrival to arrival, so the batches that were already in flight when the clock started
  (finished during the warm-up) are balanced by those in flight when it stops;
* one pass over one iterator: a loader is never restarted (a new ``iter`` of a non-persistent
  loader starts its workers again), so it must have enough batches (``ValueError`` otherwise).

Timing 3 batches after the first of a loader with 16 workers (what a naive baseline does) times
batches that the other 15 workers prepared while the first one started: on items of 4 ms it reports
tens of thousands of items/s where 2 workers can give at most 500 (``tests/run/test_loader_bench.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


@dataclass(frozen=True)
class LoaderRate:
    """One measurement of ``loader_throughput``.

    Attributes:
        items_s: items (images) per second over the timed batches.
        items: items in the timed batches.
        batches: timed batches (``batches_per_worker * workers``).
        seconds: wall time from the arrival of the last warm-up batch to that of the last timed one.
        workers: the loader's ``num_workers`` (0: loaded in the calling process).
        warmup_batches: batches consumed before the clock started.
    """

    items_s: float
    items: int
    batches: int
    seconds: float
    workers: int
    warmup_batches: int


def _batch_items(batch: Any) -> int:
    """Items in a batch: the leading size of its first tensor (a tensor, or a tuple/list/dict of them)."""
    first = batch
    while not isinstance(first, torch.Tensor):
        if isinstance(first, dict):
            first = next(iter(first.values()))
        elif isinstance(first, (tuple, list)) and first:
            first = first[0]
        else:
            raise TypeError(f"loader_throughput: cannot count the items of a batch of type {type(batch).__name__}")
    return int(first.shape[0])


def loader_throughput(loader: DataLoader, batches_per_worker: int = 8, warmup_per_worker: int = 2) -> LoaderRate:
    """Items/s that ``loader`` delivers in steady state (see the module docstring for the method).

    Args:
        loader: a ``DataLoader`` with at least ``(warmup_per_worker + batches_per_worker) * max(W, 1)``
            batches in one pass (W = ``num_workers``); iterated once, its batches discarded.
        batches_per_worker: timed batches per worker (>= 1). The batches in flight at either end of
            the clock shift the result by at most about one batch per worker, i.e. roughly
            ``1 / batches_per_worker`` relative (8: within about 10%, usually much closer).
        warmup_per_worker: untimed batches per worker first (>= 1: each worker's first batch).

    Returns:
        a ``LoaderRate``.

    Raises:
        ValueError: a count below 1, or a loader with too few batches (the message gives the number).
    """
    if batches_per_worker < 1 or warmup_per_worker < 1:
        raise ValueError(
            f"batches_per_worker, warmup_per_worker: need >= 1 each, got {batches_per_worker}, {warmup_per_worker}"
        )
    workers = int(loader.num_workers)
    rounds = max(workers, 1)
    warmup, timed = warmup_per_worker * rounds, batches_per_worker * rounds
    needed = warmup + timed
    try:
        available = len(loader)
    except TypeError:  # an iterable data set without a length: found out while iterating
        available = None
    if available is not None and available < needed:
        raise ValueError(
            f"loader: {available} batches, the measurement needs {needed} "
            f"(({warmup_per_worker} warm-up + {batches_per_worker} timed) x {rounds} worker(s)); "
            "use more items or fewer batches per worker"
        )
    batches = iter(loader)
    try:
        for _ in range(warmup):
            next(batches)
        start = time.perf_counter()
        items = sum(_batch_items(next(batches)) for _ in range(timed))
        seconds = time.perf_counter() - start
    except StopIteration:
        raise ValueError(f"loader: ended before the {needed} batches the measurement needs") from None
    finally:
        del batches  # shuts the workers down
    return LoaderRate(items_s=items / seconds, items=items, batches=timed, seconds=seconds, workers=workers,
                      warmup_batches=warmup)  # fmt: skip


class KnownCostItems(Dataset):
    """``length`` items of a known cost: each takes ``cost_ms`` milliseconds and is a (3, 4, 4) uint8
    tensor. W workers deliver at most ``W * 1000 / cost_ms`` items/s.

    The cost is a sleep, so CPU load from other processes barely moves it, and one sleep per batch
    (``__getitems__``, which the loader calls with a batch's indices): a sleep overshoots by the
    scheduler's wake-up delay (about 1 ms on a busy machine), once per batch rather than per item.
    """

    def __init__(self, length: int, cost_ms: float) -> None:
        if length < 1 or cost_ms <= 0:
            raise ValueError(f"length, cost_ms: need >= 1 and > 0, got {length}, {cost_ms}")
        self.length, self.cost_ms = int(length), float(cost_ms)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        time.sleep(self.cost_ms * len(indices) / 1000)
        return [torch.full((3, 4, 4), i % 256, dtype=torch.uint8) for i in indices]


def known_cost_check(cost_ms: float, workers: int, batch_size: int, batches_per_worker: int = 8,
                     warmup_per_worker: int = 2) -> dict[str, float | int]:  # fmt: skip
    """``loader_throughput`` on ``KnownCostItems``: the measured and the highest possible rate."""
    rounds = max(workers, 1)
    length = (batches_per_worker + warmup_per_worker) * rounds * batch_size
    loader = DataLoader(KnownCostItems(length, cost_ms), batch_size=batch_size, num_workers=workers)
    rate = loader_throughput(loader, batches_per_worker, warmup_per_worker)
    bound = rounds * 1000.0 / cost_ms
    return {**asdict(rate), "cost_ms": cost_ms, "bound_items_s": bound, "ratio": rate.items_s / bound}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssl_toolkit.run.loader_bench",
        description="Items/s of a recipe's train loader alone, warm-up and each worker's first batches excluded, "
        "a whole number of batches per worker timed arrival to arrival; or (--known-cost-ms) the same method on "
        "items of a known cost. The last line printed is JSON.",
    )
    parser.add_argument("recipe", nargs="?", help="a recipe YAML whose train loader is measured")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dot-list overrides of the recipe")
    parser.add_argument("--batches-per-worker", type=int, default=8, help="timed batches per worker (default: 8)")
    parser.add_argument("--warmup-per-worker", type=int, default=2, help="untimed batches per worker (default: 2)")
    parser.add_argument("--known-cost-ms", type=float, default=None, help="check the method on items of this cost")
    parser.add_argument("--workers", type=int, default=2, help="with --known-cost-ms: loader workers (default: 2)")
    parser.add_argument("--batch-size", type=int, default=16, help="with --known-cost-ms: batch size (default: 16)")
    args = parser.parse_intermixed_args(argv)
    from ssl_toolkit.errors import UserError  # after parsing: --help stays instant

    try:
        if args.known_cost_ms is not None:
            if args.recipe is not None:
                raise ValueError("recipe: give a recipe or --known-cost-ms, not both")
            if args.workers < 0 or args.batch_size < 1:
                raise ValueError(f"--workers, --batch-size: need >= 0 and >= 1, got {args.workers}, {args.batch_size}")
            result = known_cost_check(args.known_cost_ms, args.workers, args.batch_size, args.batches_per_worker,
                                      args.warmup_per_worker)  # fmt: skip
            print(f"known cost {args.known_cost_ms} ms/item, {args.workers} worker(s): {result['items_s']:.1f} items/s "
                  f"measured, at most {result['bound_items_s']:.1f} possible ({result['ratio']:.3f})")  # fmt: skip
        else:
            if args.recipe is None:
                raise ValueError("recipe: give a recipe YAML or --known-cost-ms")
            result = _recipe_loader(args.recipe, args.overrides, args.batches_per_worker, args.warmup_per_worker)
            print(f"{args.recipe}: train loader {result['items_s']:.1f} images/s ({result['workers']} worker(s), "
                  f"{result['batches']} timed batches after {result['warmup_batches']})")  # fmt: skip
    except (UserError, ValueError) as e:
        print(f"loader_bench: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


def _recipe_loader(recipe_path: str, overrides: list[str], batches_per_worker: int,
                   warmup_per_worker: int) -> dict[str, Any]:  # fmt: skip
    from ssl_toolkit.recipe.build import build_parts, load_recipe

    parts = build_parts(load_recipe(recipe_path, overrides))
    return asdict(loader_throughput(parts.datamodule.train_dataloader(), batches_per_worker, warmup_per_worker))


if __name__ == "__main__":
    sys.exit(main())
