"""Offline linear evaluation as solo-learn's ``main_linear.py`` runs it (the protocol of its offline numbers).

A linear classifier on the frozen backbone, trained on random-resized-crop + flip views of the train
split (a new view of every image in every epoch), scored on the center-crop view of the val split:
SGD with momentum 0.9, batch 256, weight decay 0, 100 epochs, lr x 0.1 after epochs 60 and 80
(solo-learn ``bash_files/linear/imagenet-100/*_linear.sh`` at commit f25dc1f; the lr is per recipe:
SimCLR 1.0, MoCo V2+ 3.0, SwAV 0.15). The state is saved after every epoch and a run continues from
it, drawing the same views and batch order as an uninterrupted run (each epoch's generator is seeded
with ``(seed, epoch)``).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler

from ssl_toolkit.augment import AUGMENTS, SimCLRAugment
from ssl_toolkit.embedding import EmbeddedSplit
from ssl_toolkit.errors import ArgumentError, CheckpointError
from ssl_toolkit.metrics import topk_accuracy


@dataclass
class LinearEvalSettings:
    """solo-learn ``main_linear.py`` settings (``*_linear.sh``: ``--optimizer sgd --scheduler step``).

    Attributes:
        lr: SGD learning rate (not scaled by the batch: solo-learn's linear lr is absolute).
        epochs: passes over the train split.
        batch_size: images per step.
        weight_decay: on the classifier's weight and bias.
        momentum: SGD momentum (solo-learn ``extra_optimizer_args``).
        milestones: epochs after which the lr is multiplied by ``gamma`` (``MultiStepLR``).
        gamma: lr factor at each milestone.
        crop_scale: area range of the training crops (``RandomResizedCrop``; flip with p 0.5).
        seed: seeds the classifier init, the batch order and the crops.
    """

    lr: float = 0.3
    epochs: int = 100
    batch_size: int = 256
    weight_decay: float = 0.0
    momentum: float = 0.9
    milestones: tuple[int, ...] = (60, 80)
    gamma: float = 0.1
    crop_scale: tuple[float, float] = (0.08, 1.0)
    seed: int = 0

    def check(self) -> None:
        """Raises ``ArgumentError`` naming the option of a value out of range."""
        if not self.lr > 0:
            raise ArgumentError(f"--lr: must be > 0, got {self.lr}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ArgumentError(f"--epochs/--batch-size: must be positive, got {self.epochs} and {self.batch_size}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ArgumentError("--weight-decay must be >= 0 and momentum in [0, 1)")
        if list(self.milestones) != sorted(set(self.milestones)) or any(m < 1 for m in self.milestones):
            raise ArgumentError(f"--milestones: must be increasing positive epochs, got {list(self.milestones)}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ArgumentError(f"--crop-scale: must satisfy 0 < min <= max <= 1, got {list(self.crop_scale)}")


@dataclass
class LinearEvalResult:
    """Accuracies in [0, 1] after the last epoch, and one line per epoch."""

    top1: float
    top5: float
    history: list[dict[str, float]] = field(default_factory=list)


def lr_at(settings: LinearEvalSettings, epoch: int) -> float:
    """The lr of ``epoch`` (0-based): ``lr * gamma ** (milestones passed)``."""
    return settings.lr * settings.gamma ** sum(epoch >= m for m in settings.milestones)


def train_linear(
    batches: Callable[[int, torch.Generator], Iterable[tuple[Tensor, Tensor]]],
    val: EmbeddedSplit,
    in_dim: int,
    num_classes: int,
    settings: LinearEvalSettings,
    state_path: Path | None = None,
    stop_after: int | None = None,
    log: Callable[[str], None] = print,
) -> LinearEvalResult:
    """Train ``nn.Linear(in_dim, num_classes)`` on ``batches(epoch, generator)`` (features (B, F), labels
    (B,)) for ``settings.epochs`` epochs, scoring ``val`` (features (N, F), labels (N,)) after each.

    Args:
        batches: one epoch's (features, labels) pairs; draws every random number from ``generator``
            (seeded with ``(seed, epoch)``).
        val: the frozen val features (center crops); scored after every epoch.
        in_dim, num_classes: F and C.
        settings: the protocol.
        state_path: where the state is saved after every epoch (classifier, SGD momentum, history),
            and continued from when it exists.
        stop_after: stop after this many epochs of this call (the state is saved; for tests).
        log: receives one progress line per epoch.

    Raises:
        CheckpointError: ``state_path`` holds a state of other settings or another shape.
    """
    with torch.random.fork_rng(devices=[]):  # nn.Linear's default init (solo-learn's LinearModel), seeded
        torch.manual_seed(settings.seed)
        classifier = nn.Linear(in_dim, num_classes).to(val.feats.device)
    optimizer = torch.optim.SGD(
        classifier.parameters(), lr=lr_at(settings, 0), momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    start, history = 0, []
    if state_path is not None and state_path.is_file():
        state = torch.load(state_path, map_location=val.feats.device, weights_only=True)
        if state["settings"] != _plain(settings) or state["shape"] != [num_classes, in_dim]:
            raise CheckpointError(
                f"{state_path}: a linear evaluation with other settings is stored there; "
                "move it away or pass --out to start another"
            )
        classifier.load_state_dict(state["classifier"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = int(state["epoch"]), list(state["history"])
        log(f"resumed from {state_path} after epoch {start}")
    done = 0
    for epoch in range(start, settings.epochs):
        begin, lr = time.monotonic(), lr_at(settings, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator().manual_seed(settings.seed * 100_003 + epoch)
        total, count = 0.0, 0
        for feats, labels in batches(epoch, generator):
            loss = F.cross_entropy(classifier(feats.float()), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()) * len(labels), count + len(labels)
        with torch.no_grad():
            logits = classifier(val.feats.float())
        top1, top5 = topk_accuracy(logits, val.labels, 1), topk_accuracy(logits, val.labels, 5)
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": total / max(count, 1), "val_top1": top1, "val_top5": top5}
        history.append(row)
        seconds = time.monotonic() - begin
        log(f"epoch {epoch + 1}/{settings.epochs}  lr {lr:.4g}  train loss {row['train_loss']:.4f}  "
            f"val top-1 {top1:.4f}  top-5 {top5:.4f}  ({seconds:.1f} s)")  # fmt: skip
        if state_path is not None:
            _save(state_path, {"settings": _plain(settings), "shape": [num_classes, in_dim], "epoch": epoch + 1,
                               "classifier": classifier.state_dict(), "optimizer": optimizer.state_dict(),
                               "history": history})  # fmt: skip
        done += 1
        if stop_after is not None and done >= stop_after:
            break
    last = history[-1] if history else {"val_top1": math.nan, "val_top5": math.nan}
    return LinearEvalResult(top1=last["val_top1"], top5=last["val_top5"], history=history)


def normalization(augment: dict[str, Any]) -> tuple[list[float], list[float]]:
    """The (mean, std) a recipe's ``augment`` section normalizes with: its keys, else the
    constructor's defaults (the recipe keys are the constructor keywords)."""
    params = inspect.signature(AUGMENTS[augment["name"]]).parameters
    mean = augment.get("mean", params["mean"].default)
    std = augment.get("std", params["std"].default)
    return [float(v) for v in mean], [float(v) for v in std]


def image_batches(
    module: nn.Module,
    dataset: Any,
    settings: LinearEvalSettings,
    mean: Sequence[float],
    std: Sequence[float],
    num_workers: int = 0,
) -> Callable[[int, torch.Generator], Iterator[tuple[Tensor, Tensor]]]:
    """Per epoch: the train split in a shuffled order, each image as a random-resized crop + flip
    (``settings.crop_scale``) at the module's image size, normalized with ``mean``/``std``, through
    the frozen backbone in eval mode (``module.forward_views``, no gradient) -> (features (B, F),
    labels (B,))."""
    view = SimCLRAugment(size=int(module.augment.size), num_views=1, crop_scale=settings.crop_scale, flip_p=0.5,
                         brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, jitter_p=0.0, grayscale_p=0.0,
                         blur_p=0.0, solarize_p=0.0, mean=mean, std=std)  # fmt: skip
    device = next(module.parameters()).device

    def epoch_batches(epoch: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        order_seed = int(torch.randint(2**62, (1,), generator=generator))
        order = RandomSampler(dataset, generator=torch.Generator().manual_seed(order_seed))
        loader = DataLoader(dataset, batch_size=settings.batch_size, sampler=order, num_workers=num_workers,
                            pin_memory=torch.cuda.is_available())  # fmt: skip
        module.eval()
        for images, labels, _ in loader:
            with torch.no_grad():
                x = view(images.to(device, non_blocking=True), generator=generator)[0]
                feats = module.forward_views([x])[0]
            yield feats, torch.as_tensor(labels).long().to(device)

    return epoch_batches


def _plain(settings: LinearEvalSettings) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a kill mid-write leaves the previous epoch's state


def evaluate_checkpoint(
    checkpoint: str | Path,
    settings: LinearEvalSettings,
    data_overrides: dict[str, Any] | None = None,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], Path]:
    """``ssl-toolkit linear``: the protocol on a checkpoint's frozen backbone and its data's labelled
    splits. The state goes to ``<run>/eval/linear-<checkpoint>.state.pt`` (continued when it exists);
    the result to a new ``<run>/eval/linear-<checkpoint>.json`` (never overwritten).

    Returns:
        the record written and its path.

    Raises:
        ArgumentError, CheckpointError, DataError: one line naming the option, file or split.
    """
    from ssl_toolkit.embedding import embed_split
    from ssl_toolkit.errors import DataError
    from ssl_toolkit.eval.probe import labelled
    from ssl_toolkit.recipe.checkpoint import load_checkpoint
    from ssl_toolkit.run_folder import run_dir_of, write_new_json

    settings.check()
    ckpt = Path(checkpoint)
    loaded = load_checkpoint(ckpt, data_overrides)
    loaded.module.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = labelled(loaded.datamodule)
    val = embed_split(loaded.module, data.heldout_dataloader())
    train_set = data.train_eval_dataloader().dataset
    num_classes = int(data.num_classes)
    if int(val.labels.min()) < 0 or int(val.labels.max()) >= num_classes:
        raise DataError(f"val: labels must lie in [0, {num_classes}); is this split labelled?")
    log(f"linear {ckpt} (epoch {loaded.epoch}, step {loaded.step}): {len(train_set)} train images, "
        f"{len(val.labels)} val images, {num_classes} classes")  # fmt: skip
    state_path = run_dir_of(ckpt) / "eval" / f"linear-{ckpt.stem}.state.pt"
    mean, std = normalization(loaded.recipe["augment"])
    batches = image_batches(loaded.module, train_set, settings, mean, std, num_workers=int(data.num_workers))
    result = train_linear(batches, val, val.feats.shape[1], num_classes, settings, state_path, log=log)
    record = {"checkpoint": str(ckpt.resolve()), "epoch": loaded.epoch, "step": loaded.step,
              "linear": _plain(settings), "data_overrides": data_overrides, "num_train": len(train_set),
              "num_val": len(val.labels), "top1": result.top1, "top5": result.top5, "history": result.history,
              "state": str(state_path), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    return record, write_new_json(run_dir_of(ckpt) / "eval" / f"linear-{ckpt.stem}.json", record)
