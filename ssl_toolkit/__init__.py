"""ssl_toolkit: self-supervised vision pretraining with timm backbones and swappable SSL heads."""

__version__ = "0.1.0"
