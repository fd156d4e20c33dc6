"""Label-free checkpoint selection: RankMe (Garrido et al., ICML 2023, Eq. 1) by default, or any
metric of ``ssl_toolkit.eval.label_free.METRICS`` (LiDAR, alpha-ReQ, ROC-AUC, alignment, uniformity).

Every checkpoint of the given runs embeds the *same* random subset of unlabelled train images (and,
for the metrics that need them, the same augmented views of its first images); the best by the
first metric is selected. These metrics only rank runs of one method (their values depend on the
loss and projector), so runs of different heads are refused.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ssl_toolkit.data import DATAMODULES
from ssl_toolkit.data.subset import fixed_subset
from ssl_toolkit.embedding import embed_split
from ssl_toolkit.errors import ArgumentError, CheckpointError, DataError, RecipeError
from ssl_toolkit.eval.label_free import METRICS, average_ranks, compute, embed_views, selection_key, spearman
from ssl_toolkit.eval.probe import embed_labelled, knn_probe, labelled, linear_probe
from ssl_toolkit.metrics import rankme
from ssl_toolkit.recipe.checkpoint import (
    LoadedCheckpoint,
    apply_data_overrides,
    checkpoint_recipe,
    load_checkpoint,
    read_checkpoint,
)
from ssl_toolkit.run_folder import run_dir_of

# Loader settings that do not change which images are embedded.
_LOADER_KEYS = ("batch_size", "num_workers")


@dataclass
class Row:
    """One checkpoint's scores; ``knn_top1`` (val top-1, k=200, T=0.07) and ``linear_top1`` (val
    top-1 of an L-BFGS linear probe on the frozen train features) only with labels; ``scores`` holds
    the ``--metric`` values by name."""

    run: Path
    checkpoint: Path
    epoch: int
    step: int
    rankme: float
    rankme_proj: float
    knn_top1: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    linear_top1: float | None = None
    num_samples: int | None = None  # images of the subset the metrics were computed on

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (paths as strings)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Row:
        """The row :meth:`as_dict` wrote (``run`` and ``checkpoint`` back to paths)."""
        return cls(**{**record, "run": Path(record["run"]), "checkpoint": Path(record["checkpoint"])})


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


def find_checkpoints(
    run_dirs: list[Path],
    data_overrides: dict[str, Any] | None = None,
    skipped: list[tuple[Path, str]] | None = None,
) -> list[tuple[Path, Path]]:
    """``(run_dir, checkpoint)`` pairs to score, checked to share one method and one data set.

    One checkpoint per ``global_step`` and run: ``last.ckpt`` and ``best-*`` copies are skipped when a
    periodic checkpoint of the same step exists. A checkpoint that cannot be read, or carries no
    usable recipe, is passed over and appended to ``skipped`` with its reason (the others are ranked).
    Only metadata is read here (memory-mapped), so a bad set of runs fails before any embedding.

    Raises:
        CheckpointError: a run without (readable) checkpoints. ArgumentError: runs of different
            methods. DataError: checkpoints trained on different data.
    """
    found: list[tuple[Path, Path, dict[str, Any]]] = []
    for run_dir in map(Path, run_dirs):
        paths = sorted((run_dir / "checkpoints").glob("*.ckpt"))
        if not paths:
            raise CheckpointError(f"select: {run_dir} has no checkpoints/*.ckpt")
        metas, recipes, passed, errors = {}, {}, [], []
        for p in paths:
            try:
                metas[p] = read_checkpoint(p, mmap=True)
                recipes[p] = apply_data_overrides(checkpoint_recipe(metas[p], p), data_overrides)
            except (CheckpointError, RecipeError) as e:
                metas.pop(p, None)
                passed.append((p, _reason(e, p)))
                errors.append(e)
        if skipped is not None:
            skipped.extend(passed)
        if not metas and len(errors) == 1:
            raise errors[0]  # the one file's own line
        if not metas:
            listed = "; ".join(f"{p.name}: {why}" for p, why in passed)
            raise CheckpointError(f"select: {run_dir} has no readable checkpoint ({listed})")
        # One checkpoint per step: last.ckpt and best-* copies duplicate a periodic checkpoint.
        by_step: dict[int, Path] = {}
        for p in sorted(metas, key=_copy_rank):
            by_step.setdefault(int(metas[p].get("global_step", -1)), p)
        metas = {p: metas[p] for p in by_step.values()}
        for p in sorted(metas, key=lambda p: (int(metas[p].get("global_step", -1)), p.name)):
            found.append((run_dir, p, recipes[p]))
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


def _reason(error: Exception, path: Path) -> str:
    """``error``'s message without its ``checkpoint: PATH`` prefix (the reason only)."""
    # An unreadable file: resume's words (empty file, truncated ...).
    short = error.reason if isinstance(error, CheckpointError) else None
    return short or str(error).removeprefix("checkpoint: ").removeprefix(str(path)).lstrip(": ")


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
    metrics: list[str] | None = None,
    num_view_images: int = 1000,
    num_views: int = 8,
    skipped: list[tuple[Path, str]] | None = None,
) -> list[Row]:
    """Score every checkpoint of ``run_dirs``; best by the first of ``metrics`` first (the selection).

    RankMe is always computed on the backbone features (N, F) and the projector embeddings (N, D) of
    the same ``min(num_samples, N_train)`` train images for every checkpoint (:func:`fixed_subset`);
    the paper uses N = 25,600. ``metrics`` (default ``["rankme"]``) are names of
    ``label_free.METRICS``; those that need augmented views (LiDAR, ROC-AUC, alignment, uniformity)
    embed ``num_views`` training-augmentation views of the first ``num_view_images`` images of the
    subset, with the same augmentation draw for every checkpoint. Labels are never read unless
    ``with_labels``, which adds, for comparison, the k-NN top-1 (k=200, T=0.07, full train split as
    bank, val split as queries) and the linear top-1 (``linear_probe``: L-BFGS, 100 iterations,
    weight decay 1e-4, standardized features of the full train split; val split scored), both from
    one embedding of each split.

    Args:
        run_dirs: run folders, each with ``checkpoints/*.ckpt``, all of one method.
        num_samples: images in the subset.
        seed: seeds the subset and the augmentation draw.
        with_labels: also compute the (labelled) k-NN and linear accuracies.
        data_overrides: merged into every recipe's ``data`` section (see ``load_checkpoint``).
        device: where to embed (default: CUDA when available).
        metrics: metric names; the first decides the order.
        num_view_images, num_views: LiDAR's n images x q views (the paper: 1000 x 50).
        skipped: receives ``(checkpoint, reason)`` for each checkpoint passed over (unreadable,
            no usable recipe, non-finite weights or features); the others are ranked.

    Returns:
        rows sorted by the first metric, best first (NaN last); each row's ``num_samples`` is the
        subset size actually used.

    Raises:
        CheckpointError: no checkpoint could be scored.
    """
    skipped = [] if skipped is None else skipped
    metrics = list(metrics or ["rankme"])
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ArgumentError(f"--metric: {unknown[0]!r} is not one of {', '.join(METRICS)}")
    if num_samples < 1:
        raise ArgumentError(f"--num-samples: must be positive, got {num_samples}")
    if num_view_images < 2 or num_views < 2:
        raise ArgumentError(f"--view-images, --views: must be >= 2, got {num_view_images}, {num_views}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows: list[Row] = []
    loaded: LoadedCheckpoint | None = None
    subset: Tensor | None = None
    for run_dir, path in find_checkpoints(run_dirs, data_overrides, skipped):
        try:
            loaded = load_checkpoint(path, data_overrides, reuse=loaded)
        except CheckpointError as e:  # non-finite weights: name it, rank the others
            skipped.append((path, _reason(e, path)))
            continue
        module, dm = loaded.module.to(device), loaded.datamodule
        if subset is None:
            subset, total = fixed_subset(len(dm.train_set), num_samples, seed), len(dm.train_set)
        elif len(dm.train_set) != total:  # same data spec, yet other files on disk: not comparable
            raise DataError(f"select: {path} sees {len(dm.train_set)} train images, the first checkpoint {total}")
        # Own generators: iterating a loader draws its worker seed, never from the global generator.
        loader = DataLoader(ImagesOnly(dm.train_set, subset), batch_size=dm.batch_size, num_workers=dm.num_workers,
                            generator=torch.Generator().manual_seed(seed))  # fmt: skip
        split = embed_split(module, loader, with_proj=True)
        if not (bool(torch.isfinite(split.feats).all()) and bool(torch.isfinite(split.proj).all())):
            skipped.append((path, "its features are NaN/Inf"))
            continue
        views = None
        if any(METRICS[m].needs_views for m in metrics):
            few = ImagesOnly(dm.train_set, subset[:num_view_images])
            few_loader = DataLoader(few, batch_size=dm.batch_size, generator=torch.Generator().manual_seed(seed))
            views = embed_views(module, few_loader, num_views, seed)
        ranks = {"rankme": rankme(split.feats), "rankme_proj": rankme(split.proj)}
        scores = {m: ranks[m] if m in ranks else compute(m, split.feats, split.proj, views) for m in metrics}
        knn = linear = None
        if with_labels:
            train, val = embed_labelled(module, dm)
            classes = labelled(dm).num_classes
            knn, linear = knn_probe(train, val, classes).top1, linear_probe(train, val, classes).top1
        rows.append(Row(run_dir, path, loaded.epoch, loaded.step, ranks["rankme"], ranks["rankme_proj"], knn, scores,
                        linear, num_samples=len(subset)))  # fmt: skip
    if not rows:
        raise CheckpointError(f"select: no checkpoint could be scored ({'; '.join(why for _, why in skipped)})")
    return sorted(rows, key=lambda r: selection_key(metrics[0], r.scores[metrics[0]]))


def judge(rows: list[Row], goodness: list[float]) -> dict[str, Any]:
    """How well ``goodness`` (one value per row, higher = better, e.g. a metric's ``-selection_key``)
    selects among ``rows``: ``selected`` (the checkpoint of its maximum, the first on ties), and
    for each accuracy all rows have (``knn``, ``linear``) ``spearman_<kind>`` (over all rows) and
    ``regret_<kind>`` (best accuracy minus that of the selected row; fractions, 0.01 = 1 point).

    Raises:
        ValueError: ``goodness`` and ``rows`` differ in length, or no rows.
    """
    if not rows or len(goodness) != len(rows):
        raise ValueError(f"judge: needs one goodness value per row, got {len(goodness)} for {len(rows)} rows")
    best = max(range(len(rows)), key=lambda i: goodness[i])
    entry: dict[str, Any] = {"selected": str(rows[best].checkpoint)}
    for kind in ("knn", "linear"):
        accuracy = [getattr(r, f"{kind}_top1") for r in rows]
        if len(rows) >= 2 and all(v is not None for v in accuracy):
            entry[f"spearman_{kind}"] = spearman(goodness, accuracy)
            entry[f"regret_{kind}"] = max(accuracy) - accuracy[best]
    return entry


def metric_report(rows: list[Row]) -> list[dict[str, Any]]:
    """Per metric of ``rows[0].scores``: :func:`judge` of its "better" direction (NaN worst), i.e.
    the checkpoint it selects and, when ``rows`` have accuracies, for k-NN and for linear top-1 its
    Spearman correlation with the accuracy over all rows (``spearman_knn``, ``spearman_linear``)
    and its regret: the best accuracy over the rows minus that of its choice (``regret_knn``,
    ``regret_linear``; fractions, 0.01 = 1 point)."""
    report = []
    for name in rows[0].scores:
        goodness = [-selection_key(name, r.scores[name]) for r in rows]
        report.append({"metric": name, "better": METRICS[name].better, **judge(rows, goodness)})
    return report


def rank_vote(rows: list[Row], names: list[str]) -> list[float]:
    """A combined metric: the mean over ``names`` of each row's rank by that metric (1 = worst,
    ``len(rows)`` = best; ties share their mean rank; NaN values rank worst). Higher is better.

    Ranks make metrics of different scales and directions comparable; they only mean something
    within one set of rows (one method), like the metrics themselves.
    """
    if not names or not rows:
        raise ValueError("rank_vote: needs rows and at least one metric name")
    total = [0.0] * len(rows)
    for name in names:
        for i, r in enumerate(average_ranks([-selection_key(name, r.scores[name]) for r in rows])):
            total[i] += r / len(names)
    return total


def format_table(rows: list[Row], with_labels: bool = False) -> str:
    """A plain-text table of ``rows``; ``*`` marks the selected (first) row. Metrics other than
    RankMe get a column each."""
    extra = [m for m in (rows[0].scores if rows else {}) if m not in ("rankme", "rankme_proj")]
    header = ["", "run", "checkpoint", "epoch", "step", "RankMe", "RankMe(proj)", *extra] + (
        ["k-NN top-1", "linear top-1"] if with_labels else []
    )
    lines = [header]
    for i, r in enumerate(rows):
        line = ["*" if i == 0 else "", str(r.run), r.checkpoint.name, str(r.epoch), str(r.step)]
        line += [f"{r.rankme:.2f}", f"{r.rankme_proj:.2f}", *(f"{r.scores[m]:.4g}" for m in extra)]
        if with_labels:
            line += ["-" if v is None else f"{v:.4f}" for v in (r.knn_top1, r.linear_top1)]
        lines.append(line)
    widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def spearman_text(rho: float) -> str:
    """``+0.83``; for NaN (the metric or the accuracy is the same for every checkpoint: no ranking to
    correlate) ``undefined (ties only)``."""
    return "undefined (ties only)" if math.isnan(rho) else f"{rho:+.2f}"


def format_report(report: list[dict[str, Any]]) -> str:
    """One line per metric: its choice (``run/file``: runs of a sweep have the same file names), and
    with labels its Spearman with k-NN / linear top-1 and its regret in points."""
    lines = []
    for e in report:
        chosen = Path(e["selected"])
        line = f"{e['metric']} ({e['better']} is better): selects {run_dir_of(chosen).name}/{chosen.name}"
        for kind, label in (("knn", "k-NN"), ("linear", "linear")):
            if f"spearman_{kind}" in e:
                rho = spearman_text(e[f"spearman_{kind}"])
                line += f"; {label}: Spearman {rho}, regret {100 * e[f'regret_{kind}']:.2f} points"
        lines.append(line)
    return "\n".join(lines)
