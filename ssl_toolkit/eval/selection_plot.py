"""Label-free metric against labelled accuracy: one PNG, one panel per metric, for ``select --with-labels``."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure  # object API: no pyplot, no global backend switch

from ssl_toolkit.eval.label_free import METRICS
from ssl_toolkit.eval.selection import Row, metric_report, spearman_text


def plot_selection(rows: list[Row], path: Path, title: str = "") -> Path:
    """Write a PNG of every metric of ``rows[0].scores`` against k-NN and linear top-1; return its path.

    One panel per metric: x = the metric's value for each checkpoint, y = its val top-1 in percent,
    k-NN (circles) and linear probe (triangles). The checkpoint the metric selects is ringed in red
    (on both series), the one with the best accuracy of each series is starred (the oracle, which
    needs labels). The panel title gives the metric's better direction, its Spearman correlations and
    its regrets (points of top-1 lost against the oracle), as :func:`metric_report` computes them.
    A NaN metric value is left out of its panel.

    Args:
        rows: scored checkpoints with ``knn_top1`` and ``linear_top1`` (``rank_checkpoints(...,
            with_labels=True)``), at least one metric in ``scores``.
        path: the PNG to write (overwritten; callers that must not overwrite pick a free name).
        title: figure title.

    Raises:
        ValueError: no rows, no metric, or a row without accuracies.
    """
    if not rows or not rows[0].scores:
        raise ValueError("plot_selection: needs scored rows with at least one metric")
    if any(r.knn_top1 is None or r.linear_top1 is None for r in rows):
        raise ValueError("plot_selection: every row needs knn_top1 and linear_top1 (select --with-labels)")
    report = {e["metric"]: e for e in metric_report(rows)}
    names = list(rows[0].scores)
    cols = min(3, len(names))
    nrows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    series = (("knn", "k-NN", "o", "tab:blue"), ("linear", "linear", "^", "tab:orange"))
    for ax, name in zip(axes, names):
        entry = report[name]
        chosen = next(r for r in rows if str(r.checkpoint) == entry["selected"])
        finite = [r for r in rows if not math.isnan(r.scores[name])]
        for kind, label, marker, color in series:
            acc = {id(r): 100 * getattr(r, f"{kind}_top1") for r in rows}
            ax.scatter([r.scores[name] for r in finite], [acc[id(r)] for r in finite], marker=marker, color=color,
                       s=22, alpha=0.8, label=label)  # fmt: skip
            oracle = max(rows, key=lambda r: acc[id(r)])  # noqa: B023 - used at once
            if not math.isnan(oracle.scores[name]):
                ax.scatter([oracle.scores[name]], [acc[id(oracle)]], marker="*", s=160, color=color,
                           edgecolor="black", linewidths=0.6, zorder=3)  # fmt: skip
            if not math.isnan(chosen.scores[name]):
                ax.scatter([chosen.scores[name]], [acc[id(chosen)]], marker="o", s=150, facecolors="none",
                           edgecolors="red", linewidths=1.6, zorder=4)  # fmt: skip
        if METRICS[name].better == "near 1":
            ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set_title(
            f"{name} ({METRICS[name].better} is better)\nSpearman k-NN {spearman_text(entry['spearman_knn'])}, linear "
            f"{spearman_text(entry['spearman_linear'])}\nregret k-NN {100 * entry['regret_knn']:.2f}, linear "
            f"{100 * entry['regret_linear']:.2f} points",
            fontsize=9,
        )
        ax.set(xlabel=name, ylabel="val top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0].scatter([], [], marker="o", s=150, facecolors="none", edgecolors="red", label="metric's choice")
    axes[0].scatter([], [], marker="*", s=160, color="white", edgecolor="black", label="best (oracle)")
    axes[0].legend(fontsize=7, loc="best")
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path
