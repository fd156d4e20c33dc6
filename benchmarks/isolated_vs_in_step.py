"""The backbone's forward + backward timed alone (the old ``bench`` (a)) and inside the real step, alternated.

    python benchmarks/isolated_vs_in_step.py ROUNDS CLOCK THREADS RECIPE [key=value ...]

CLOCK ``wall`` (``time.perf_counter``) or ``cpu`` (``time.process_time``: this process's CPU time,
which other jobs on the machine move less). Each round times, in this order: ``in_step`` (the
backbone inside ``trainer.fit``, ``StepParts``), and the isolated loop on one batch of views with
``fixed`` views and ``sum().backward()`` (the old (a)), ``fresh`` views each iteration, a
``dense`` random output gradient, an ``opt`` SGD step, ``keepgrads`` (gradients kept across
iterations). Prints the median seconds per forward + backward of each, and minor page faults per
iteration of the isolated loops.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time

import lightning.pytorch as pl
import torch

from ssl_toolkit.recipe.build import build_parts, load_recipe
from ssl_toolkit.run import bench

KINDS = ("in_step", "fixed", "fresh", "dense", "opt", "keepgrads")


def isolated(module: torch.nn.Module, images: torch.Tensor, kind: str, steps: int = 6, warmup: int = 2) -> tuple:
    """Median seconds and minor page faults per isolated forward + backward of the backbone."""
    backbone, views = module.backbone.train(), module.augment(images)
    opt = torch.optim.SGD(backbone.parameters(), lr=1e-4) if kind == "opt" else None
    seconds, faults = [], []
    for i in range(warmup + steps):
        v = module.augment(images) if kind == "fresh" else views
        f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        feats = module.forward_views(v)
        if kind == "dense":
            torch.autograd.backward(feats, [torch.randn_like(f) for f in feats])
        else:
            torch.cat(feats).float().sum().backward()
        if opt is not None:
            opt.step()
        if kind != "keepgrads":
            backbone.zero_grad(set_to_none=True)
        if i >= warmup:
            seconds.append(time.perf_counter() - t0)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    backbone.zero_grad(set_to_none=True)
    return statistics.median(seconds), statistics.median(faults)


def main(rounds: int, clock: str, threads: int, recipe_path: str, overrides: list[str]) -> None:
    torch.set_num_threads(threads)
    if clock == "cpu":
        time.perf_counter = time.process_time  # every clock read here and in StepParts
    recipe = load_recipe(recipe_path, overrides)
    pl.seed_everything(0, verbose=False)
    parts = build_parts(recipe)
    batch = tuple(next(iter(parts.datamodule.train_dataloader())))
    results: dict[str, list[float]] = {k: [] for k in KINDS}
    for r in range(rounds):
        for kind in KINDS:
            if kind == "in_step":
                steps = bench._fit_steps(parts.module, batch, recipe, torch.device("cpu"), 6, 2).durations()[2:]
                value, faults = statistics.median(d["backbone_fwd"] + d["backbone_bwd"] for d in steps), None
            else:
                value, faults = isolated(parts.module, batch[0], kind)
            results[kind].append(value)
            print(f"round {r} {kind:10s} {value:.3f} s per forward + backward, minor faults {faults}", flush=True)
    print("median over rounds:", {k: round(statistics.median(v), 4) for k, v in results.items()})


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:])
