"""SimSiam head: lightly 1.6.0's SimSiam projection/prediction heads and loss on the same weights,
the stop-gradient, and the mean over ordered view pairs."""

from __future__ import annotations

import pytest
import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

from ssl_toolkit.heads import BatchInfo, SimSiamHead, Views
from ssl_toolkit.losses import SimSiamLoss


def info(b: int) -> BatchInfo:
    return BatchInfo(labels=torch.zeros(b, dtype=torch.long), index=torch.arange(b), step=0, epoch=0)


@pytest.mark.parametrize("b,f,hidden,dim,bottleneck", [(8, 12, 16, 8, 4), (6, 20, 32, 16, 8)])
def test_equals_lightly_simsiam_on_the_same_weights(b: int, f: int, hidden: int, dim: int, bottleneck: int) -> None:
    torch.manual_seed(b)
    head = SimSiamHead(in_dim=f, hidden_dim=hidden, out_dim=dim, pred_hidden_dim=bottleneck)
    projector, predictor = SimSiamProjectionHead(f, hidden, dim), SimSiamPredictionHead(dim, bottleneck, dim)
    # lightly's blocks are the paper's: 3 x (Linear without bias, BN) with ReLU between and an
    # affine-free output BN; predictor Linear -> BN -> ReLU -> Linear (bias). Our layers, in order.
    projector.layers.load_state_dict(head.projector.state_dict(), strict=True)
    predictor.layers.load_state_dict(head.predictor.state_dict(), strict=True)
    feats = [torch.randn(b, f) for _ in range(2)]
    head_feats = [x.clone().requires_grad_(True) for x in feats]
    ours = head(Views(head_feats), info(b)).loss
    ours.backward()
    # lightly's SimSiam example: z = projection_head(f); p = prediction_head(z); z = z.detach();
    # loss = 0.5 * (criterion(z0, p1) + criterion(z1, p0)).
    lightly_feats = [x.clone().requires_grad_(True) for x in feats]
    z = projector(torch.cat(lightly_feats))
    p0, p1 = predictor(z).chunk(2)
    z0, z1 = z.detach().chunk(2)
    criterion = NegativeCosineSimilarity()
    theirs = 0.5 * (criterion(z0, p1) + criterion(z1, p0))
    theirs.backward()
    torch.testing.assert_close(ours, theirs)
    for a, c in zip(head_feats, lightly_feats):
        torch.testing.assert_close(a.grad, c.grad)


def test_gradient_flows_only_through_the_predictions() -> None:
    # With the stop-gradient, d L / d theta is the gradient through p alone: equal to the gradient
    # of the same expression with z replaced by a detached copy computed beforehand.
    torch.manual_seed(1)
    head = SimSiamHead(in_dim=6, hidden_dim=8, out_dim=4, pred_hidden_dim=2, batch_norm=False, last_norm="none")
    feats = [torch.randn(5, 6) for _ in range(3)]
    head(Views(feats), info(5)).loss.backward()
    ours = {n: p.grad.clone() for n, p in head.named_parameters()}
    head.zero_grad()
    z = [head.projector(x) for x in feats]
    const = [x.detach() for x in z]
    p = [head.predictor(x) for x in z]
    loss = torch.stack([SimSiamLoss()(p[i], const[j]) for i in range(3) for j in range(3) if i != j]).mean()
    loss.backward()
    for n, q in head.named_parameters():
        torch.testing.assert_close(ours[n], q.grad, msg=n)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="last_norm"):
        SimSiamHead(in_dim=6, last_norm="batch")
    with pytest.raises(ValueError, match="num_layers"):
        SimSiamHead(in_dim=6, num_layers=0)
    with pytest.raises(ValueError, match="2 views"):
        SimSiamHead(in_dim=6, hidden_dim=8, out_dim=4, pred_hidden_dim=2)(Views([torch.randn(4, 6)]), info(4))
