"""Losses on embeddings: pure torch, no Lightning or omegaconf."""

from ssl_toolkit.losses.amcl import AMCLLoss, PairTemperature
from ssl_toolkit.losses.barlow_twins import BarlowTwinsLoss
from ssl_toolkit.losses.byol import BYOLLoss
from ssl_toolkit.losses.dcl import DCLLoss, DCLWLoss
from ssl_toolkit.losses.dino import DINOLoss
from ssl_toolkit.losses.groco import GroCoLoss
from ssl_toolkit.losses.hard_contrastive import HardContrastiveLoss
from ssl_toolkit.losses.mochi import MoCHiLoss
from ssl_toolkit.losses.mocov3 import MoCoV3Loss
from ssl_toolkit.losses.multi_view import MultiViewLoss
from ssl_toolkit.losses.mv_dhel import MVDHELLoss
from ssl_toolkit.losses.mv_infonce import MVInfoNCELoss
from ssl_toolkit.losses.mw import MWLoss
from ssl_toolkit.losses.nnclr import NNCLRLoss
from ssl_toolkit.losses.ntxent import NTXentLoss
from ssl_toolkit.losses.queue_infonce import QueueInfoNCELoss
from ssl_toolkit.losses.simsiam import SimSiamLoss
from ssl_toolkit.losses.sinkhorn import sinkhorn
from ssl_toolkit.losses.swav import SwAVLoss
from ssl_toolkit.losses.vicreg import VICRegLoss

# Losses selectable as head.loss in recipes: two-view losses called as loss(z_a, z_b) (averaged over
# view pairs by the head), and MultiViewLoss subclasses called once as loss([z_1, ..., z_V]).
# AMCLLoss has its own signature (per-head projections and temperature networks) and is built by
# AMCLHead; QueueInfoNCELoss (query, key, queue; MoCo's) and MoCHiLoss, which extends it, are for a
# MoCo head that owns the queue.
# BarlowTwinsLoss and VICRegLoss (the same value on every process), DINOLoss (student and teacher
# views, a centre) and NNCLRLoss (neighbours, predictions) are built by their heads. MoCoV3Loss (query,
# momentum key), BYOLLoss and SimSiamLoss (prediction, stop-gradient target) are one direction of
# their method's loss, called by MoCoV3Head, BYOLHead and SimSiamHead.
LOSSES = {
    "ntxent": NTXentLoss,
    "dcl": DCLLoss,
    "dclw": DCLWLoss,
    "hard_contrastive": HardContrastiveLoss,
    "mw": MWLoss,
    "mv_infonce": MVInfoNCELoss,
    "mv_dhel": MVDHELLoss,
    "groco": GroCoLoss,
}

__all__ = [
    "LOSSES",
    "AMCLLoss",
    "BarlowTwinsLoss",
    "BYOLLoss",
    "PairTemperature",
    "DCLLoss",
    "DCLWLoss",
    "DINOLoss",
    "GroCoLoss",
    "HardContrastiveLoss",
    "MoCHiLoss",
    "MoCoV3Loss",
    "MultiViewLoss",
    "MVDHELLoss",
    "MVInfoNCELoss",
    "MWLoss",
    "NNCLRLoss",
    "NTXentLoss",
    "QueueInfoNCELoss",
    "SimSiamLoss",
    "SwAVLoss",
    "VICRegLoss",
    "sinkhorn",
]
