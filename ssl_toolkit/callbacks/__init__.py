"""Lightning callbacks; ``CALLBACKS`` is the one name -> class table for recipes."""

from lightning.pytorch.callbacks import LearningRateMonitor

from ssl_toolkit.callbacks.diagnostics import Diagnostics
from ssl_toolkit.callbacks.finite_loss import FiniteLoss, NonFiniteLossError
from ssl_toolkit.callbacks.knn import KNNProbe
from ssl_toolkit.callbacks.linear_probe import LinearProbe
from ssl_toolkit.callbacks.rankme import RankMe
from ssl_toolkit.callbacks.rng_state import RNGState
from ssl_toolkit.callbacks.run_checkpoint import RunCheckpoint
from ssl_toolkit.callbacks.throughput import Throughput

CALLBACKS = {
    # Lightning's ModelCheckpoint keywords; RunCheckpoint also survives a moved run folder.
    "checkpoint": RunCheckpoint,
    # A second checkpoint callback for the label-free choice: monitor val/rankme, mode max.
    "rankme_checkpoint": RunCheckpoint,
    "lr_monitor": LearningRateMonitor,
    "throughput": Throughput,
    "knn": KNNProbe,
    "linear_probe": LinearProbe,
    "rankme": RankMe,
    # Score distributions, ROC-AUC, alignment/uniformity/tolerance on fixed held-out image pairs.
    "diagnostics": Diagnostics,
    # Always on in `fit` (check_every_n_steps=10); name it here to change the interval.
    "finite_loss": FiniteLoss,
}

__all__ = [
    "CALLBACKS", "Diagnostics", "FiniteLoss", "KNNProbe", "LinearProbe", "NonFiniteLossError", "RNGState", "RankMe",
    "Throughput",
]  # fmt: skip
