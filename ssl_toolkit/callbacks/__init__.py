"""Lightning callbacks; ``CALLBACKS`` is the one name -> class table for recipes."""

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

from ssl_toolkit.callbacks.throughput import Throughput

CALLBACKS = {"checkpoint": ModelCheckpoint, "lr_monitor": LearningRateMonitor, "throughput": Throughput}

__all__ = ["CALLBACKS", "Throughput"]
