"""MoCoV3Loss against a plain loop over MoCo v3's formula, the authors' code, and an analytic value."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.losses import MoCoV3Loss


def reference_ctr(q: torch.Tensor, k: torch.Tensor, t: float) -> torch.Tensor:
    """MoCo v3 Algorithm 1 written out per query in float64: positive k_i, negatives every other key,
    -log softmax, mean over queries, times 2t."""
    q, k = F.normalize(q.double(), dim=1), F.normalize(k.double(), dim=1)
    terms = []
    for i in range(q.shape[0]):
        num = torch.exp(q[i] @ k[i] / t)
        den = sum(torch.exp(q[i] @ k[j] / t) for j in range(k.shape[0]))
        terms.append(-torch.log(num / den))
    return torch.stack(terms).mean() * 2 * t


def authors_contrastive_loss(q: torch.Tensor, k: torch.Tensor, t: float) -> torch.Tensor:
    """facebookresearch/moco-v3 ``moco/builder.py`` ``MoCo.contrastive_loss`` on one process (its
    gather is the identity; the authors' gather has no gradient, so the key is detached)."""
    q = torch.nn.functional.normalize(q, dim=1)
    k = torch.nn.functional.normalize(k, dim=1).detach()
    logits = torch.einsum("nc,mc->nm", [q, k]) / t
    labels = torch.arange(logits.shape[0], dtype=torch.long)
    return torch.nn.CrossEntropyLoss()(logits, labels) * (2 * t)


CASES = [(2, 3, 1.0), (5, 16, 0.2), (8, 4, 0.5), (16, 32, 0.1), (33, 64, 0.2)]


@pytest.mark.parametrize("n,d,t", CASES)
def test_matches_formula_with_gradients(n: int, d: int, t: float) -> None:
    g = torch.Generator().manual_seed(n * 100 + d)
    q = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    ours = MoCoV3Loss(temperature=t)(q, k)
    ref = reference_ctr(q, k, t)
    assert ours.dtype == torch.float32  # fp32 by design
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    for a, b in zip(torch.autograd.grad(ours, (q, k)), torch.autograd.grad(ref, (q, k))):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)  # both q and k get the formula's gradient


@pytest.mark.parametrize("n,d,t", CASES)
def test_equals_the_authors_contrastive_loss(n: int, d: int, t: float) -> None:
    g = torch.Generator().manual_seed(n + d)
    q = torch.randn(n, d, generator=g, requires_grad=True)
    k = torch.randn(n, d, generator=g)
    ours, theirs = MoCoV3Loss(t)(q, k), authors_contrastive_loss(q, k, t)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(torch.autograd.grad(ours, q)[0], torch.autograd.grad(theirs, q)[0])


@pytest.mark.parametrize("n,t", [(2, 1.0), (4, 0.2), (10, 0.5)])
def test_analytic_value_orthonormal_keys(n: int, t: float) -> None:
    # q_i = k_i = e_i: the positive logit is 1/t, the N - 1 negatives 0, so every query's cross
    # entropy is log(1 + (N - 1) e^{-1/t}); the loss is 2t times that.
    z = torch.eye(n, n + 2)
    expected = 2 * t * math.log(1 + (n - 1) * math.exp(-1 / t))
    assert MoCoV3Loss(t)(z, z.clone()).item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_gradient_scale_is_independent_of_the_temperature_at_small_logits() -> None:
    # d/dq [2t CE(q.k / t)] = 2 (softmax - onehot) k: with equal scores (orthogonal q and keys) the
    # softmax is uniform at every t, so the gradient is the same for every t (the reason for 2t).
    q = torch.zeros(4, 8)
    q[:, 7] = 1.0
    k = torch.eye(4, 8)
    grads = []
    for t in (0.1, 0.5, 2.0):
        qq = q.clone().requires_grad_(True)
        MoCoV3Loss(t)(qq, k).backward()
        grads.append(qq.grad)
    torch.testing.assert_close(grads[0], grads[1]), torch.testing.assert_close(grads[1], grads[2])
    assert grads[0].abs().sum() > 0


def test_fp32_under_autocast_and_bad_arguments() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = MoCoV3Loss(0.2)(torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16())
    assert out.dtype == torch.float32 and torch.isfinite(out)
    with pytest.raises(ValueError, match="temperature"):
        MoCoV3Loss(0.0)
    with pytest.raises(ValueError, match="q and k"):
        MoCoV3Loss(0.2)(torch.randn(4, 8), torch.randn(5, 8))
