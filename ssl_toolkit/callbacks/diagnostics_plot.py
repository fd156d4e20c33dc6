"""The diagnostics of one run as one PNG: score distributions of every evaluation overlaid, and AUC."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure  # object API: no pyplot, no global backend switch

SPACE_TITLES = {"proj": "projector embeddings", "feat": "backbone features"}


def is_detail(key: str) -> bool:
    """Whether logged metric ``key`` is one of the diagnostics' details (every ``val/diag_*`` but the
    AUCs): logged and in ``quantiles.csv``, left out of the printed evaluation lines and summary."""
    return key.startswith("val/diag_") and not key.endswith("_auc")


def bin_centers(bins: int) -> np.ndarray:
    """Centres of ``bins`` equal bins over cosine similarity [-1, 1]."""
    edges = np.linspace(-1.0, 1.0, bins + 1)
    return (edges[:-1] + edges[1:]) / 2


def space_title(space: str) -> str:
    return SPACE_TITLES.get(space, space.replace("proj_head", "projection head "))


def plot_run(history: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Write the run's diagnostics PNG to ``path`` and return it.

    One panel per embedding space (projector, backbone, AMCL heads): the positive (solid) and
    negative (dashed) cosine-similarity distributions of every evaluation, coloured by its step
    (dark = early, yellow = late); a last panel: the pooled ROC-AUC of each space against the step.

    Args:
        history: per evaluation ``{"step", "epoch", "spaces": {space: SpaceDiagnostics.as_dict()}}``.
        path: output PNG.
        title: figure title (e.g. the run folder name).
    """
    spaces = list(history[-1]["spaces"]) if history else ["proj", "feat"]
    fig = Figure(figsize=(4.6 * (len(spaces) + 1), 4.0), layout="constrained")
    axes = fig.subplots(1, len(spaces) + 1, squeeze=False)[0]
    steps = [r["step"] for r in history]
    norm = Normalize(min(steps, default=0), max(max(steps, default=1), min(steps, default=0) + 1))
    cmap = colormaps["viridis"]
    for ax, space in zip(axes, spaces):
        for record in history:
            d = record["spaces"].get(space)
            if d is None:
                continue
            color = cmap(norm(record["step"]))
            x = bin_centers(len(d["pos_hist"]))
            ax.plot(x, d["pos_hist"], color=color, lw=1.2)
            ax.plot(x, d["neg_hist"], color=color, lw=1.2, ls="--")
        ax.set(title=space_title(space), xlabel="cosine similarity of two views", ylabel="fraction of pairs",
               xlim=(-1, 1))  # fmt: skip
        ax.plot([], [], color="0.3", label="positives (same image)")
        ax.plot([], [], color="0.3", ls="--", label="negatives (other images)")
        ax.legend(loc="upper left", fontsize=8)
    ax_auc = axes[-1]
    for i, space in enumerate(spaces):
        points = [(r["step"], r["spaces"][space]["auc"]) for r in history if space in r["spaces"]]
        if points:
            ax_auc.plot(*zip(*points), marker="o", color=f"C{i}", label=space_title(space))
    ax_auc.set(title="ROC-AUC, positives vs pooled negatives", xlabel="step", ylabel="AUC")
    if ax_auc.get_legend_handles_labels()[0]:
        ax_auc.legend(loc="lower right", fontsize=8)
    # The step colour bar sits on the right of the whole figure (between the panels its label ran
    # into the AUC panel's y label).
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), label="step of the evaluation", pad=0.02)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
