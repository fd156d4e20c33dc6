"""Contract shared by every entry of ``LOSSES`` (the losses a recipe picks as ``head.loss``).

Driven by ``CASES``: a finite scalar for two (B, D) projections (a ``MultiViewLoss`` gets them as a
list), gradients to both, a plain typed
constructor, and 2 gloo processes giving the loss and input gradients of 1 process (every contrastive
loss gathers its negatives across processes with gradient).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from contracts.constructor import assert_plain_typed_constructor
from two_processes import run_ranks

from ssl_toolkit.losses import LOSSES, MultiViewLoss

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("losses_distributed_worker.py")

# The contract table: one row of constructor keywords per entry of LOSSES (a loss without a row
# fails test_every_loss_has_exactly_one_row). Called on two (B, D) projections through call_loss:
# loss(z_a, z_b), or loss([z_a, z_b]) for a MultiViewLoss.
CASES: dict[str, dict[str, Any]] = {
    "ntxent": {"temperature": 0.2},
    "dcl": {"temperature": 0.2},
    "dclw": {"temperature": 0.2, "sigma": 0.5},
    "hard_contrastive": {"temperature": 0.5, "alpha": 0.3},
    "mw": {"temperature": 0.1},
    "mv_infonce": {"temperature": 0.2},
    "mv_dhel": {"temperature": 0.2},
    "groco": {"top_k_negatives": 4},
}
BATCH, DIM = 12, 16  # 6 rows per rank


def projections(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, DIM, generator=g), torch.randn(BATCH, DIM, generator=g)


def call_loss(loss: torch.nn.Module, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """The two-view call, or the list call of a multi-view loss (what SimCLRHead does)."""
    return loss([z_a, z_b]) if isinstance(loss, MultiViewLoss) else loss(z_a, z_b)


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
    loss = call_loss(LOSSES[name](**CASES[name]), z_a, z_b)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for z in (z_a, z_b):
        assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def two_process_losses(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Every loss of the table run once on 2 gloo ranks (one launch for the whole table)."""
    out = tmp_path_factory.mktemp("losses_2p")
    return run_ranks(WORKER, out, [])


@pytest.mark.distributed
@pytest.mark.parametrize("name", sorted(CASES))
def test_two_processes_equal_one(name: str, two_process_losses: list[dict]) -> None:
    z_a, z_b = (z.requires_grad_(True) for z in projections())
    loss = call_loss(LOSSES[name](**CASES[name]), z_a, z_b)
    loss.backward()
    ranks = [r[name] for r in two_process_losses]
    # DDP averages over ranks: global loss = mean of the per-rank losses; each rank's input gradient
    # is d(sum of rank losses)/d(local z) = world x dL/dz of its rows.
    torch.testing.assert_close(torch.stack([r["loss"] for r in ranks]).mean(), loss.detach())
    torch.testing.assert_close(torch.cat([r["grad_a"] for r in ranks]) / 2, z_a.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(torch.cat([r["grad_b"] for r in ranks]) / 2, z_b.grad, rtol=1e-5, atol=1e-7)
    assert not torch.isclose(ranks[0]["loss"], ranks[1]["loss"])  # each rank scores its own anchors
