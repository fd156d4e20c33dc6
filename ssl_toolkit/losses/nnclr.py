"""NNCLR: contrast the nearest neighbour of one view with the prediction of the other (Dwibedi et al., 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.checks import check_positive
from ssl_toolkit.distributed import gather_with_grad, rank
from ssl_toolkit.losses.ntxent import NTXentLoss


class NNCLRLoss(nn.Module):
    """NNCLR (Dwibedi et al., ICCV 2021, arXiv 2104.14548, Eq. 1) on unit vectors::

        L_i = -log( exp(NN(z_i) . p_i / t) / sum_k exp(NN(z_i) . p_k / t) )

    NN(z_i) is the support-set neighbour of one view's projection (no gradient), p_k the
    predictions of the *other* view of every image of the global batch (gathered across processes
    with gradient, column of image i offset by ``rank * N``): solo-learn's ``nnclr_loss_func``.
    The mean over this process's anchors; the head averages the two directions.

    ``same_view_negatives=True`` is lightly 1.6's NNCLR instead: NT-Xent (``NTXentLoss``) on the
    2N vectors [NN(z); p], where the other neighbours and the other predictions are negatives of
    every anchor, and each prediction is an anchor too.

    Args:
        temperature: t > 0 (solo-learn's ImageNet-100 config: 0.2; paper: 0.1).
        same_view_negatives: lightly's NT-Xent form (see above).

    Shapes:
        neighbours, predictions: (N, D), not necessarily normalized. Returns a scalar.

    Example:
        >>> NNCLRLoss(temperature=0.1)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.1, same_view_negatives: bool = False) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        self.temperature, self.same_view_negatives = float(temperature), bool(same_view_negatives)
        self.ntxent = NTXentLoss(temperature)

    def forward(self, neighbours: Tensor, predictions: Tensor) -> Tensor:
        if self.same_view_negatives:
            return self.ntxent(neighbours.detach(), predictions)
        with torch.autocast(device_type=predictions.device.type, enabled=False):
            anchors = F.normalize(neighbours.detach().float(), dim=1)
            keys = gather_with_grad(F.normalize(predictions.float(), dim=1))
            logits = anchors @ keys.T / self.temperature  # (N, W*N)
            n = anchors.shape[0]
            target = torch.arange(n, device=logits.device) + rank() * n
            return F.cross_entropy(logits, target)
