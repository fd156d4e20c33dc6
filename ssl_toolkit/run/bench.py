"""``bench``: where the time of a training step goes, on the current device.

* (b) ``step``: the real training step, i.e. ``trainer.fit`` of the recipe's ``SSLModule`` for
  ``warmup + steps + 1`` steps on one batch already in host memory, timed part by part inside the
  step (``run/step_parts.py``: host-to-device copy, augmentation, backbone forward, head + loss
  forward, logging, head backward, backbone backward, hooks, optimizer, Lightning's loop). Each
  part's median and interquartile range over the timed steps, and its share of their total time.
* (a) ``backbone``: the backbone's forward + backward **inside those same steps** (the same
  tensors, the same allocator and thread state), so the overhead of the toolkit,
  ``(step - backbone fwd - backbone bwd) / (backbone fwd + bwd)``, is computed per step and
  cannot be negative; its median and IQR are reported.
* (c) ``loader``: the recipe's train data loader alone (decode, resize, collate, workers); with
  ``loader_only`` nothing else is measured (no model runs), e.g. to compare data layouts.

Throughputs in images/s are images / wall-clock time summed over the timed steps (as ``fit``
reports its rate); the table gives medians and IQRs, which a burst of other work moves less.
``overhead_ratio`` = median of step / (backbone fwd + bwd) = 1 + ``overhead`` (1.0: the toolkit
costs nothing beyond the backbone).
``views_per_image`` = augmented views made of each image (all crops, any size), and
``step_views_s = step_img_s * views_per_image``, as the peer side-by-side
(``benchmarks/peer_lightly.py``, BENCHMARKS.md) reports it.

Before, (a) was a separate loop of backbone forward + backward on a fixed batch of views, run
before (b); docs/benchmarking.md says why that read below 1.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from ssl_toolkit.errors import ArgumentError
from ssl_toolkit.module import SSLModule
from ssl_toolkit.recipe.build import build_parts
from ssl_toolkit.run.step_parts import PARTS, StepParts

MIN_STEPS = 5  # fewer timed steps give no interquartile range worth printing


@dataclass
class Spread:
    """Median and interquartile range (first and third quartile) of one quantity over the timed steps."""

    median: float
    q1: float
    q3: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(median=median, q1=q1, q3=q3)


@dataclass
class BenchResult:
    backbone_img_s: float | None  # None: loader only
    step_img_s: float | None
    loader_img_s: float
    overhead_ratio: float | None  # median over the steps of step / (backbone fwd + bwd), >= 1
    step_views_s: float | None
    views_per_image: int | None
    device: str
    batch_size: int
    views: str  # e.g. "2x32px" or "2x224px+6x96px"; "" when loader only
    precision: str
    loader_workers: int = 0  # data.num_workers of the loader measured
    overhead: Spread | None = None  # (step - backbone fwd - bwd) / (backbone fwd + bwd), per step
    parts_ms: dict[str, Spread] = field(default_factory=dict)  # PARTS keys and "step", in ms
    shares: dict[str, float] = field(default_factory=dict)  # each part's share of the timed steps' total
    steps: int = 0  # timed steps
    warmup: int = 0


def bench_device() -> torch.device:
    """The current device: the first CUDA GPU if there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bench(recipe: dict[str, Any], steps: int = 10, warmup: int = 3, loader_only: bool = False) -> BenchResult:
    """Measure (a), (b), (c) for ``recipe`` (validated, e.g. from ``load_recipe``).

    Args:
        recipe: the recipe dict; its ``trainer.precision`` and ``module`` switches are honoured, its
            accelerator/devices are replaced by one process on ``bench_device()``.
        steps: timed training steps (at least ``MIN_STEPS`` unless ``loader_only``); also the
            timed batches of the loader.
        warmup: untimed steps before them (allocator, cuDNN autotune, compile, workers).
        loader_only: measure (c) only.

    Raises:
        ArgumentError: ``steps`` below ``MIN_STEPS`` (below 1 with ``loader_only``) or ``warmup`` < 0.
    """
    least = 1 if loader_only else MIN_STEPS
    if steps < least or warmup < 0:
        raise ArgumentError(
            f"--steps/--warmup: need steps >= {least} (a median and interquartile range) and warmup >= 0, "
            f"got {steps}, {warmup}"
        )
    device = bench_device()
    pl.seed_everything(int(recipe.get("seed", 0)), verbose=False)
    parts = build_parts(recipe)
    module, data = parts.module, parts.datamodule
    precision = str((recipe.get("trainer") or {}).get("precision", "32-true"))
    loader_img_s, batch = _loader_throughput(data.train_dataloader(), steps, warmup)
    workers = data.num_workers
    batch_size = int(batch[0].shape[0])
    if loader_only:
        return BenchResult(backbone_img_s=None, step_img_s=None, loader_img_s=loader_img_s, overhead_ratio=None,
                           step_views_s=None, views_per_image=None, device="cpu", batch_size=batch_size,
                           views="", precision=precision, loader_workers=workers)  # fmt: skip
    if device.type == "cuda":  # as the real loader does (pin_memory on CUDA)
        batch = tuple(t.pin_memory() for t in batch)
    timer = _fit_steps(module, batch, recipe, device, steps, warmup)
    timed = timer.durations()[warmup:]
    shapes = "+".join(f"{n}x{s}px" for s, n in _count(w for _, w in timer.view_shapes))
    spreads = {k: Spread.of([1000.0 * d[k] for d in timed]) for k in (*PARTS, "step")}
    total = sum(d["step"] for d in timed)
    shares = {k: sum(d[k] for d in timed) / total for k in PARTS}
    backbone = [d["backbone_fwd"] + d["backbone_bwd"] for d in timed]
    overhead = Spread.of([(d["step"] - b) / b for d, b in zip(timed, backbone)])
    step_img_s = batch_size * len(timed) / total  # wall clock over the timed steps, as fit reports it
    return BenchResult(
        backbone_img_s=batch_size * len(timed) / sum(backbone),
        step_img_s=step_img_s,
        loader_img_s=loader_img_s,
        overhead_ratio=1.0 + overhead.median,
        step_views_s=step_img_s * len(timer.view_shapes),
        views_per_image=len(timer.view_shapes),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        batch_size=batch_size,
        views=shapes,
        precision=precision,
        loader_workers=workers,
        overhead=overhead,
        parts_ms=spreads,
        shares=shares,
        steps=len(timed),
        warmup=warmup,
    )


def format_result(result: BenchResult) -> str:
    """The breakdown table, the throughputs, then one JSON line with every field (``backbone_img_s``, ...)."""
    per_worker = f", {result.loader_img_s / result.loader_workers:.1f} per worker" if result.loader_workers else ""
    loader = (
        f"(c) data loader       : {result.loader_img_s:10.1f} images/s ({result.loader_workers} workers{per_worker})"
    )
    if result.step_img_s is None or result.overhead is None:
        return f"batch {result.batch_size}\n{loader}\n" + json.dumps(asdict(result))
    o = result.overhead
    lines = [
        f"device {result.device}, batch {result.batch_size}, views {result.views}, precision {result.precision}, "
        f"{result.steps} timed steps after {result.warmup} warm-up",
        *breakdown_table(result),
        "",
        f"(a) backbone fwd+bwd  : {result.backbone_img_s:10.1f} images/s  (inside the step)",
        f"(b) training step     : {result.step_img_s:10.1f} images/s = {result.step_views_s:.1f} views/s"
        f" ({result.views_per_image} views per image)",
        loader,
        f"overhead              : {o.median:10.3f}  (IQR {o.q1:.3f} - {o.q3:.3f}): (step - backbone fwd - bwd)"
        " / (backbone fwd + bwd), per step",
    ]
    return "\n".join(lines) + "\n" + json.dumps(asdict(result))


def breakdown_table(result: BenchResult) -> list[str]:
    """Markdown table: each part's median and IQR in ms and its share of the timed steps' time."""
    rows = ["| part | median ms | IQR ms | share |", "|---|---:|---:|---:|"]
    for key, label in (*PARTS.items(), ("step", "**step**")):
        s = result.parts_ms[key]
        share = f"{100 * result.shares[key]:.1f}%" if key in result.shares else "100%"
        rows.append(f"| {label} | {s.median:.2f} | {s.q1:.2f} - {s.q3:.2f} | {share} |")
    return rows


def check_outputs(json_path: str | None, markdown_path: str | None) -> dict[str, Path]:
    """The ``--json`` / ``--markdown`` files, checked before any work: their folder must exist and
    a file there must be a regular file (results are appended, nothing is overwritten).

    Raises:
        ArgumentError: one line naming the option and the path.
    """
    outputs = {}
    for option, value in (("--json", json_path), ("--markdown", markdown_path)):
        if value is None:
            continue
        path = Path(value)
        if not path.parent.is_dir():
            raise ArgumentError(f"{option}: folder {path.parent} does not exist")
        if path.exists() and not path.is_file():
            raise ArgumentError(f"{option}: {path} exists and is not a file")
        outputs[option] = path
    return outputs


def write_outputs(result: BenchResult, outputs: dict[str, Path], command: str) -> None:
    """Append ``result`` to the checked output files: one JSON line (with ``command``), or a Markdown
    block (the command, the setting line, the breakdown table, throughputs and overhead)."""
    if "--json" in outputs:
        with outputs["--json"].open("a") as f:
            f.write(json.dumps({"command": command, **asdict(result)}) + "\n")
    if "--markdown" in outputs:
        with outputs["--markdown"].open("a") as f:
            f.write(markdown_block(result, command) + "\n")


def markdown_block(result: BenchResult, command: str) -> str:
    """The result as Markdown, ready to paste into BENCHMARKS.md."""
    head = [f"`ssl-toolkit bench {command}`", ""]
    if result.step_img_s is None or result.overhead is None:
        return "\n".join(
            [*head, f"data loader: {result.loader_img_s:.1f} images/s ({result.loader_workers} workers)", ""]
        )
    o = result.overhead
    return "\n".join([
        *head,
        f"{result.device}, batch {result.batch_size}, views {result.views}, {result.precision}, "
        f"{result.steps} timed steps after {result.warmup} warm-up",
        "",
        *breakdown_table(result),
        "",
        f"step {result.step_img_s:.1f} images/s ({result.step_views_s:.1f} views/s), backbone fwd+bwd in the step "
        f"{result.backbone_img_s:.1f} images/s, loader {result.loader_img_s:.1f} images/s; "
        f"**overhead {o.median:.3f}** (IQR {o.q1:.3f} - {o.q3:.3f})",
        "",
    ])  # fmt: skip


# --- the measurements -----------------------------------------------------------------------------
def _count(values: Iterator[int]) -> list[tuple[int, int]]:
    counts: dict[int, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return list(counts.items())


def _loader_throughput(loader: Any, steps: int, warmup: int) -> tuple[float, tuple[Tensor, ...]]:
    """Images/s of iterating ``loader`` (cycled if short), and its first batch."""
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    first = next(batches)
    for _ in range(max(warmup - 1, 0)):
        next(batches)
    images, start = 0, time.perf_counter()
    for _ in range(steps):
        images += int(next(batches)[0].shape[0])
    return images / (time.perf_counter() - start), tuple(first)


class _Repeat:
    """An iterable of ``count`` references to one batch (a plain list would mean many loaders)."""

    def __init__(self, batch: tuple[Tensor, ...], count: int) -> None:
        self.batch, self.count = batch, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        return itertools.repeat(self.batch, self.count)


class _CachedBatches(pl.LightningDataModule):
    """The same host-memory batch ``count`` times: (b) measures the step, not the loader."""

    def __init__(self, batch: tuple[Tensor, ...], count: int) -> None:
        super().__init__()
        self.batch_size = int(batch[0].shape[0])
        self.batches = _Repeat(batch, count)

    def train_dataloader(self) -> _Repeat:
        return self.batches


def _fit_steps(
    module: SSLModule, batch: tuple[Tensor, ...], recipe: dict[str, Any], device: torch.device, steps: int, warmup: int
) -> StepParts:
    """``trainer.fit`` of the real module for ``warmup + steps + 1`` steps on cached batches, timed
    by ``StepParts`` (a step ends where the next one starts: the last one is not timed)."""
    timer = StepParts(module, device)
    trainer_cfg = dict(recipe.get("trainer") or {})
    kept = ("precision", "gradient_clip_val", "accumulate_grad_batches")  # what changes the step itself
    keep = {k: trainer_cfg[k] for k in kept if k in trainer_cfg}
    count = warmup + steps + 1
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_steps=count,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,  # the step alone: no evaluation
        profiler=timer,
        **keep,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
        warnings.filterwarnings("ignore", message=".*(num_workers|have no `val_dataloader`|log_every_n_steps).*")
        trainer.fit(module, datamodule=_CachedBatches(batch, count))
    return timer
