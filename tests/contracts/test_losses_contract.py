"""Contract shared by every entry of ``LOSSES`` (the losses a recipe picks as ``head.loss``).

Driven by ``CASES``: a finite scalar for two (B, D) projections, gradients to both, a plain typed
constructor, and 2 gloo processes giving the loss and input gradients of 1 process (every contrastive
loss gathers its negatives across processes with gradient).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from contracts.constructor import assert_plain_typed_constructor
from contracts.two_ranks import run_two_ranks

from ssl_toolkit.losses import LOSSES

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("losses_distributed_worker.py")

# The contract table: one row of constructor keywords per entry of LOSSES (a loss without a row
# fails test_every_loss_has_exactly_one_row). Called as loss(z_a, z_b) on two (B, D) projections.
CASES: dict[str, dict[str, Any]] = {
    "ntxent": {"temperature": 0.2},
    "dcl": {"temperature": 0.2},
    "dclw": {"temperature": 0.2, "sigma": 0.5},
}
BATCH, DIM = 12, 16  # 6 rows per rank


def projections(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, DIM, generator=g), torch.randn(BATCH, DIM, generator=g)


def test_every_loss_has_exactly_one_row() -> None:
    assert set(CASES) == set(LOSSES), f"missing rows: {set(LOSSES) - set(CASES)}, extra: {set(CASES) - set(LOSSES)}"


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_plain_typed_constructor(name: str) -> None:
    cls = LOSSES[name]
    assert issubclass(cls, torch.nn.Module)
    assert_plain_typed_constructor(cls, set(CASES[name]))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_finite_scalar_with_gradients_to_both_views(name: str) -> None:
    z_a, z_b = (z.requires_grad_(True) for z in projections())
    loss = LOSSES[name](**CASES[name])(z_a, z_b)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for z in (z_a, z_b):
        assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def two_process_losses(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Every loss of the table run once on 2 gloo ranks (one launch for the whole table)."""
    out = tmp_path_factory.mktemp("losses_2p")
    return run_two_ranks(WORKER, out, [])


@pytest.mark.distributed
@pytest.mark.parametrize("name", sorted(CASES))
def test_two_processes_equal_one(name: str, two_process_losses: list[dict]) -> None:
    z_a, z_b = (z.requires_grad_(True) for z in projections())
    loss = LOSSES[name](**CASES[name])(z_a, z_b)
    loss.backward()
    ranks = [r[name] for r in two_process_losses]
    # DDP averages over ranks: global loss = mean of the per-rank losses; each rank's input gradient
    # is d(sum of rank losses)/d(local z) = world x dL/dz of its rows.
    torch.testing.assert_close(torch.stack([r["loss"] for r in ranks]).mean(), loss.detach())
    torch.testing.assert_close(torch.cat([r["grad_a"] for r in ranks]) / 2, z_a.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(torch.cat([r["grad_b"] for r in ranks]) / 2, z_b.grad, rtol=1e-5, atol=1e-7)
    assert not torch.isclose(ranks[0]["loss"], ranks[1]["loss"])  # each rank scores its own anchors
