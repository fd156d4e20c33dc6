"""ssl_toolkit: self-supervised vision pretraining with timm backbones and swappable SSL heads.

The Python API (every name in ``__all__``; ``docs/python_api.md``): ``fit`` runs a recipe exactly as
``ssl-toolkit fit`` does; ``load_backbone`` gives a checkpoint's trained timm backbone without the
data; ``load_run`` the whole module (and the data when wanted); the loss classes work in a plain
training loop; bad input raises ``UserError`` with one line naming the file or key. The registries
map a recipe's ``name`` keys to classes, one per family:

    >>> import torch
    >>> from ssl_toolkit import AUGMENTS, DATAMODULES, HEADS, LOSSES
    >>> HEADS["simclr"].__name__, LOSSES["ntxent"].__name__, list(AUGMENTS)
    ('SimCLRHead', 'NTXentLoss', ['simclr', 'multicrop'])
    >>> DATAMODULES["synthetic"](num_samples=8, batch_size=4).batch_size
    4
    >>> LOSSES["dcl"](temperature=0.1)(torch.randn(8, 16), torch.randn(8, 16)).shape
    torch.Size([])

``import ssl_toolkit`` itself loads nothing heavy: each name is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it (imported on first access; see __getattr__).
_EXPORTS = {
    "fit": "ssl_toolkit.api",
    "load_backbone": "ssl_toolkit.api",
    "load_run": "ssl_toolkit.api",
    "Backbone": "ssl_toolkit.api",
    "UserError": "ssl_toolkit.errors",
    "HEADS": "ssl_toolkit.heads",
    "LOSSES": "ssl_toolkit.losses",
    "AUGMENTS": "ssl_toolkit.augment",
    "DATAMODULES": "ssl_toolkit.data",
    "NTXentLoss": "ssl_toolkit.losses",
    "DCLLoss": "ssl_toolkit.losses",
    "DCLWLoss": "ssl_toolkit.losses",
    "HardContrastiveLoss": "ssl_toolkit.losses",
    "MWLoss": "ssl_toolkit.losses",
    "MVInfoNCELoss": "ssl_toolkit.losses",
    "MVDHELLoss": "ssl_toolkit.losses",
    "GroCoLoss": "ssl_toolkit.losses",
}
__all__ = [
    "fit",
    "load_backbone",
    "load_run",
    "Backbone",
    "UserError",
    "HEADS",
    "LOSSES",
    "AUGMENTS",
    "DATAMODULES",
    "NTXentLoss",
    "DCLLoss",
    "DCLWLoss",
    "HardContrastiveLoss",
    "MWLoss",
    "MVInfoNCELoss",
    "MVDHELLoss",
    "GroCoLoss",
]  # fmt: skip  (the keys of _EXPORTS; tests/test_api.py checks)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first use
    from ssl_toolkit.api import Backbone, fit, load_backbone, load_run
    from ssl_toolkit.augment import AUGMENTS
    from ssl_toolkit.data import DATAMODULES
    from ssl_toolkit.errors import UserError
    from ssl_toolkit.heads import HEADS
    from ssl_toolkit.losses import (
        LOSSES,
        DCLLoss,
        DCLWLoss,
        GroCoLoss,
        HardContrastiveLoss,
        MVDHELLoss,
        MVInfoNCELoss,
        MWLoss,
        NTXentLoss,
    )


def __getattr__(name: str) -> Any:
    """``ssl_toolkit.<name>`` for a name of ``__all__``: imported from its module on first access."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ssl_toolkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
