"""Losses on embeddings: pure torch, no Lightning or omegaconf."""

from ssl_toolkit.losses.ntxent import NTXentLoss

LOSSES = {"ntxent": NTXentLoss}

__all__ = ["LOSSES", "NTXentLoss"]
