"""No loss or head forward + backward reads device data back to the host.

On a GPU such a read (``.item()``, ``nonzero``, indexing with a boolean mask, whose result size
depends on the data) blocks the CPU until the device has caught up, every step. The check here runs
on the CPU: ``SyncOps``, a ``TorchDispatchMode``, records every aten op that would read back
(``_local_scalar_dense`` is ``.item()``/``int()``/``bool()``; ``nonzero``, ``masked_select``,
boolean ``index``/``index_put``). The values of the rewritten computations equal the plain
boolean-mask formulas.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from contracts.test_heads_contract import BATCH, CASES, FEATURE_DIM, NUM_CLASSES
from contracts.test_losses_contract import CASES as LOSS_CASES
from contracts.test_losses_contract import call_loss, projections
from torch.utils._python_dispatch import TorchDispatchMode

from ssl_toolkit.heads import HEADS, BatchInfo, Views
from ssl_toolkit.losses import LOSSES, AMCLLoss, MVDHELLoss, MWLoss, PairTemperature

aten = torch.ops.aten
READ_BACK = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten.is_nonzero, aten.equal}
INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}


class SyncOps(TorchDispatchMode):
    """Records the aten ops run inside it that make the host wait for the data (``self.ops``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func.overloadpacket in READ_BACK:
            self.ops.append(str(func))
        elif func in INDEXING and any(i is not None and i.dtype == torch.bool for i in args[1]):
            self.ops.append(f"{func} with a boolean index")
        return func(*args, **(kwargs or {}))


def test_the_recorder_sees_what_syncs() -> None:
    x = torch.randn(6, 3, requires_grad=True)
    with SyncOps() as rec:
        (x[x > 0].sum() + x.nonzero().shape[0] + x.sum().item()).backward()
    assert any("boolean index" in op for op in rec.ops)
    assert any("nonzero" in op for op in rec.ops) and any("_local_scalar_dense" in op for op in rec.ops)
    with SyncOps() as rec:
        torch.where(x > 0, x, 0).sum().backward()
    assert rec.ops == []


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_forward_and_backward_never_read_back(name: str) -> None:
    z_a, z_b = (z.requires_grad_(True) for z in projections())
    loss = LOSSES[name](**LOSS_CASES[name])
    with SyncOps() as rec:
        call_loss(loss, z_a, z_b).backward()
    assert rec.ops == [], f"{name}: {rec.ops}"


# Heads whose step is checked as a whole (projector, loss, queue, logs). Two heads draw or check on
# the host by design, outside this check: mocov2_ft draws its Beta scalars from a CPU generator of
# its own (host values, no device data involved), hydra validates labels only when they are CPU
# tensors (on a GPU an out-of-range label trips the device's own assert). Their losses are checked
# above or below.
HEAD_STEPS = {
    "simclr": {}, "amcl": {}, "mocov2": {}, "swav": {"queue_length": 2 * BATCH},
    "mochi": {"mix_start_step": 0},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(HEAD_STEPS))
def test_head_step_never_reads_back(name: str) -> None:
    torch.manual_seed(0)
    cls = HEADS[name]
    kwargs = {**CASES[name]["kwargs"], **HEAD_STEPS[name]}
    if "num_classes" in inspect.signature(cls).parameters:
        kwargs["num_classes"] = NUM_CLASSES
    head = cls(in_dim=FEATURE_DIM, **kwargs)
    g = torch.Generator().manual_seed(1)
    views = CASES[name]["views"]
    for step in range(3):  # SwAV: the queue is full from the third step on
        feats = [torch.randn(BATCH, FEATURE_DIM, generator=g).requires_grad_(True) for _ in range(views)]
        teacher = [torch.randn(BATCH, FEATURE_DIM, generator=g) for _ in range(2)] if cls.uses_teacher else None
        batch = BatchInfo(labels=torch.arange(BATCH) % NUM_CLASSES, index=torch.arange(BATCH), step=step, epoch=0)
        with SyncOps() as rec:
            out = head(Views(feats, teacher=teacher), batch)
            out.loss.backward()
            head.after_backward(step)
            head.after_step(step, 10)
        assert rec.ops == [], f"{name}, step {step}: {rec.ops}"
    if name == "swav":
        assert head.queue.full and out.logs["queue_used"] == 1
    if name == "mochi":
        assert out.logs["mixing"] == 1


# --- the rewritten computations equal the boolean-mask formulas -------------------------------
def test_mw_pooled_negatives_equal_the_off_diagonal_mask() -> None:
    z_a, z_b = projections(3)
    t = 0.1
    a, b = torch.nn.functional.normalize(z_a, dim=1), torch.nn.functional.normalize(z_b, dim=1)
    scores = a @ b.T / t
    pooled = scores[~torch.eye(len(a), dtype=torch.bool)]  # every s(a_j, b_k), j != k
    positives = (a * b).sum(dim=1) / t
    expected = torch.nn.functional.softplus(pooled[None, :] - positives[:, None])
    torch.testing.assert_close(MWLoss(t)(z_a, z_b), expected.mean(dim=1).mean(), rtol=0, atol=0)
    torch.testing.assert_close(MWLoss(t, "sum")(z_a, z_b), expected.sum(dim=1).mean(), rtol=0, atol=0)


def test_mv_dhel_positive_pairs_are_the_upper_triangle() -> None:
    g = torch.Generator().manual_seed(4)
    views = [torch.randn(5, 6, generator=g) for _ in range(4)]
    t = 0.3
    u = torch.nn.functional.normalize(torch.stack(views), dim=-1)  # (V, M, D)
    pos = torch.einsum("lid,mid->ilm", u, u) / t
    pos = pos[:, torch.ones(4, 4, dtype=torch.bool).triu(1)].logsumexp(dim=1)
    logits = torch.einsum("lid,ljd->lij", u, u) / t
    neg = logits.masked_fill(torch.eye(5, dtype=torch.bool)[None], float("-inf")).logsumexp(dim=2).sum(dim=0)
    torch.testing.assert_close(MVDHELLoss(t)(views), (neg - pos).mean(), rtol=0, atol=0)


def test_amcl_temperature_logs_cover_every_pair_but_self() -> None:
    torch.manual_seed(5)
    temps = [PairTemperature(8, 16, tau_min=0.05, tau_max=1.5, tau_init=0.3) for _ in range(2)]
    z_a, z_b = [torch.randn(6, 8) for _ in range(2)], [torch.randn(6, 8) for _ in range(2)]
    _, logs = AMCLLoss(0.1)(z_a, z_b, temps)
    off = ~torch.eye(12, dtype=torch.bool)
    taus = []
    with torch.no_grad():
        for za, zb, temp in zip(z_a, z_b, temps):
            x = torch.nn.functional.normalize(torch.cat([za, zb]), dim=1)
            taus.append(temp(x, x)[off])  # (2N (2N - 1),): one process, keys = anchors
    taus = torch.cat(taus)
    torch.testing.assert_close(logs["tau_mean"], taus.mean())
    assert logs["tau_min"] == taus.min() and logs["tau_max"] == taus.max()
