"""AMCL: multi-head InfoNCE with pair-adaptive, bounded, regularized temperatures."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.losses.two_view import two_view_logits


class PairTemperature(nn.Module):
    """Pair-adaptive temperature of one head (AMCL, Wang et al., ECCV 2024, arXiv 2310.05615).

    τ_ij = τ_min + (τ_max − τ_min)·σ(w₂ᵀ ReLU(W [z_i; z_j] + b) + b₂): an MLP on the concatenated
    pair, as in the official code (Linear(2D, H) → ReLU → Linear(H, 1) → bounded sigmoid). The
    parameters are stored as that MLP, but W [z_i; z_j] = W_i z_i + W_j z_j is evaluated as
    (M, 1, H) + (1, K, H), so all M·K pairs cost two matmuls instead of materializing (M, K, 2D).
    Memory is still 4·M·K·H bytes (plus the same for the ReLU) per head.

    Args:
        dim: projection width D.
        hidden_dim: MLP hidden width H (the official code uses 128).
        tau_min, tau_max: bounds of τ, 0 < τ_min < τ_max.
        tau_init: τ of every pair at initialization (sets b₂), τ_min < τ_init < τ_max.

    Shapes:
        anchors: (M, D), keys: (K, D) -> (M, K) temperatures (anchor first in the concatenation).
    """

    def __init__(
        self, dim: int, hidden_dim: int = 128, tau_min: float = 0.02, tau_max: float = 2.0, tau_init: float = 0.2
    ) -> None:
        super().__init__()
        if not 0 < tau_min < tau_init < tau_max:
            raise ValueError(f"tau_min, tau_init, tau_max: need 0 < {tau_min} < {tau_init} < {tau_max}")
        self.tau_min, self.tau_max = tau_min, tau_max
        self.hidden = nn.Linear(2 * dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, 1)
        # Start near τ_init (a usual SimCLR value) rather than mid-range, which would be ≈ 1.
        frac = (tau_init - tau_min) / (tau_max - tau_min)
        nn.init.constant_(self.out.bias, math.log(frac / (1 - frac)))

    def forward(self, anchors: Tensor, keys: Tensor) -> Tensor:
        d = anchors.shape[1]
        w = self.hidden.weight  # (H, 2D): first D columns see the anchor, the rest the key
        pre = (anchors @ w[:, :d].T + self.hidden.bias)[:, None, :] + (keys @ w[:, d:].T)[None, :, :]
        logit = F.relu(pre) @ self.out.weight[0] + self.out.bias  # (M, K)
        return self.tau_min + (self.tau_max - self.tau_min) * torch.sigmoid(logit)


def omega(tau: Tensor) -> Tensor:
    """Ω(τ) = log τ + 1/τ: → ∞ as τ → 0 and as τ → ∞, minimum 1 at τ = 1 (see AMCLLoss)."""
    return torch.log(tau) + 1 / tau


class AMCLLoss(nn.Module):
    """Multi-head InfoNCE with pair-adaptive temperatures (AMCL, arXiv 2310.05615, Eq. 2.1/2.4).

    For head c, with z^c unit-normalized, s_ij = z_i^c · z_j^c and τ_ij^c from that head's
    ``PairTemperature``, over the 2N views (both directions, anchor i, positive p(i))::

        ℓ^c = mean_i [ −log( exp(s_{i,p(i)}/τ_{i,p(i)}) / Σ_{k≠i} exp(s_ik/τ_ik) ) ]
              + β · mean_{i, k≠i} Ω(τ_ik^c)
        L   = mean_c ℓ^c

    The contrastive term is SimCLR's NT-Xent (2N − 2 negatives, self masked with −inf) with one
    temperature per pair, i.e. the InfoNCE form (Eq. 2.4) rather than Eq. 2.1's hardest negative,
    as the toolkit's SimCLR-family losses. Heads are averaged (the paper sums) so the loss scale,
    and thus the learning rate, matches SimCLR's.

    Regularizer (paper's exact Ω and β UNVERIFIED: only its abstract was readable). The official
    code uses β·((D/2)·log τ + 1/τ) with an ill-defined D. We take Ω(τ) = log τ + 1/τ, its D = 2
    case: the negative log of an inverse-gamma prior on τ (shape → 0, scale 1), which is what
    keeps τ away from 0 (the 1/τ term) and ∞ (the log term). Eq. 2.1 subtracts βΩ for negatives;
    that is unbounded below as τ → τ_max, so we add βΩ for every pair. β = 0.1 as in the code.

    Under torch.distributed the keys are gathered with gradient and the self/positive columns
    are offset by ``rank * N`` (as NTXentLoss). Everything runs in fp32, even under autocast.

    Args:
        reg_weight: β >= 0.

    Shapes:
        z_a, z_b: C tensors (N, D) each (head c's projections of views a and b).
        temperatures: C ``PairTemperature`` modules. Returns (scalar loss, detached logs):
        ``loss_head{c}`` (ℓ^c), ``reg`` (mean Ω), ``tau_mean``/``tau_min``/``tau_max`` (all heads,
        local anchors × all keys, self excluded).
    """

    def __init__(self, reg_weight: float = 0.1) -> None:
        super().__init__()
        if reg_weight < 0:
            raise ValueError(f"reg_weight: must be >= 0, got {reg_weight}")
        self.reg_weight = reg_weight

    def forward(
        self, z_a: Sequence[Tensor], z_b: Sequence[Tensor], temperatures: Sequence[nn.Module]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if not len(z_a) == len(z_b) == len(temperatures) > 0:
            raise ValueError(
                f"z_a, z_b, temperatures: need C >= 1 each, got {len(z_a)}, {len(z_b)}, {len(temperatures)}"
            )
        logs: dict[str, Tensor] = {}
        losses, regs = [], []
        tau_sum, tau_min, tau_max, tau_count = [], [], [], 0  # over pairs without self, no host sync
        with torch.autocast(device_type=z_a[0].device.type, enabled=False):
            for c, (za, zb, temperature) in enumerate(zip(z_a, z_b, temperatures)):
                pairs = two_view_logits(za, zb, temperature=1.0)  # raw similarities, gathered keys
                tau = temperature(pairs.anchors, pairs.keys)  # (2N, 2WN)
                is_self = pairs.is_self()
                # -inf (not 0) so the self term leaves the denominator entirely.
                logits = (pairs.logits / tau).masked_fill(is_self, float("-inf"))
                reg = omega(tau).masked_fill(is_self, 0).sum() / (tau.numel() - tau.shape[0])
                loss = F.cross_entropy(logits, pairs.pos_cols) + self.reg_weight * reg
                losses.append(loss)
                regs.append(reg.detach())
                t = tau.detach()
                tau_sum.append(t.masked_fill(is_self, 0).sum())
                tau_min.append(t.masked_fill(is_self, float("inf")).min())
                tau_max.append(t.masked_fill(is_self, float("-inf")).max())
                tau_count += t.numel() - t.shape[0]  # one self pair per anchor row
                logs[f"loss_head{c}"] = loss.detach()
        logs.update(
            reg=torch.stack(regs).mean(),
            tau_mean=torch.stack(tau_sum).sum() / tau_count,
            tau_min=torch.stack(tau_min).min(),
            tau_max=torch.stack(tau_max).max(),
        )
        return torch.stack(losses).mean(), logs
