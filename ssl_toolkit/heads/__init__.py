"""SSL heads: one file per method; ``HEADS`` is the one name -> class table."""

from ssl_toolkit.heads.base import BatchInfo, HeadOutput, SSLHead, Views
from ssl_toolkit.heads.simclr import SimCLRHead

HEADS = {"simclr": SimCLRHead}

__all__ = ["HEADS", "BatchInfo", "HeadOutput", "SSLHead", "SimCLRHead", "Views"]
