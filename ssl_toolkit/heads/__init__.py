"""SSL heads: one file per method; ``HEADS`` is the one name -> class table."""

from ssl_toolkit.heads.amcl import AMCLHead
from ssl_toolkit.heads.barlow_twins import BarlowTwinsHead
from ssl_toolkit.heads.base import BatchInfo, HeadOutput, SSLHead, Views
from ssl_toolkit.heads.byol import BYOLHead
from ssl_toolkit.heads.dino import DINOHead
from ssl_toolkit.heads.ft import MoCoV2FTHead
from ssl_toolkit.heads.hydra import HydraHead
from ssl_toolkit.heads.moco import MoCHiHead, MoCoV2Head
from ssl_toolkit.heads.mocov3 import MoCoV3Head
from ssl_toolkit.heads.nnclr import NNCLRHead
from ssl_toolkit.heads.simclr import SimCLRHead
from ssl_toolkit.heads.simsiam import SimSiamHead
from ssl_toolkit.heads.swav import SwAVHead
from ssl_toolkit.heads.vicreg import VICRegHead

HEADS = {
    "simclr": SimCLRHead,
    "amcl": AMCLHead,
    "hydra": HydraHead,
    "mocov2": MoCoV2Head,
    "mochi": MoCHiHead,
    "mocov2_ft": MoCoV2FTHead,
    "swav": SwAVHead,
    "barlow_twins": BarlowTwinsHead,
    "vicreg": VICRegHead,
    "dino": DINOHead,
    "nnclr": NNCLRHead,
    "mocov3": MoCoV3Head,
    "byol": BYOLHead,
    "simsiam": SimSiamHead,
}

__all__ = [
    "HEADS",
    "AMCLHead",
    "BarlowTwinsHead",
    "DINOHead",
    "BYOLHead",
    "HydraHead",
    "MoCHiHead",
    "MoCoV2FTHead",
    "MoCoV2Head",
    "NNCLRHead",
    "MoCoV3Head",
    "BatchInfo",
    "HeadOutput",
    "SSLHead",
    "SimCLRHead",
    "SimSiamHead",
    "SwAVHead",
    "VICRegHead",
    "Views",
]
