"""Score diagnostics of a contrastive embedding on fixed image pairs: the one computation behind the
``diagnostics`` callback and ``ssl-toolkit diagnose``.

Two augmented views of N fixed images are embedded (``embed_pairs``: backbone features and
projector embeddings); per embedding space, view-1 rows are scored against view-2 rows by cosine
similarity, (N, N). The diagonal holds the N positives (two views of one image), the off-diagonal
entries the N (N - 1) pooled negatives (MW loss paper, Sheikholeslami et al. 2025, Sec. 4.2: one
pool over all queries). :func:`diagnose_space` reports:

* quantiles and a histogram of the positive and of the negative scores;
* the pooled ROC-AUC of positives against negatives (Mann-Whitney U / (P M), ties 1/2;
  :func:`ssl_toolkit.metrics_contrastive.roc_auc`) and the mean rank of the positive in its row
  (1 = best, N = worst; :func:`~ssl_toolkit.metrics_contrastive.positive_ranks`);
* alignment and uniformity (Wang & Isola, ICML 2020, Eq. 4 and 5; uniformity averaged over the two
  views, as their reference loss does) and, when labels exist, tolerance (Wang & Liu, CVPR 2021,
  Eq. 11 read as the mean cosine of same-class pairs; averaged over the two views).

Each view of a chunk of images is drawn from a generator on the module's device seeded by (seed,
the chunk's first split index) (:func:`~ssl_toolkit.embedding.chunk_generator`), so the same images
get the same views at every evaluation, in 1 or N processes, online and offline, and the training
run's random stream is never touched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.embedding import EvalBatch
from ssl_toolkit.metrics import alignment, tolerance, uniformity
from ssl_toolkit.metrics_contrastive import positive_ranks, roc_auc, split_scores

QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
BINS = 80  # histogram bins over cosine similarity [-1, 1] (width 0.025)
MAX_IMAGES = 4096  # N (N - 1) negatives stay below torch.quantile's 2**24 elements


def quantile_name(q: float) -> str:
    """Column suffix of quantile ``q``: 0.01 -> ``q01``, 0.5 -> ``q50``."""
    return f"q{round(q * 100):02d}"


@dataclass
class SpaceDiagnostics:
    """Diagnostics of one embedding space on N image pairs (plain floats: checkpoint- and JSON-safe).

    Attributes:
        num_images: N.
        pos_quantiles, neg_quantiles: the ``QUANTILES`` of the positive / negative cosines.
        pos_hist, neg_hist: fraction of the positive / negative cosines in each of ``BINS`` equal
            bins over [-1, 1] (each sums to 1).
        auc: pooled ROC-AUC of positives against negatives; 0.5 = no separation, 1 = perfect.
        mean_rank: mean rank of the positive among its row's N scores; 1 = best, (N + 1) / 2 = chance.
        alignment: mean squared distance of the normalized positive pairs (lower = closer).
        uniformity: log mean exp(-2 squared distance) over pairs of images (lower = more uniform;
            0 = everything at one point, i.e. collapse).
        tolerance: mean cosine of same-class pairs, or None without labels.
    """

    num_images: int
    pos_quantiles: list[float]
    neg_quantiles: list[float]
    pos_hist: list[float]
    neg_hist: list[float]
    auc: float
    mean_rank: float
    alignment: float
    uniformity: float
    tolerance: float | None

    def scalars(self) -> dict[str, float]:
        """The one-number diagnostics: auc, mean_rank, alignment, uniformity, tolerance (when
        known), and the median positive and negative cosine."""
        out = {"auc": self.auc, "mean_rank": self.mean_rank, "alignment": self.alignment,
               "uniformity": self.uniformity}  # fmt: skip
        if self.tolerance is not None:
            out["tolerance"] = self.tolerance
        out["pos_median"] = self.pos_quantiles[QUANTILES.index(0.5)]
        out["neg_median"] = self.neg_quantiles[QUANTILES.index(0.5)]
        return out

    def row(self) -> dict[str, float | int | None]:
        """A flat record for CSV: every scalar and every quantile (``pos_q01`` ... ``neg_q99``)."""
        out: dict[str, float | int | None] = {"num_images": self.num_images}
        out.update({k: v for k, v in self.scalars().items() if not k.endswith("median")})
        out.setdefault("tolerance", None)
        for kind, values in (("pos", self.pos_quantiles), ("neg", self.neg_quantiles)):
            out.update({f"{kind}_{quantile_name(q)}": v for q, v in zip(QUANTILES, values)})
        return out

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def embed_pairs(module: nn.Module, images: Tensor, index: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """Two seeded training-augmentation views of one chunk of images, embedded.

    Args:
        module: an ``SSLModule`` (``embed_views``, ``project``), in the mode the caller wants (eval).
        images: uint8 (c, 3, H, W), one whole chunk (``ssl_toolkit.callbacks.chunks``).
        index: (c,) split positions; ``index[0]`` seeds the views (:func:`~ssl_toolkit.embedding.chunk_generator`).
        seed: the diagnostics' seed.

    Returns:
        feats (c, 2, F) backbone features and proj (c, 2, D) projector embeddings.
    """
    labels = torch.full_like(index, -1)  # not read: only the views are embedded
    feats = EvalBatch(images, labels, index, views=2, seed=seed).embed(module)
    return feats, project_pairs(module, feats)


@torch.no_grad()
def project_pairs(module: nn.Module, feats: Tensor) -> Tensor:
    """Projector embeddings (c, 2, D) of the backbone features (c, 2, F) of a chunk's two views
    (``module.project``, one call for the whole chunk)."""
    return module.project(feats.flatten(0, 1)).view(feats.shape[0], 2, -1)


def spaces_of(feats: Tensor, proj: Tensor, parts: int = 1) -> dict[str, Tensor]:
    """Space name -> (N, 2, ·) embeddings: ``proj`` and ``feat`` and, when the projector output is
    ``parts`` > 1 embeddings side by side (AMCL's heads), ``proj_head{c}`` for each."""
    spaces = {"proj": proj, "feat": feats}
    if parts > 1:
        if proj.shape[-1] % parts:
            raise ValueError(f"parts: projector width {proj.shape[-1]} is not a multiple of {parts}")
        for c, chunk in enumerate(proj.chunk(parts, dim=-1)):
            spaces[f"proj_head{c}"] = chunk
    return spaces


def _histogram(x: Tensor) -> list[float]:
    counts = torch.histc(x.double().clamp(-1.0, 1.0), bins=BINS, min=-1.0, max=1.0)
    return (counts / counts.sum().clamp_min(1)).tolist()


@torch.no_grad()
def diagnose_space(pairs: Tensor, labels: Tensor | None = None) -> SpaceDiagnostics:
    """Every diagnostic of one space from (N, 2, D) embeddings of two views of N images.

    Args:
        pairs: (N, 2, D), N >= 2 and <= ``MAX_IMAGES``; row i holds image i's two views.
        labels: (N,) class labels (-1 = unknown) for tolerance, or None.

    Returns:
        :class:`SpaceDiagnostics` (see the module docstring for the sources).

    Raises:
        ValueError: a shape that is not (N, 2, D), or N outside [2, MAX_IMAGES].
    """
    if pairs.ndim != 3 or pairs.shape[1] != 2:
        raise ValueError(f"pairs: expected (N, 2, D), got {tuple(pairs.shape)}")
    n = pairs.shape[0]
    if not 2 <= n <= MAX_IMAGES:
        raise ValueError(f"pairs: needs 2 to {MAX_IMAGES} images, got {n}")
    a, b = pairs[:, 0].float(), pairs[:, 1].float()
    scores = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T  # (N, N): view 1 against view 2
    diagonal = torch.arange(n, device=scores.device)
    pos, neg = split_scores(scores, diagonal)  # float64
    qs = torch.tensor(QUANTILES, dtype=pos.dtype, device=pos.device)
    tol = None
    if labels is not None:
        known = labels.to(a.device) >= 0
        y = labels.to(a.device)[known]
        if y.numel() and bool((torch.bincount(y) >= 2).any()):
            tol = (tolerance(a[known], y) + tolerance(b[known], y)) / 2
    return SpaceDiagnostics(
        num_images=n,
        pos_quantiles=torch.quantile(pos, qs).tolist(),
        neg_quantiles=torch.quantile(neg, qs).tolist(),
        pos_hist=_histogram(pos),
        neg_hist=_histogram(neg),
        auc=roc_auc(pos, neg),
        mean_rank=float(positive_ranks(scores, diagonal).mean()),
        alignment=alignment(a, b),
        uniformity=(uniformity(a) + uniformity(b)) / 2,
        tolerance=tol,
    )


def diagnose(feats: Tensor, proj: Tensor, labels: Tensor | None = None, parts: int = 1) -> dict[str, SpaceDiagnostics]:
    """:func:`diagnose_space` for every space of :func:`spaces_of` (``proj``, ``feat``, AMCL heads).

    Args:
        feats: (N, 2, F) backbone features; proj: (N, 2, D) projector embeddings (``embed_pairs``
            of every chunk, rows in one fixed order); labels: (N,) or None; parts: see ``spaces_of``.
    """
    return {name: diagnose_space(x, labels) for name, x in spaces_of(feats, proj, parts).items()}
