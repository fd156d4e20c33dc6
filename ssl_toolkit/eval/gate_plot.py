"""Which gate dimensions open for which class pairs (Hydra): one PNG from (C, C, D) pair gates."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure  # object API: no pyplot, no global backend switch
from torch import Tensor


def gate_overlap(gates: Tensor, threshold: float = 0.5) -> Tensor:
    """Fraction of dimensions open (gate > threshold) for every class pair: (C, C, D) -> (C, C)."""
    return (gates > threshold).float().mean(dim=-1)


def plot_gates(
    gates: Tensor, path: Path, class_names: Sequence[str] | None = None, threshold: float = 0.5, title: str = ""
) -> Path:
    """Write a 2-panel PNG and return its path.

    Left: the fraction of dimensions open for each class pair (a C x C matrix; related classes
    share a wider subspace, which is how Hydra "discovers class relationships"). Right: the gate of
    every unordered pair (rows, labelled "a-b") over the D dimensions (columns, ordered by how
    often they open), so one sees which dimensions are shared by many pairs and which are specific.

    Args:
        gates: (C, C, D) gate values in (0, 1), e.g. ``HydraHead.pair_gates()``.
        path: output PNG.
        class_names: C names (default: class indices).
        threshold: a dimension counts as open above this value.
        title: figure title.
    """
    gates = gates.detach().float().cpu()
    num_classes = gates.shape[0]
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes or gates.shape[1] != num_classes:
        raise ValueError(f"gates: expected (C, C, D) with C = {len(names)} names, got {tuple(gates.shape)}")
    rows, cols = torch.triu_indices(num_classes, num_classes)
    pairs = gates[rows, cols]  # (P, D), P = C (C + 1) / 2 unordered pairs incl. (c, c)
    order = (pairs > threshold).float().mean(dim=0).argsort(descending=True)

    fig = Figure(figsize=(13, 5.5), layout="constrained")
    ax_pair, ax_dims = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    image = ax_pair.imshow(gate_overlap(gates, threshold).numpy(), vmin=0, vmax=1, cmap="viridis")
    ax_pair.set_xticks(range(num_classes), names, rotation=90)
    ax_pair.set_yticks(range(num_classes), names)
    ax_pair.set(title=f"fraction of dimensions open (gate > {threshold})", xlabel="partner class y2", ylabel="y1")
    fig.colorbar(image, ax=ax_pair, shrink=0.8)
    image = ax_dims.imshow(
        pairs[:, order].numpy(), vmin=0, vmax=1, cmap="magma", aspect="auto", interpolation="nearest"
    )
    if len(pairs) <= 60:
        ax_dims.set_yticks(range(len(pairs)), [f"{names[a]}-{names[b]}" for a, b in zip(rows, cols)], fontsize=6)
    ax_dims.set(title="gate per class pair", xlabel="dimension (most often open first)", ylabel="class pair")
    fig.colorbar(image, ax=ax_dims, shrink=0.8)
    fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
