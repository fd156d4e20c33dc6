"""Losses on embeddings: pure torch, no Lightning or omegaconf."""

from ssl_toolkit.losses.dcl import DCLLoss, DCLWLoss
from ssl_toolkit.losses.ntxent import NTXentLoss

LOSSES = {"ntxent": NTXentLoss, "dcl": DCLLoss, "dclw": DCLWLoss}

__all__ = ["LOSSES", "DCLLoss", "DCLWLoss", "NTXentLoss"]
