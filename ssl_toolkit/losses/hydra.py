"""Hydra / SimLAP gated multi-positive InfoNCE: class pairs are positives inside a gated subspace."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.distributed import gather_no_grad, gather_with_grad, world_size


def gated_multipositive_nce(
    anchors: Tensor, keys: Tensor, gate: Tensor, y1: Tensor, y2: Tensor, key_labels: Tensor, scale: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-anchor Hydra loss of one direction (anchors of one view against keys of the other).

    With unit vectors z_i (anchor), k_j (key), the anchor's pair gate g_i and the scale s::

        l_ij = s * <z_i * g_i^2, k_j>           (= s <z_i * g_i, k_j * g_i>, not re-normalized)
        P_i  = {j : y_j = y2_i}                  positives: every key of the partner class
        X_i  = {j : y_j in {y1_i, y2_i}}         left out of the denominator
        loss_i = mean_{p in P_i} [ log(e^{l_ip} + sum_{n not in X_i} e^{l_in}) - l_ip ]

    i.e. each positive is contrasted with the negatives only (the other positives and the anchor's
    own class are neither). ``log(e^a + e^m) - a`` is evaluated as ``softplus(m - a)`` in fp32.

    Args:
        anchors: (N, D) unit-normalized anchor projections.
        keys: (M, D) unit-normalized keys (gathered over processes).
        gate: (N, D) gate of each anchor's class pair, in (0, 1).
        y1, y2: (N,) the anchor's class and its partner class.
        key_labels: (M,) class of each key.
        scale: scalar s = 1 / temperature.

    Returns:
        ``(loss, valid)``: (N,) per-anchor losses and the (N,) bool mask of anchors with at least
        one positive (``loss`` is 0 elsewhere).
    """
    logits = scale * (anchors * gate.square()) @ keys.T  # (N, M)
    positive = key_labels[None, :] == y2[:, None]  # (N, M)
    excluded = positive | (key_labels[None, :] == y1[:, None])  # (N, M)
    negatives = torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1)  # (N,), -inf if none
    per_pair = F.softplus(negatives[:, None] - logits)  # (N, M): log(e^l_ip + sum_n e^l_in) - l_ip
    count = positive.sum(dim=1)  # (N,)
    loss = (per_pair * positive).sum(dim=1) / count.clamp(min=1)
    return loss, count > 0


class HydraLoss(nn.Module):
    """Gated multi-positive InfoNCE of Hydra / SimLAP (Wu et al., arXiv 2410.18200; the authors'
    ``SimLAP.disparate_loss`` in erow/FastSSL ``model/simlap.py``).

    For sample i of class y1_i paired with class y2_i, the gate g_i = g(y1_i, y2_i) selects the
    subspace in which *every* sample of class y2 is a positive of i (``gated_multipositive_nce``
    gives the formula, positives P_i and exclusions X_i). With y2 = y1 and g = 1 it is SupCon
    (Khosla et al., 2020, Eq. 2) in the form where each positive is contrasted with the negatives
    only (other same-class samples leave the denominator).

    Choices (the paper's full text could not be read; these follow the authors' code unless said):

    * one learnable log-scale, s = exp(log_scale), initialized to 1 / temperature (code: τ = 0.1);
    * the gate multiplies the normalized projections and the logits are *not* re-normalized after
      gating (the older vitookit ``Filter`` re-normalized);
    * both directions are used and averaged (view a as anchors against the keys of view b, and the
      reverse); the authors' code uses a -> b only;
    * the loss is the mean over anchors of the mean over their positives (SupCon's reduction);
      the authors' code averages over all (anchor, positive) pairs at once, which weighs anchors
      by their number of positives. Anchors without positives (possible with ``distinct`` pairs)
      are left out; with none at all the loss is 0;
    * keys are gathered from every process with gradient, and the mean is over the *global*
      number of anchors with positives, so DDP's gradient averaging equals one process on the
      global batch whatever the per-process counts.

    Args:
        temperature: initial τ, s = 1 / τ at the start.
        learn_scale: learn s (the authors' code does); False keeps s = 1 / τ.

    Shapes:
        z_a, z_b: (N, D) projections of two views (normalized here); gate: (N, D) in (0, 1);
        y1, y2: (N,) int64 classes of each sample and of its partner. Returns a scalar.

    Example:
        >>> loss = HydraLoss(temperature=0.1)
        >>> z_a, z_b, y = torch.randn(8, 16), torch.randn(8, 16), torch.arange(8) % 4
        >>> loss(z_a, z_b, torch.rand(8, 16), y, y.roll(1)).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.1, learn_scale: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learn_scale)

    @property
    def scale(self) -> Tensor:
        """s = exp(log_scale), the inverse temperature."""
        return self.log_scale.exp()

    def forward(self, z_a: Tensor, z_b: Tensor, gate: Tensor, y1: Tensor, y2: Tensor) -> Tensor:
        if z_a.shape != z_b.shape or z_a.dim() != 2 or gate.shape != z_a.shape:
            raise ValueError(
                f"z_a, z_b and gate must all be (N, D), got {tuple(z_a.shape)}, {tuple(z_b.shape)}, {tuple(gate.shape)}"
            )
        with torch.autocast(device_type=z_a.device.type, enabled=False):
            z_a, z_b = F.normalize(z_a.float(), dim=1), F.normalize(z_b.float(), dim=1)
            gate, scale = gate.float(), self.scale.float()
            keys_a, keys_b = gather_with_grad(z_a), gather_with_grad(z_b)  # (W*N, D) each
            key_labels = gather_no_grad(y1)  # (W*N,)
            loss_ab, valid_ab = gated_multipositive_nce(z_a, keys_b, gate, y1, y2, key_labels, scale)
            loss_ba, valid_ba = gated_multipositive_nce(z_b, keys_a, gate, y1, y2, key_labels, scale)
            total = (loss_ab * valid_ab).sum() + (loss_ba * valid_ba).sum()
            count = gather_no_grad((valid_ab.sum() + valid_ba.sum()).reshape(1)).sum()
            # Mean over the global count; x world because DDP averages the per-process losses.
            return total * world_size() / count.clamp(min=1)
