"""``bench``: what the toolkit costs on top of the bare backbone, on the current device.

Three throughputs in images/s, warm-up steps excluded. On CUDA: the mean over the timed steps, the
device synchronized only at both ends (steps still overlap as in training). On the CPU: from the
median step time, which a burst of other work on a shared machine does not move:

* (a) ``backbone``: forward + backward of the backbone alone on one batch's augmented views, one
  call per resolution group (the views the recipe's augment produces, same precision and memory
  format as training); no augmentation, head, optimizer or data loading.
* (b) ``step``: the real training step, i.e. ``trainer.fit`` of the recipe's ``SSLModule`` for a few
  steps on batches already in host memory: host-to-device copy, augmentation, backbone, head,
  loss, backward, optimizer and scheduler step, EMA/head hooks and logging.
* (c) ``loader``: the recipe's train data loader alone (decode, resize, collate, workers); with
  ``loader_only`` nothing else is measured (no model runs), e.g. to compare data layouts.

``overhead_ratio`` = time of (b) / time of (a) = ``backbone_img_s / step_img_s`` (1.0 = the toolkit
costs nothing beyond the backbone).

``views_per_image`` = augmented views made of each image (all crops, any size), and
``step_views_s = step_img_s * views_per_image``: the training throughput in views/s and images/s, as
the peer side-by-side (``benchmarks/peer_lightly.py``, BENCHMARKS.md) reports it.
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from ssl_toolkit.module import SSLModule
from ssl_toolkit.run.errors import ArgumentError
from ssl_toolkit.run.recipe import build_parts

AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@dataclass
class BenchResult:
    backbone_img_s: float | None  # None: loader only
    step_img_s: float | None
    loader_img_s: float
    overhead_ratio: float | None
    step_views_s: float | None
    views_per_image: int | None
    device: str
    batch_size: int
    views: str  # e.g. "2x32px" or "2x224px+6x96px"; "" when loader only
    precision: str
    loader_workers: int = 0  # data.num_workers of the loader measured


def bench_device() -> torch.device:
    """The current device: the first CUDA GPU if there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bench(recipe: dict[str, Any], steps: int = 10, warmup: int = 3, loader_only: bool = False) -> BenchResult:
    """Measure (a), (b), (c) for ``recipe`` (validated, e.g. from ``load_recipe``).

    Args:
        recipe: the recipe dict; its ``trainer.precision`` and ``module`` switches are honoured, its
            accelerator/devices are replaced by one process on ``bench_device()``.
        steps: timed iterations of each measurement.
        warmup: untimed iterations before them (allocator, cuDNN autotune, compile, workers).
        loader_only: measure (c) only.
    """
    if steps < 1 or warmup < 0:
        raise ArgumentError(f"--steps/--warmup: need steps >= 1 and warmup >= 0, got {steps}, {warmup}")
    device = bench_device()
    pl.seed_everything(int(recipe.get("seed", 0)), verbose=False)
    parts = build_parts(recipe)
    module, data = parts.module, parts.datamodule
    precision = str((recipe.get("trainer") or {}).get("precision", "32-true"))
    loader_img_s, batch = _loader_throughput(data.train_dataloader(), steps, warmup)
    workers = int(getattr(data, "num_workers", 0))
    if loader_only:
        return BenchResult(backbone_img_s=None, step_img_s=None, loader_img_s=loader_img_s, overhead_ratio=None,
                           step_views_s=None, views_per_image=None, device="cpu", batch_size=int(batch[0].shape[0]),
                           views="", precision=precision, loader_workers=workers)  # fmt: skip
    module.to(device)
    sizes = {"sizes": batch[3].to(device)} if len(batch) > 3 else {}  # whole images (data.whole_image)
    views = module.augment(batch[0].to(device), **sizes)
    shapes = "+".join(f"{n}x{s}px" for s, n in _count(v.shape[-1] for v in views))
    views_per_image = len(views)
    if device.type == "cuda":  # as the real loader does (pin_memory on CUDA)
        batch = tuple(t.pin_memory() for t in batch)
    backbone_img_s = _backbone_throughput(module, views, precision, steps, warmup)
    step_img_s = _step_throughput(module, batch, recipe, device, steps, warmup)
    return BenchResult(
        backbone_img_s=backbone_img_s,
        step_img_s=step_img_s,
        loader_img_s=loader_img_s,
        overhead_ratio=backbone_img_s / step_img_s,
        step_views_s=step_img_s * views_per_image,
        views_per_image=views_per_image,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        batch_size=int(batch[0].shape[0]),
        views=shapes,
        precision=precision,
        loader_workers=workers,
    )


def format_result(result: BenchResult) -> str:
    """Human-readable lines, then one JSON line with every field (``backbone_img_s``, ...)."""
    import json

    per_worker = f", {result.loader_img_s / result.loader_workers:.1f} per worker" if result.loader_workers else ""
    loader = (
        f"(c) data loader      : {result.loader_img_s:10.1f} images/s ({result.loader_workers} workers{per_worker})"
    )
    if result.step_img_s is None:
        return f"batch {result.batch_size}\n{loader}\n" + json.dumps(asdict(result))
    lines = [
        f"device {result.device}, batch {result.batch_size}, views {result.views}, precision {result.precision}",
        f"(a) backbone fwd+bwd : {result.backbone_img_s:10.1f} images/s",
        f"(b) training step    : {result.step_img_s:10.1f} images/s = {result.step_views_s:.1f} views/s"
        f" ({result.views_per_image} views per image)",
        loader,
        f"overhead (b)/(a)     : {result.overhead_ratio:10.3f}  (time per image of the step / of the backbone)",
    ]
    return "\n".join(lines) + "\n" + json.dumps(asdict(result))


# --- the three measurements -----------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(stamps: list[float], images_per_step: int, device: torch.device) -> float:
    """Images/s from the clock read before each timed step and after the last one (N + 1 stamps)."""
    steps = [b - a for a, b in itertools.pairwise(stamps)]
    if device.type == "cpu":
        return images_per_step / statistics.median(steps)
    return images_per_step * len(steps) / (stamps[-1] - stamps[0])


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


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = AUTOCAST.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _backbone_throughput(module: SSLModule, views: list[Tensor], precision: str, steps: int, warmup: int) -> float:
    """(a): backbone forward + backward, nothing else: ``SSLModule.forward_views`` (one backbone
    call per resolution group, channels-last when the module uses it), as in a training step."""
    module.backbone.train()
    device, batch = views[0].device, views[0].shape[0]

    def step() -> None:
        with _autocast(device, precision):
            feats = module.forward_views(views)
        torch.cat(feats).float().sum().backward()
        module.backbone.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    _sync(device)
    stamps = [time.perf_counter()]
    for _ in range(steps):
        step()
        stamps.append(time.perf_counter())
    _sync(device)
    stamps[-1] = time.perf_counter()
    return _rate(stamps, batch, device)


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


class _StepTimer(pl.Callback):
    """Clock read at the start of every step from ``warmup`` on and at the end of training; the
    device is synchronized at the first and the last read only."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.stamps, self.batch_size = warmup, [], 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            _sync(pl_module.device)
        if batch_idx >= self.warmup:
            self.stamps.append(time.perf_counter())
            self.batch_size = int(batch[1].shape[0])

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        _sync(pl_module.device)
        self.stamps.append(time.perf_counter())


def _step_throughput(
    module: SSLModule, batch: tuple[Tensor, ...], recipe: dict[str, Any], device: torch.device, steps: int, warmup: int
) -> float:
    """(b): ``trainer.fit`` of the real module for ``warmup + steps`` steps on cached batches."""
    timer = _StepTimer(warmup)
    trainer_cfg = dict(recipe.get("trainer") or {})
    kept = ("precision", "gradient_clip_val", "accumulate_grad_batches")  # what changes the step itself
    keep = {k: trainer_cfg[k] for k in kept if k in trainer_cfg}
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_steps=warmup + steps,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,  # the step alone: no evaluation
        callbacks=[timer],
        **keep,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
        warnings.filterwarnings("ignore", message=".*(num_workers|have no `val_dataloader`|log_every_n_steps).*")
        trainer.fit(module, datamodule=_CachedBatches(batch, warmup + steps))
    return _rate(timer.stamps, timer.batch_size, device)
