"""Which metrics exist in a run, so a checkpoint ``monitor`` can be checked before training.

A ``ModelCheckpoint`` whose ``monitor`` nobody logs (a typo such as ``val/rank_me``) would run to
the end, exit 0 and keep no best checkpoint. ``check_monitors`` refuses it up front.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Metrics every fit logs: SSLModule's loss, and Throughput (always on in fit).
ALWAYS_LOGGED = ("train/loss", "train/images_per_sec")
# Recipe callback name -> the metrics it logs (the *_top5 keys only with more than 5 classes).
LOGGED_BY: dict[str, tuple[str, ...]] = {
    "knn": ("val/knn_top1", "val/knn_top5"),
    "linear_probe": ("val/linear_top1", "val/linear_top5", "train/linear_loss"),
    "rankme": ("val/rankme", "val/rankme_proj"),
    "throughput": ("train/images_per_sec",),
}


def check_monitors(callbacks: Mapping[str, Any], is_checkpoint: Mapping[str, bool]) -> None:
    """Every checkpoint callback's ``monitor`` must be a metric that an enabled callback logs.

    Args:
        callbacks: the recipe's ``callbacks`` section (name -> keywords).
        is_checkpoint: name -> whether that callback is a ``ModelCheckpoint``.

    Raises:
        RecipeError: ``callbacks.<name>.monitor`` naming the metric and what is logged.
    """
    from ssl_toolkit.errors import RecipeError

    logged = set(ALWAYS_LOGGED)
    for name in callbacks:
        logged.update(LOGGED_BY.get(name, ()))
    for name, kwargs in callbacks.items():
        monitor = (kwargs or {}).get("monitor")
        if not is_checkpoint.get(name) or monitor is None or monitor in logged:
            continue
        loggers = [n for n, keys in LOGGED_BY.items() if monitor in keys]
        hint = f"enable callbacks.{loggers[0]}" if loggers else f"logged in this recipe: {', '.join(sorted(logged))}"
        raise RecipeError(f"callbacks.{name}.monitor: {monitor!r} is logged by no enabled callback ({hint})")
