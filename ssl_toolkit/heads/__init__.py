"""SSL heads: one file per method; ``HEADS`` is the one name -> class table."""

from ssl_toolkit.heads.amcl import AMCLHead
from ssl_toolkit.heads.base import BatchInfo, HeadOutput, SSLHead, Views
from ssl_toolkit.heads.simclr import SimCLRHead

HEADS = {"simclr": SimCLRHead, "amcl": AMCLHead}

__all__ = ["HEADS", "AMCLHead", "BatchInfo", "HeadOutput", "SSLHead", "SimCLRHead", "Views"]
