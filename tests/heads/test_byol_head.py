"""BYOL head: lightly 1.6.0's BYOL projection/prediction heads and loss on the same weights, the
multi-crop sum, the stop-gradient target, and the target network's EMA."""

from __future__ import annotations

import pytest
import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import update_momentum

from ssl_toolkit.heads import BatchInfo, BYOLHead, Views
from ssl_toolkit.losses import BYOLLoss


def info(b: int) -> BatchInfo:
    return BatchInfo(labels=torch.zeros(b, dtype=torch.long), index=torch.arange(b), step=0, epoch=0)


@pytest.mark.parametrize("b,f,hidden,dim", [(8, 12, 16, 8), (6, 20, 32, 4)])
def test_equals_lightly_byol_on_the_same_weights(b: int, f: int, hidden: int, dim: int) -> None:
    torch.manual_seed(b)
    head = BYOLHead(in_dim=f, hidden_dim=hidden, out_dim=dim, pred_hidden_dim=hidden)
    projector, predictor = BYOLProjectionHead(f, hidden, dim), BYOLPredictionHead(dim, hidden, dim)
    # lightly's blocks: Linear (no bias before BN) -> BN -> ReLU -> Linear (bias): our layers, in order.
    projector.layers.load_state_dict(head.projector.state_dict(), strict=True)
    predictor.layers.load_state_dict(head.predictor.state_dict(), strict=True)
    feats = [torch.randn(b, f) for _ in range(2)]
    teacher = [torch.randn(b, f) for _ in range(2)]
    head_feats = [x.clone().requires_grad_(True) for x in feats]
    ours = head(Views(head_feats, teacher=teacher), info(b)).loss
    ours.backward()
    # lightly's BYOL example: z = projection_head(backbone(x)); p = prediction_head(z); targets from
    # the momentum copy, detached; loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0)) with
    # NegativeCosineSimilarity. Our symmetric sum of 2 - 2 cos is 4 + 4 x lightly's.
    lightly_feats = [x.clone().requires_grad_(True) for x in feats]
    z = projector(torch.cat(lightly_feats))
    p0, p1 = predictor(z).chunk(2)
    with torch.no_grad():
        t0, t1 = projector(torch.cat(teacher)).chunk(2)
    criterion = NegativeCosineSimilarity()
    theirs = 0.5 * (criterion(p0, t1.detach()) + criterion(p1, t0.detach()))
    theirs.backward()
    torch.testing.assert_close(ours, 4 + 4 * theirs)
    for a, c in zip(head_feats, lightly_feats):
        torch.testing.assert_close(a.grad, 4 * c.grad)


def test_multi_crop_sums_each_global_target_against_every_other_view() -> None:
    torch.manual_seed(2)
    head = BYOLHead(in_dim=6, hidden_dim=8, out_dim=4, pred_hidden_dim=8, batch_norm=False)
    feats = [torch.randn(5, 6) for _ in range(4)]  # 2 global + 2 local views
    teacher = [torch.randn(5, 6) for _ in range(2)]
    p = [head.predictor(head.projector(x)) for x in feats]
    targets = [head.momentum_projector(x) for x in teacher]
    # solo-learn's BYOL.training_step: for v1 in large crops, for v2 != v1 in all crops: byol(P[v2], Zm[v1]).
    expected = sum(BYOLLoss()(p[j], targets[i]) for i in range(2) for j in range(4) if j != i)
    torch.testing.assert_close(head(Views(feats, teacher=teacher), info(5)).loss, expected)


def test_after_step_is_lightlys_update_momentum_on_the_cosine_schedule() -> None:
    torch.manual_seed(3)
    head = BYOLHead(in_dim=6, hidden_dim=8, out_dim=4, pred_hidden_dim=8, base_momentum=0.9, final_momentum=1.0)
    with torch.no_grad():
        for p in head.projector.parameters():
            p.add_(1.0)  # the online network moved away from its target copy
    expected = [p.clone() for p in head.momentum_projector.parameters()]
    reference = torch.nn.ParameterList([torch.nn.Parameter(p.clone()) for p in expected])
    online = torch.nn.ParameterList([torch.nn.Parameter(p.detach().clone()) for p in head.projector.parameters()])
    update_momentum(online, reference, m=head.teacher_momentum(25, 100))
    head.after_step(25, 100)
    for ours, theirs in zip(head.momentum_projector.parameters(), reference):
        torch.testing.assert_close(ours, theirs.detach())
    assert head.teacher_momentum(0, 100) == pytest.approx(0.9) and head.teacher_momentum(100, 100) == 1.0


def test_target_gets_no_gradient_and_bad_arguments() -> None:
    head = BYOLHead(in_dim=6, hidden_dim=8, out_dim=4, pred_hidden_dim=8)
    teacher = [torch.randn(4, 6, requires_grad=True) for _ in range(2)]
    head(Views([torch.randn(4, 6) for _ in range(2)], teacher=teacher), info(4)).loss.backward()
    assert all(t.grad is None for t in teacher)
    assert all(p.grad is None for p in head.momentum_projector.parameters())
    with pytest.raises(ValueError, match="final_momentum"):
        BYOLHead(in_dim=6, final_momentum=-0.1)
    with pytest.raises(ValueError, match="hidden_dim"):
        BYOLHead(in_dim=6, pred_hidden_dim=0)
    with pytest.raises(ValueError, match="views.teacher"):
        head(Views([torch.randn(4, 6) for _ in range(2)]), info(4))
