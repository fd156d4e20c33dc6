"""AMCLLoss against a plain loop over the formula, the constant-τ NT-Xent limit, bounds, 1 vs 2 processes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.losses.amcl import AMCLLoss, PairTemperature
from ssl_toolkit.losses.ntxent import NTXentLoss


def reference_amcl(z_a: list, z_b: list, temps: list[PairTemperature], beta: float) -> torch.Tensor:
    """The loss written out in float64: for each head, anchor i and key k != i, the MLP on the
    concatenated pair [z_i; z_k] gives tau_ik; InfoNCE with s_ik / tau_ik plus beta * mean Omega."""
    head_losses = []
    for za, zb, t in zip(z_a, z_b, temps):
        z = F.normalize(torch.cat([za, zb]).double(), dim=1)
        n2 = z.shape[0]
        w1, b1 = t.hidden.weight.double(), t.hidden.bias.double()
        w2, b2 = t.out.weight.double()[0], t.out.bias.double()[0]

        # tau[i][k] from the MLP on the concatenated pair, one pair at a time.
        tau = [
            [
                t.tau_min + (t.tau_max - t.tau_min) * torch.sigmoid(w2 @ torch.relu(w1 @ torch.cat([zi, zk]) + b1) + b2)
                for zk in z
            ]
            for zi in z
        ]

        nll, reg = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
        for i in range(n2):
            p = (i + n2 // 2) % n2
            den = torch.zeros((), dtype=torch.float64)
            for k in range(n2):
                if k == i:
                    continue
                t_ik = tau[i][k]
                den = den + torch.exp(z[i] @ z[k] / t_ik)
                reg = reg + torch.log(t_ik) + 1 / t_ik
            nll = nll - (z[i] @ z[p] / tau[i][p] - torch.log(den))
        head_losses.append(nll / n2 + beta * reg / (n2 * (n2 - 1)))
    return torch.stack(head_losses).mean()


def make(c: int, n: int, d: int, h: int, seed: int) -> tuple[list, list, list[PairTemperature]]:
    torch.manual_seed(seed)
    temps = [PairTemperature(d, h, tau_min=0.05, tau_max=1.5, tau_init=0.3) for _ in range(c)]
    for t in temps:  # a non-trivial τ spread: the default init is nearly constant around tau_init
        torch.nn.init.normal_(t.out.weight, std=2.0)
    z_a = [torch.randn(n, d, dtype=torch.float64, requires_grad=True) for _ in range(c)]
    z_b = [torch.randn(n, d, dtype=torch.float64, requires_grad=True) for _ in range(c)]
    return z_a, z_b, temps


@pytest.mark.parametrize("c,n,d,h,beta", [(1, 2, 3, 4, 0.1), (2, 4, 8, 6, 0.5), (3, 3, 5, 8, 0.0)])
def test_matches_formula_and_gradients(c: int, n: int, d: int, h: int, beta: float) -> None:
    z_a, z_b, temps = make(c, n, d, h, seed=c * 10 + n)
    ours, logs = AMCLLoss(reg_weight=beta)(z_a, z_b, temps)
    ref = reference_amcl(z_a, z_b, temps, beta)
    assert ours.dtype == torch.float32  # computed in fp32 by design
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    params = [p for t in temps for p in t.parameters()]
    g_ours = torch.autograd.grad(ours, [*z_a, *z_b, *params])
    g_ref = torch.autograd.grad(ref, [*z_a, *z_b, *params])
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-6)
    assert torch.stack([logs[f"loss_head{i}"] for i in range(c)]).mean().item() == pytest.approx(ours.item(), rel=1e-6)
    assert 0.05 <= logs["tau_min"] <= logs["tau_mean"] <= logs["tau_max"] <= 1.5
    assert logs["tau_max"] - logs["tau_min"] > 0.05  # the τ really vary per pair in this test


@pytest.mark.parametrize("tau,beta", [(0.1, 0.1), (0.5, 1.0), (1.0, 0.0)])
def test_constant_tau_is_ntxent_plus_omega(tau: float, beta: float) -> None:
    # Zero output weights: every pair gets τ = tau_init, so each head is NT-Xent(τ) + β(log τ + 1/τ).
    g = torch.Generator().manual_seed(3)
    temps = [PairTemperature(8, 4, tau_min=0.01, tau_max=2.0, tau_init=tau) for _ in range(2)]
    for t in temps:
        torch.nn.init.zeros_(t.out.weight)
    z_a = [torch.randn(6, 8, generator=g) for _ in range(2)]
    z_b = [torch.randn(6, 8, generator=g) for _ in range(2)]
    loss, logs = AMCLLoss(reg_weight=beta)(z_a, z_b, temps)
    ntx = [NTXentLoss(tau)(a, b).item() for a, b in zip(z_a, z_b)]
    expected = sum(ntx) / 2 + beta * (math.log(tau) + 1 / tau)
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert logs["tau_min"].item() == pytest.approx(tau, rel=1e-5)
    assert logs["tau_max"].item() == pytest.approx(tau, rel=1e-5)


def test_orthonormal_constant_tau_analytic() -> None:
    # Both views of image i are e_i and τ ≡ t: l = log(1 + (2N - 2) e^{-1/t}) + β(log t + 1/t).
    n, t, beta = 4, 0.25, 0.2
    temp = PairTemperature(n + 2, 4, tau_init=t)
    torch.nn.init.zeros_(temp.out.weight)
    z = torch.eye(n, n + 2)
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / t)) + beta * (math.log(t) + 1 / t)
    assert AMCLLoss(beta)([z], [z.clone()], [temp])[0].item() == pytest.approx(expected, rel=1e-5)


def test_temperatures_bounded_for_extreme_inputs() -> None:
    torch.manual_seed(0)
    temp = PairTemperature(4, 8, tau_min=0.02, tau_max=2.0)
    with torch.no_grad():
        temp.hidden.weight.mul_(1e4)
        temp.out.weight.normal_(std=1e4)
    x = torch.cat([torch.randn(16, 4) * 1e6, torch.zeros(1, 4), torch.full((1, 4), -1e30)])
    tau = temp(x, x)
    assert torch.isfinite(tau).all()
    assert tau.min() >= 0.02 and tau.max() <= 2.0
    assert tau.min() < 0.021 and tau.max() > 1.99  # both saturations reached, not just mid-range
    # And the loss stays finite with τ at the bounds.
    loss, _ = AMCLLoss(0.1)([torch.randn(8, 4) * 1e3], [torch.randn(8, 4)], [temp])
    assert torch.isfinite(loss)


def test_fp32_under_autocast() -> None:
    temps = [PairTemperature(8, 4) for _ in range(2)]
    a, b = [torch.randn(4, 8).bfloat16() for _ in range(2)], [torch.randn(4, 8).bfloat16() for _ in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logs = AMCLLoss(0.1)(a, b, temps)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(not v.requires_grad for v in logs.values())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="tau_min"):
        PairTemperature(4, tau_min=0.5, tau_max=0.4)
    with pytest.raises(ValueError, match="tau_min"):
        PairTemperature(4, tau_min=0.1, tau_max=1.0, tau_init=1.0)
    with pytest.raises(ValueError, match="reg_weight"):
        AMCLLoss(-1.0)
    with pytest.raises(ValueError, match="need C >= 1"):
        AMCLLoss()([torch.randn(4, 8)], [torch.randn(4, 8)], [])
    with pytest.raises(ValueError, match="z_a and z_b"):
        AMCLLoss()([torch.randn(4, 8)], [torch.randn(5, 8)], [PairTemperature(8)])


@pytest.mark.distributed
def test_amcl_two_processes_equal_one(tmp_path: Path) -> None:
    from two_processes import run_case

    c, n, d, h, beta = 2, 8, 6, 5, 0.3  # global batch 8 -> 4 per rank
    torch.manual_seed(0)
    temps = [PairTemperature(d, h, tau_min=0.05, tau_max=1.5, tau_init=0.3) for _ in range(c)]
    for t in temps:
        torch.nn.init.normal_(t.out.weight, std=2.0)
    z_a, z_b = [torch.randn(n, d) for _ in range(c)], [torch.randn(n, d) for _ in range(c)]
    inputs = {"z_a": z_a, "z_b": z_b, "reg_weight": beta, "dim": d, "hidden_dim": h}
    inputs["temperatures"] = [t.state_dict() for t in temps]
    inputs["tau"] = (0.05, 1.5, 0.3)
    ranks = run_case("amcl", inputs, tmp_path)

    a = [x.clone().requires_grad_(True) for x in z_a]
    b = [x.clone().requires_grad_(True) for x in z_b]
    loss, _ = AMCLLoss(beta)(a, b, temps)
    loss.backward()

    # DDP averages over ranks: global loss = mean of the per-rank losses, same for parameter grads.
    torch.testing.assert_close(torch.stack([r["loss"] for r in ranks]).mean(), loss.detach())
    params = [p for t in temps for p in t.parameters()]
    for i, p in enumerate(params):
        torch.testing.assert_close((ranks[0]["grad_params"][i] + ranks[1]["grad_params"][i]) / 2, p.grad)
    # Each rank's input gradient is d(sum of rank losses)/d(local z), i.e. world * dL/dz.
    for head in range(c):
        grad_a = torch.cat([r["grad_a"][head] for r in ranks]) / 2
        grad_b = torch.cat([r["grad_b"][head] for r in ranks]) / 2
        torch.testing.assert_close(grad_a, a[head].grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(grad_b, b[head].grad, rtol=1e-5, atol=1e-7)
    assert not torch.isclose(ranks[0]["loss"], ranks[1]["loss"])  # each rank scores its own anchors
