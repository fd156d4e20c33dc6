"""``ssl-toolkit diagnose``: the diagnostics callback's numbers for saved checkpoints, and one PNG that
compares them (score histograms side by side, AUC, the alignment / uniformity plane)."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ssl_toolkit.callbacks.diagnostics import pairs_request
from ssl_toolkit.callbacks.diagnostics_plot import bin_centers, space_title
from ssl_toolkit.callbacks.eval_plan import request_loader
from ssl_toolkit.diagnostics import SpaceDiagnostics, diagnose, embed_pairs
from ssl_toolkit.eval.probe import check_finite_features
from ssl_toolkit.run_folder import numbered_paths, run_dir_of


@dataclass
class CheckpointDiagnostics:
    """The diagnostics of one checkpoint: ``label`` names it in the table and the PNG."""

    checkpoint: Path
    label: str
    step: int
    epoch: int
    spaces: dict[str, SpaceDiagnostics]


@torch.no_grad()
def diagnose_module(
    module: torch.nn.Module, datamodule: object, num_images: int, seed: int
) -> dict[str, SpaceDiagnostics]:
    """What the ``diagnostics`` callback computes at an evaluation, for ``module`` as it is now.

    The same images (``pairs_request``: ``num_images`` seeded held-out rows), the same chunks
    (``request_loader``: chunks of the recipe's ``batch_size``) and the same seeded views, so a
    checkpoint gives the numbers its run logged at that step (same device and precision).

    Args:
        module: an ``SSLModule`` (its device is used; set to eval mode here, restored after).
        datamodule: its ``ImageDataModule``.
        num_images: N (2 to 4096); seed: the callback's ``seed``.
    """
    loader = request_loader(pairs_request(datamodule, num_images, seed), datamodule)
    was_training = module.training
    module.eval()
    parts = []
    try:
        for chunk in loader:
            feats, proj = embed_pairs(module, chunk.images, chunk.index, seed)
            parts.append((feats, proj, chunk.labels.to(feats.device)))
    finally:
        module.train(was_training)
    feats, proj, labels = (torch.cat(p) for p in zip(*parts))
    check_finite_features(feats, "held-out pairs (backbone)")
    check_finite_features(proj, "held-out pairs (projector)")
    return diagnose(feats, proj, labels if bool((labels >= 0).any()) else None, module.projection_parts)


def labels_for(checkpoints: list[Path]) -> list[str]:
    """Short distinct names: the file stem, prefixed by its run folder when the runs differ."""
    runs = [run_dir_of(c) for c in checkpoints]
    if len(set(runs)) <= 1:
        return [c.stem for c in checkpoints]
    return [f"{r.name}/{c.stem}" for r, c in zip(runs, checkpoints)]


def write_report(results: list[CheckpointDiagnostics], out: Path, num_images: int, seed: int) -> dict[str, Path]:
    """Write ``diagnose.json``, ``diagnose.csv`` and ``diagnose.png`` into the new folder ``out``."""
    out.mkdir(parents=True, exist_ok=False)
    record = {"num_images": num_images, "seed": seed,
              "checkpoints": [{"checkpoint": str(r.checkpoint.resolve()), "label": r.label, "step": r.step,
                               "epoch": r.epoch, "spaces": {k: d.as_dict() for k, d in r.spaces.items()}}
                              for r in results]}  # fmt: skip
    paths = {"json": out / "diagnose.json", "csv": out / "diagnose.csv", "png": out / "diagnose.png"}
    paths["json"].write_text(json.dumps(record, indent=2) + "\n")
    rows = [{"checkpoint": r.label, "step": r.step, "epoch": r.epoch, "space": space, **d.row()}
            for r in results for space, d in r.spaces.items()]  # fmt: skip
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_checkpoints(results, paths["png"])
    return paths


def plot_checkpoints(results: list[CheckpointDiagnostics], path: Path) -> Path:
    """One PNG comparing checkpoints.

    Rows ``proj`` (projector embeddings) and ``feat`` (backbone features), one column per
    checkpoint: the positive and negative cosine histograms, with the AUC in the title. A last
    column: the AUC of each checkpoint (top) and the alignment / uniformity plane of the projector
    embeddings with the checkpoints as labelled points (bottom; lower-left is better on both axes).
    """
    spaces = ["proj", "feat"]
    k = len(results)
    fig = Figure(figsize=(3.2 * k + 5.0, 7.0), layout="constrained")
    grid = fig.add_gridspec(2, k + 1, width_ratios=[1.0] * k + [1.6])
    for col, r in enumerate(results):
        for row, space in enumerate(spaces):
            ax = fig.add_subplot(grid[row, col])
            d = r.spaces[space]
            x = bin_centers(len(d.pos_hist))
            width = x[1] - x[0]
            ax.bar(x, d.neg_hist, width=width, color="C3", alpha=0.55, label="negatives")
            ax.bar(x, d.pos_hist, width=width, color="C0", alpha=0.55, label="positives")
            ax.set_xlim(-1, 1)
            ax.set_title(f"{r.label}\n{space_title(space)}: AUC {d.auc:.3f}", fontsize=9)
            if row == 1:
                ax.set_xlabel("cosine similarity")
            if col == 0:
                ax.set_ylabel("fraction of pairs")
                ax.legend(fontsize=8, loc="upper left")
    ax_auc = fig.add_subplot(grid[0, k])
    pos = np.arange(k)
    for i, space in enumerate(spaces):
        ax_auc.bar(pos + (i - 0.5) * 0.38, [r.spaces[space].auc for r in results], width=0.38,
                   color=f"C{i}", label=space_title(space))  # fmt: skip
    ax_auc.set_xticks(pos, [r.label for r in results], rotation=30, ha="right", fontsize=8)
    lowest = min(r.spaces[space].auc for r in results for space in spaces)
    ax_auc.set(title="ROC-AUC, positives vs pooled negatives", ylim=(min(0.5, lowest - 0.02), 1.0))
    ax_auc.legend(fontsize=8, loc="lower right")
    ax_au = fig.add_subplot(grid[1, k])
    al = [r.spaces["proj"].alignment for r in results]
    un = [r.spaces["proj"].uniformity for r in results]
    ax_au.plot(al, un, color="0.7", lw=0.8, zorder=1)
    ax_au.scatter(al, un, c=[f"C{i % 10}" for i in range(k)], zorder=2)
    for r, a, u in zip(results, al, un):
        ax_au.annotate(r.label, (a, u), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax_au.set(title="projector: alignment vs uniformity", xlabel="alignment (lower = positives closer)",
              ylabel="uniformity (lower = more spread)")  # fmt: skip
    fig.suptitle(f"diagnostics of {k} checkpoint(s), {results[0].spaces['proj'].num_images} image pairs")
    fig.savefig(path, dpi=100)
    return path


def default_out(checkpoints: list[Path]) -> Path:
    """``<run of the first checkpoint>/diagnose``, or the first free ``diagnose_1``, ``diagnose_2``..."""
    return next(p for p in numbered_paths(run_dir_of(checkpoints[0]) / "diagnose") if not os.path.exists(p))
