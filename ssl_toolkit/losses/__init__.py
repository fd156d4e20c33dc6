"""Losses on embeddings: pure torch, no Lightning or omegaconf."""

from ssl_toolkit.losses.amcl import AMCLLoss, PairTemperature
from ssl_toolkit.losses.dcl import DCLLoss, DCLWLoss
from ssl_toolkit.losses.mochi import MoCHiLoss
from ssl_toolkit.losses.ntxent import NTXentLoss
from ssl_toolkit.losses.sinkhorn import sinkhorn
from ssl_toolkit.losses.swav import SwAVLoss

# Two-view losses called as loss(z_a, z_b), selectable as head.loss in recipes. AMCLLoss has its own
# signature (per-head projections and temperature networks) and is built by AMCLHead; MoCHiLoss
# (query, key, queue) is for a MoCo head that owns the queue.
LOSSES = {"ntxent": NTXentLoss, "dcl": DCLLoss, "dclw": DCLWLoss}

__all__ = [
    "LOSSES",
    "AMCLLoss",
    "PairTemperature",
    "DCLLoss",
    "DCLWLoss",
    "MoCHiLoss",
    "NTXentLoss",
    "SwAVLoss",
    "sinkhorn",
]
