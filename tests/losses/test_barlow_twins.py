"""BarlowTwinsLoss against lightly 1.6's BarlowTwinsLoss, a plain computation of Eq. 1-2 and an
analytic value. The 1 vs 2 process check is in tests/test_distributed.py."""

from __future__ import annotations

import pytest
import torch
from lightly.loss import BarlowTwinsLoss as LightlyBarlowTwinsLoss

from ssl_toolkit.losses import BarlowTwinsLoss


def plain_barlow_twins(z_a: torch.Tensor, z_b: torch.Tensor, lambd: float, eps: float = 1e-5) -> torch.Tensor:
    """Eq. 1-2 written out: standardize every dimension over the batch (biased variance, as BN),
    C_ij = sum_b a_bi b_bj / N, then sum_i (1 - C_ii)^2 + lambd sum_{i != j} C_ij^2."""
    n, d = z_a.shape
    a = (z_a - z_a.mean(0)) / torch.sqrt(z_a.var(0, unbiased=False) + eps)
    b = (z_b - z_b.mean(0)) / torch.sqrt(z_b.var(0, unbiased=False) + eps)
    loss = z_a.new_zeros(())
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss = loss + ((1 - c_ij) ** 2 if i == j else lambd * c_ij**2)
    return loss


@pytest.mark.parametrize(("n", "d", "lambd"), [(4, 3, 0.0051), (9, 6, 0.1), (16, 5, 1.0)])
def test_equals_lightly_value_and_gradient(n: int, d: int, lambd: float) -> None:
    g = torch.Generator().manual_seed(n * d)
    z_a, z_b = torch.randn(n, d, generator=g) * 3 + 1, torch.randn(n, d, generator=g)
    ours_in = [z.clone().requires_grad_(True) for z in (z_a, z_b)]
    theirs_in = [z.clone().requires_grad_(True) for z in (z_a, z_b)]
    ours = BarlowTwinsLoss(lambd=lambd)(*ours_in)
    theirs = LightlyBarlowTwinsLoss(lambda_param=lambd)(*theirs_in)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    ours.backward(), theirs.backward()
    for mine, other in zip(ours_in, theirs_in, strict=True):
        torch.testing.assert_close(mine.grad, other.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("scale_loss", [1.0, 0.1])
def test_equals_the_plain_formula_value_and_gradient(scale_loss: float) -> None:
    g = torch.Generator().manual_seed(3)
    z_a, z_b = (torch.randn(6, 4, generator=g, dtype=torch.float64).requires_grad_(True) for _ in range(2))
    ours = BarlowTwinsLoss(lambd=0.3, scale_loss=scale_loss)(z_a, z_b)
    plain = scale_loss * plain_barlow_twins(z_a, z_b, 0.3)
    torch.testing.assert_close(ours.double(), plain, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(ours, (z_a, z_b))
    plain_grads = torch.autograd.grad(plain, (z_a, z_b))
    for mine, other in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(mine.double(), other, rtol=1e-4, atol=1e-6)


def test_analytic_values() -> None:
    """Identical views with uncorrelated +-1 dimensions (3 Hadamard columns): C = I, loss 0; the
    second view negated: C = -I, loss = sum_i (1 - (-1))^2 = 4 D = 12."""
    h = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])[:, 1:]  # zero-mean columns
    assert BarlowTwinsLoss(lambd=1.0, eps=1e-12)(h, h).abs() < 1e-6
    torch.testing.assert_close(BarlowTwinsLoss(lambd=1.0, eps=1e-12)(h, -h), torch.tensor(12.0))


@pytest.mark.parametrize("bad", [{"lambd": 0.0}, {"scale_loss": -1.0}, {"eps": 0.0}])
def test_bad_arguments_name_the_keyword(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        BarlowTwinsLoss(**bad)
