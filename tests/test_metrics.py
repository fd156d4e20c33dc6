"""metrics.py against independent, plainly written computations (loops, known spectra)."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_toolkit.metrics import (
    ToleranceStatistics,
    alignment,
    knn_classify,
    knn_scores,
    rankme,
    tolerance,
    tolerance_from_statistics,
    tolerance_statistics,
    uniformity,
)


def with_spectrum(n: int, d: int, s: list[float], seed: int = 0) -> torch.Tensor:
    """Z = U diag(s) V^T with orthonormal U (n, r), V (d, r): its singular values are exactly s."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(n, len(s), generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(d, len(s), generator=g, dtype=torch.float64)).Q
    return u @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ v.T


def plain_rankme(s: list[float], eps: float = 1e-7) -> float:
    """exp(entropy(s / sum(s) + eps)) over all min(N, D) singular values (Garrido et al. 2023, Eq. 1)."""
    total = sum(s)
    p = [x / total + eps for x in s]
    return math.exp(-sum(q * math.log(q) for q in p))


def test_rankme_equals_entropy_of_known_singular_values() -> None:
    s = [5.0, 3.0, 2.0, 1.0, 0.5, 0.1]
    z = with_spectrum(40, 6, s)
    assert rankme(z) == pytest.approx(plain_rankme(s), rel=1e-9)
    assert rankme(z.float()) == pytest.approx(plain_rankme(s), rel=1e-5)  # computed in float64 inside
    # A wider matrix: min(N, D) = 6 values, the same spectrum.
    assert rankme(with_spectrum(6, 30, s, seed=1)) == pytest.approx(plain_rankme(s), rel=1e-9)


@pytest.mark.parametrize("k", [1, 2, 5, 16])
def test_rankme_of_rank_k_with_equal_singular_values_is_k(k: int) -> None:
    z = with_spectrum(64, 16, [2.0] * k)  # the other 16 - k singular values are 0
    assert rankme(z) == pytest.approx(k, rel=1e-4)
    assert rankme(z) == pytest.approx(plain_rankme([2.0] * k + [0.0] * (16 - k)), rel=1e-6)


def test_rankme_is_one_for_rank_one() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 1, generator=g) @ torch.randn(1, 8, generator=g)
    assert rankme(z) == pytest.approx(1.0, abs=1e-4)


def test_rankme_ignores_row_order_and_scale() -> None:
    z = torch.randn(100, 12, generator=torch.Generator().manual_seed(0))
    base = rankme(z)
    assert 1.0 < base < 12.0
    assert rankme(z[torch.randperm(100, generator=torch.Generator().manual_seed(1))]) == pytest.approx(base, rel=1e-9)
    assert rankme(z * 1e-3) == pytest.approx(base, rel=1e-6)
    assert rankme(z * 1e3) == pytest.approx(base, rel=1e-6)


def test_rankme_rejects_non_matrices() -> None:
    with pytest.raises(ValueError, match="z:"):
        rankme(torch.randn(5))
    with pytest.raises(ValueError, match="z:"):
        rankme(torch.zeros(0, 4))


def reference_votes(
    bank: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor, k: int, t: float, c: int
) -> torch.Tensor:
    """Brute force: per query, cosine to every bank row, sort, take top k, add exp(s / t) per class."""
    out = torch.zeros(len(queries), c, dtype=torch.float64)
    for q in range(len(queries)):
        qn = queries[q].double() / queries[q].double().norm()
        sims = [float(qn @ (b.double() / b.double().norm())) for b in bank]
        for i in sorted(range(len(bank)), key=lambda i: -sims[i])[: min(k, len(bank))]:
            out[q, int(labels[i])] += math.exp(sims[i] / t)
    return out


@pytest.mark.parametrize("k, t", [(1, 0.07), (7, 0.07), (20, 0.5)])
def test_knn_matches_brute_force(k: int, t: float) -> None:
    g = torch.Generator().manual_seed(k)
    bank, labels, queries = (
        torch.randn(60, 8, generator=g),
        torch.randint(0, 5, (60,), generator=g),
        torch.randn(13, 8, generator=g),
    )
    expected = reference_votes(bank, labels, queries, k, t, 5)
    scores = knn_scores(bank, labels, queries, k=k, temperature=t, num_classes=5)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=1e-6 * float(expected.max()))
    assert torch.equal(knn_classify(bank, labels, queries, k=k, temperature=t, num_classes=5), expected.argmax(1))


def test_knn_k_larger_than_bank_uses_the_whole_bank() -> None:
    g = torch.Generator().manual_seed(3)
    bank, labels, queries = (
        torch.randn(9, 4, generator=g),
        torch.randint(0, 3, (9,), generator=g),
        torch.randn(5, 4, generator=g),
    )
    scores = knn_scores(bank, labels, queries, k=1000, temperature=0.1, num_classes=3)
    torch.testing.assert_close(scores.double(), reference_votes(bank, labels, queries, 9, 0.1, 3), rtol=1e-4, atol=0)
    torch.testing.assert_close(scores, knn_scores(bank, labels, queries, k=9, temperature=0.1, num_classes=3))


def test_knn_exact_tie_goes_to_the_lower_class() -> None:
    # Two bank rows at the same point with labels 3 and 1: a query there gets equal votes for both.
    bank = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([3, 1, 2])
    query = torch.tensor([[2.0, 0.0]])
    scores = knn_scores(bank, labels, query, k=2, temperature=0.07, num_classes=4)
    assert scores[0, 1] == scores[0, 3] > 0 and scores[0, 0] == scores[0, 2] == 0
    assert knn_classify(bank, labels, query, k=2, temperature=0.07, num_classes=4).tolist() == [1]


def test_knn_chunk_size_does_not_change_the_result() -> None:
    g = torch.Generator().manual_seed(4)
    bank, labels, queries = (
        torch.randn(50, 6, generator=g),
        torch.randint(0, 4, (50,), generator=g),
        torch.randn(23, 6, generator=g),
    )
    full = knn_scores(bank, labels, queries, k=10, chunk_size=256)
    for chunk in (1, 5, 22):
        # Same neighbours and votes; only float32 summation order may differ.
        torch.testing.assert_close(knn_scores(bank, labels, queries, k=10, chunk_size=chunk), full, rtol=1e-5, atol=0)
    assert full.shape == (23, 4)


def test_alignment_and_uniformity_match_their_formulas() -> None:
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    xn = [v / v.norm() for v in x.double()]
    yn = [v / v.norm() for v in y.double()]
    for a in (1.0, 2.0):  # Wang & Isola (ICML 2020): mean ||x_i - y_i||^alpha over pairs
        expected = sum(float((xn[i] - yn[i]).norm()) ** a for i in range(7)) / 7
        assert alignment(x, y, alpha=a) == pytest.approx(expected, rel=1e-5)
    for t in (1.0, 2.0):  # log mean_{i<j} exp(-t ||x_i - x_j||^2)
        terms = [math.exp(-t * float((xn[i] - xn[j]).norm()) ** 2) for i in range(7) for j in range(i + 1, 7)]
        assert uniformity(x, t=t) == pytest.approx(math.log(sum(terms) / len(terms)), rel=1e-5)


def test_alignment_of_identical_inputs_is_zero_and_antipodal_uniformity() -> None:
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(6))
    assert alignment(x, x) == 0.0
    assert alignment(x, 3 * x) == pytest.approx(0.0, abs=1e-12)  # features are normalized first
    pair = torch.tensor([[2.0, 0.0], [-1.0, 0.0]])  # antipodal on the unit circle: ||x_0 - x_1||^2 = 4
    for t in (1.0, 2.0):
        assert uniformity(pair, t=t) == pytest.approx(math.log(math.exp(-t * 4)), rel=1e-6)


def test_tolerance_is_the_mean_cosine_of_same_class_pairs() -> None:
    g = torch.Generator().manual_seed(7)
    x, labels = torch.randn(15, 4, generator=g), torch.randint(0, 3, (15,), generator=g)
    xn = [v / v.norm() for v in x.double()]
    sims = [float(xn[i] @ xn[j]) for i in range(15) for j in range(15) if i != j and labels[i] == labels[j]]
    assert tolerance(x, labels) == pytest.approx(sum(sims) / len(sims), rel=1e-9)
    # Wang & Liu: a collapse maximises tolerance; antipodal classes-mates give -1
    assert tolerance(torch.ones(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])) == pytest.approx(1.0)
    assert tolerance(torch.tensor([[1.0, 0.0], [-2.0, 0.0]]), torch.tensor([0, 0])) == pytest.approx(-1.0)


def test_tolerance_statistics_add_over_splits_and_reject_bad_labels() -> None:
    g = torch.Generator().manual_seed(8)
    x, labels = torch.randn(20, 5, generator=g), torch.randint(0, 4, (20,), generator=g)
    parts = [tolerance_statistics(x[:9], labels[:9], 4), tolerance_statistics(x[9:], labels[9:], 4)]
    summed = ToleranceStatistics(*(a + b for a, b in zip(*parts)))
    assert tolerance_from_statistics(summed) == pytest.approx(tolerance(x, labels, 4), rel=1e-12)
    with pytest.raises(ValueError, match="labels"):
        tolerance_statistics(x, labels, 3 if int(labels.max()) == 3 else 2)
    with pytest.raises(ValueError, match="no class"):
        tolerance(torch.randn(3, 2), torch.tensor([0, 1, 2]))
