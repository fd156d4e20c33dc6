"""Label-free checkpoint selection by RankMe (Garrido et al., ICML 2023, Eq. 1).

Every checkpoint of the given runs embeds the *same* random subset of unlabelled train images; the
one whose backbone features have the highest RankMe is selected. RankMe only ranks runs of one
method (its value depends on the loss and projector), so runs of different heads are refused.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ssl_toolkit.data import DATAMODULES
from ssl_toolkit.data.subset import fixed_subset
from ssl_toolkit.embedding import embed_split
from ssl_toolkit.eval.probe import embed_labelled, knn_probe, labelled
from ssl_toolkit.metrics import rankme
from ssl_toolkit.run.checkpoint import (
    LoadedCheckpoint,
    apply_data_overrides,
    checkpoint_recipe,
    load_checkpoint,
    read_checkpoint,
)
from ssl_toolkit.run.errors import ArgumentError, CheckpointError, DataError

# Loader settings that do not change which images are embedded.
_LOADER_KEYS = ("batch_size", "num_workers")


@dataclass
class Row:
    """One checkpoint's scores; ``knn_top1`` (val top-1, k=200, T=0.07) only with labels."""

    run: Path
    checkpoint: Path
    epoch: int
    step: int
    rankme: float
    rankme_proj: float
    knn_top1: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (paths as strings)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


class ImagesOnly(Dataset):
    """Rows ``indices`` of a labelled dataset as ``(image, -1, index)``: labels never leave it.

    Args:
        dataset: yields ``(uint8 image, label, index)``.
        indices: (n,) positions in ``dataset``.
    """

    def __init__(self, dataset: Dataset, indices: Tensor) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        index = int(self.indices[i])
        return self.dataset[index][0], -1, index


def method_of(recipe: dict[str, Any]) -> str:
    """The method a recipe trains: its head, and the head's loss when it has one (simclr+dcl != simclr)."""
    loss = recipe["head"].get("loss")
    return recipe["head"]["name"] + (f"+{loss['name']}" if isinstance(loss, dict) and "name" in loss else "")


def _copy_rank(path: Path) -> tuple[int, str]:
    # Prefer the periodic checkpoint's name over last.ckpt and best-* copies of the same step.
    return (2 if path.name == "last.ckpt" else 1 if path.name.startswith("best-") else 0, path.name)


def find_checkpoints(run_dirs: list[Path], data_overrides: dict[str, Any] | None = None) -> list[tuple[Path, Path]]:
    """``(run_dir, checkpoint)`` pairs to score, checked to share one method and one data set.

    One checkpoint per ``global_step`` and run: ``last.ckpt`` and ``best-*`` copies are skipped when a
    periodic checkpoint of the same step exists.
    Only metadata is read here (memory-mapped), so a bad set of runs fails before any embedding.

    Raises:
        CheckpointError: a run without checkpoints. ArgumentError: runs of different methods.
        DataError: checkpoints trained on different data.
    """
    found: list[tuple[Path, Path, dict[str, Any]]] = []
    for run_dir in map(Path, run_dirs):
        paths = sorted((run_dir / "checkpoints").glob("*.ckpt"))
        if not paths:
            raise CheckpointError(f"select: {run_dir} has no checkpoints/*.ckpt")
        metas = {p: read_checkpoint(p, mmap=True) for p in paths}
        # One checkpoint per step: last.ckpt and best-* copies duplicate a periodic checkpoint.
        by_step: dict[int, Path] = {}
        for p in sorted(metas, key=_copy_rank):
            by_step.setdefault(int(metas[p].get("global_step", -1)), p)
        metas = {p: metas[p] for p in by_step.values()}
        for p in sorted(metas, key=lambda p: (int(metas[p].get("global_step", -1)), p.name)):
            found.append((run_dir, p, apply_data_overrides(checkpoint_recipe(metas[p], p), data_overrides)))
    first_run, first_path, first = found[0]
    for run_dir, path, recipe in found[1:]:
        if method_of(recipe) != method_of(first):
            raise ArgumentError(
                f"select: {first_run} is {method_of(first)!r} but {run_dir} is {method_of(recipe)!r}; "
                "RankMe only compares runs of the same method"
            )
        a, b = _images_spec(first["data"]), _images_spec(recipe["data"])
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                raise ArgumentError(
                    f"select: data.{key} is {a.get(key)!r} in {first_path} but {b.get(key)!r} in {path}; "
                    "every checkpoint must embed the same images"
                )
    return [(run_dir, path) for run_dir, path, _ in found]


def _images_spec(data: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` keywords that decide which images are loaded, constructor defaults filled in."""
    params = inspect.signature(DATAMODULES[data["name"]]).parameters
    spec = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    return {k: v for k, v in {**spec, **data}.items() if k not in _LOADER_KEYS}


def rank_checkpoints(
    run_dirs: list[Path],
    num_samples: int = 25600,
    seed: int = 0,
    with_labels: bool = False,
    data_overrides: dict[str, Any] | None = None,
    device: str | None = None,
) -> list[Row]:
    """Score every checkpoint of ``run_dirs`` by RankMe; best first (the selected checkpoint).

    RankMe is computed on the backbone features (N, F) and the projector embeddings (N, D) of the
    same ``min(num_samples, N_train)`` train images for every checkpoint (:func:`fixed_subset`);
    the paper uses N = 25,600. Labels are never read unless ``with_labels``, which adds the k-NN
    top-1 (k=200, T=0.07, full train split as bank, val split as queries) for comparison.

    Args:
        run_dirs: run folders, each with ``checkpoints/*.ckpt``, all of one method.
        num_samples: images in the RankMe subset.
        seed: seeds the subset.
        with_labels: also compute the (labelled) k-NN accuracy.
        data_overrides: merged into every recipe's ``data`` section (see ``load_checkpoint``).
        device: where to embed (default: CUDA when available).

    Returns:
        rows sorted by RankMe, highest first (NaN last).
    """
    if num_samples < 1:
        raise ArgumentError(f"--num-samples: must be positive, got {num_samples}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows: list[Row] = []
    loaded: LoadedCheckpoint | None = None
    subset: Tensor | None = None
    for run_dir, path in find_checkpoints(run_dirs, data_overrides):
        loaded = load_checkpoint(path, data_overrides, reuse=loaded)
        module, dm = loaded.module.to(device), loaded.datamodule
        if subset is None:
            subset, total = fixed_subset(len(dm.train_set), num_samples, seed), len(dm.train_set)
        elif len(dm.train_set) != total:  # same data spec, yet other files on disk: not comparable
            raise DataError(f"select: {path} sees {len(dm.train_set)} train images, the first checkpoint {total}")
        loader = DataLoader(ImagesOnly(dm.train_set, subset), batch_size=dm.batch_size, num_workers=dm.num_workers)
        split = embed_split(module, loader, with_proj=True)
        knn = knn_probe(*embed_labelled(module, dm), labelled(dm).num_classes).top1 if with_labels else None
        rows.append(Row(run_dir, path, loaded.epoch, loaded.step, rankme(split.feats), rankme(split.proj), knn))
    return sorted(rows, key=lambda r: (math.isnan(r.rankme), -r.rankme))


def format_table(rows: list[Row], with_labels: bool = False) -> str:
    """A plain-text table of ``rows``; ``*`` marks the selected (first) row."""
    header = ["", "run", "checkpoint", "epoch", "step", "RankMe", "RankMe(proj)"] + (
        ["k-NN top-1"] if with_labels else []
    )
    lines = [header]
    for i, r in enumerate(rows):
        line = ["*" if i == 0 else "", str(r.run), r.checkpoint.name, str(r.epoch), str(r.step)]
        line += [f"{r.rankme:.2f}", f"{r.rankme_proj:.2f}"]
        if with_labels:
            line.append("-" if r.knn_top1 is None else f"{r.knn_top1:.4f}")
        lines.append(line)
    widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)
