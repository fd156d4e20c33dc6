"""NNCLR head: the nearest neighbour against lightly 1.6's NNMemoryBankModule, the head's loss
against lightly's NNCLR (NTXentLoss + NNMemoryBankModule) and against solo-learn's form written out,
and the support set (FIFO, wrap-around, in checkpoints)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss as LightlyNTXentLoss
from lightly.models.modules import NNMemoryBankModule

from ssl_toolkit.heads import BatchInfo, NNCLRHead, Views

KW = {"hidden_dim": 16, "out_dim": 8, "pred_hidden_dim": 16, "queue_size": 32}


def info(b: int) -> BatchInfo:
    return BatchInfo(labels=torch.zeros(b, dtype=torch.long), index=torch.arange(b), step=0, epoch=0)


def lightly_bank(head: NNCLRHead) -> NNMemoryBankModule:
    bank = NNMemoryBankModule(size=tuple(head.queue.shape))
    bank.bank.copy_(head.queue)
    bank.bank_ptr.fill_(int(head.queue_ptr))
    return bank


def test_nearest_neighbour_equals_lightlys_memory_bank() -> None:
    torch.manual_seed(0)
    head = NNCLRHead(in_dim=12, **KW)
    z = torch.randn(10, 8) * 3
    theirs = lightly_bank(head)(z, update=False)
    torch.testing.assert_close(head.nearest_neighbour(z), theirs)


def test_head_equals_lightlys_nnclr_with_same_view_negatives() -> None:
    """lightly's NNCLR: NN of z_0 and z_1 from the bank, 0.5 (NTXent(nn_0, p_1) + NTXent(nn_1, p_0)),
    the bank updated with the first view's projections; value, gradients and the bank after."""
    torch.manual_seed(1)
    head = NNCLRHead(in_dim=12, temperature=0.2, same_view_negatives=True, batch_norm=False, last_norm="none",
                     pred_batch_norm=False, **KW)  # fmt: skip
    bank = lightly_bank(head)
    feats = [torch.randn(6, 12) for _ in range(2)]
    out = head(Views(feats), info(6))
    grads = torch.autograd.grad(out.loss, list(head.parameters()))
    (z0, z1) = (head.projector(f) for f in feats)
    p0, p1 = head.predictor(z0), head.predictor(z1)
    nn1 = bank(z1.detach(), update=False)
    nn0 = bank(z0.detach(), update=True)  # lightly enqueues the view it is called with last
    criterion = LightlyNTXentLoss(temperature=0.2)
    theirs = 0.5 * (criterion(nn0, p1) + criterion(nn1, p0))
    torch.testing.assert_close(out.loss, theirs)
    for mine, other in zip(grads, torch.autograd.grad(theirs, list(head.parameters())), strict=True):
        torch.testing.assert_close(mine, other, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(head.queue, F.normalize(bank.bank, dim=1))
    assert int(head.queue_ptr) == int(bank.bank_ptr) == 6


def test_head_default_is_solo_learns_form() -> None:
    """Eq. 1 per direction with the predictions of the other view as the only keys."""
    torch.manual_seed(2)
    head = NNCLRHead(in_dim=12, temperature=0.1, **KW)
    queue = head.queue.clone()
    feats = [torch.randn(6, 12) for _ in range(2)]
    out = head(Views(feats), info(6))
    z0, z1 = (F.normalize(head.projector(f), dim=1) for f in feats)
    p0, p1 = (F.normalize(head.predictor(head.projector(f)), dim=1) for f in feats)

    def direction(z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        nn_ = queue[(z @ queue.T).argmax(dim=1)]
        return F.cross_entropy(nn_ @ p.T / 0.1, torch.arange(6))

    torch.testing.assert_close(out.loss, (direction(z0, p1) + direction(z1, p0)) / 2)
    torch.testing.assert_close(head.queue[:6], z0.detach())  # the first view's projections, unit norm
    torch.testing.assert_close(head.queue[6:], queue[6:])


def test_support_set_wraps_around_and_survives_a_checkpoint() -> None:
    torch.manual_seed(3)
    head = NNCLRHead(in_dim=12, **{**KW, "queue_size": 10})
    for _ in range(3):  # 3 x 4 rows into 10 slots
        head(Views([torch.randn(4, 12) for _ in range(2)]), info(4))
    assert int(head.queue_ptr) == 2
    torch.testing.assert_close(head.queue.norm(dim=1), torch.ones(10))
    other = NNCLRHead(in_dim=12, **{**KW, "queue_size": 10})
    other.load_state_dict(head.state_dict())
    assert torch.equal(other.queue, head.queue) and int(other.queue_ptr) == 2


def test_bad_queue_size_names_the_keyword() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        NNCLRHead(in_dim=12, queue_size=0)
