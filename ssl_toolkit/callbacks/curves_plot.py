"""Training curves as one PNG: train loss per step, k-NN / linear accuracy and RankMe per evaluation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure  # object API: no pyplot, no global backend switch
from matplotlib.ticker import MaxNLocator

ACCURACY_KEYS = ("val/knn_top1", "val/linear_top1")
RANKME_KEYS = ("val/rankme", "val/rankme_proj")


def plot_curves(
    loss_steps: Sequence[int],
    losses: Sequence[float],
    epoch_metrics: Mapping[str, Sequence[tuple[float, float]]],
    path: Path,
    title: str = "",
) -> Path:
    """Write a 3-panel PNG to ``path`` and return it.

    Args:
        loss_steps, losses: train/loss against the optimizer step.
        epoch_metrics: metric name -> [(epochs trained, value), ...]; the ``val/*_top1`` keys go to the
            accuracy panel, ``val/rankme*`` to the RankMe panel (backbone and projector on separate
            y axes, since their scales differ).
        path: output PNG.
        title: figure title (e.g. the run folder name).
    """
    fig = Figure(figsize=(15, 4), layout="constrained")
    ax_loss, ax_acc, ax_rank = fig.subplots(1, 3)
    ax_loss.plot(loss_steps, losses, lw=1)
    ax_loss.set(title="train/loss", xlabel="step")
    for key in ACCURACY_KEYS:
        if epoch_metrics.get(key):
            epochs, values = zip(*epoch_metrics[key])
            ax_acc.plot(epochs, values, marker="o", label=key)
    ax_acc.set(title="accuracy (labels)", xlabel="epochs trained", ylim=(0, 1))
    ax_rank.set(title="RankMe (no labels)", xlabel="epochs trained")
    ax_proj = ax_rank.twinx()
    for ax, key, color in ((ax_rank, RANKME_KEYS[0], "C2"), (ax_proj, RANKME_KEYS[1], "C3")):
        if epoch_metrics.get(key):
            epochs, values = zip(*epoch_metrics[key])
            ax.plot(epochs, values, marker="o", color=color, label=key)
            ax.set_ylabel(key, color=color)
    for ax in (ax_acc, ax_rank, ax_proj):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right" if ax is not ax_proj else "lower left")
    last_epoch = max((e for values in epoch_metrics.values() for e, _ in values), default=0)
    for ax in (ax_acc, ax_rank):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0, max(last_epoch, 1) + 0.5)  # readable with a single evaluation too
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
