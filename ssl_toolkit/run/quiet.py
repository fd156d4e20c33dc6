"""Quiet by default: the run's own lines are what ``ssl-toolkit fit`` shows.

Third-party messages that say nothing about the user's run are filtered, each by its exact
message (and category for warnings); ``ssl-toolkit fit --verbose`` shows everything.

Filtered (the list is ``WARNINGS`` and ``LOG_MESSAGES``):
  - Lightning's "Tip: For seamless cloud logging ... litlogger" and "... uploads ... litmodels"
    advertisements, and "Loading `train_dataloader` to estimate number of stepping batches";
  - torch's FutureWarning "`isinstance(treespec, LeafSpec)` is deprecated" raised inside Lightning;
  - Lightning's "Total length of `list` across ranks is zero" when no evaluation callback is on
    (no validation loaders, on purpose);
  - Lightning's "The number of training batches (N) is smaller than the logging interval
    Trainer(log_every_n_steps=M)" (an epoch shorter than ``trainer.log_every_n_steps``): logging
    counts steps across epochs, so ``train/loss`` is still logged every M steps; the epoch values
    are logged at each epoch's end either way;
  - Lightning's "It is recommended to use `self.log('val/...', ..., sync_dist=True)`" in a
    multi-process run, once per ``val/`` metric: the evaluation callbacks gather across processes
    themselves, so every process logs the same value (tested: 1 process = 2 processes); and the
    same for ``train/images_per_sec``, which counts every process's images and is logged by rank 0;
  - torch's FutureWarning "torch.distributed.nn.functional.all_gather is deprecated" in a
    multi-process run: ``ssl_toolkit.distributed.gather_with_grad`` uses it on purpose, as the one
    public all-gather whose backward returns the other processes' gradients;
  - the model summary's FLOPs column and "Total Flops" / "Modules in train|eval mode" lines (the
    summary table itself stays);
  - wandb's console output (``WANDB_SILENT``): the start banner and the end-of-run history/summary
    block; the run folder's ``wandb/`` is in ssl-toolkit's own summary. (wandb's "anonymous setting
    has no effect" warning is avoided at its source, in ``recipe/loggers.py``.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator

from lightning.fabric.utilities.warnings import PossibleUserWarning

# (message regex, category) pairs: only these warnings are hidden.
WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    (r"Total length of `list` across ranks is zero", UserWarning),
    (r"The number of training batches \(\d+\) is smaller than the logging interval", PossibleUserWarning),
    # The evaluation callbacks gather across processes themselves: every process logs the same value.
    (r"It is recommended to use `self\.log\('val/.*sync_dist=True\)`", PossibleUserWarning),
    # Throughput counts the images of every process and is logged by rank 0 alone.
    (r"It is recommended to use `self\.log\('train/images_per_sec'.*sync_dist=True\)`", PossibleUserWarning),
    # Deliberate: the one public all-gather that carries gradients back (ssl_toolkit/distributed.py).
    (r"torch\.distributed\.nn\.functional\.all_gather is deprecated", FutureWarning),
)
# Lightning log records (logger name prefix, message regex) that are dropped.
LOG_MESSAGES: tuple[tuple[str, str], ...] = (
    ("lightning.pytorch", r"^💡 Tip: For seamless cloud"),
    ("lightning.pytorch", r"^Loading `train_dataloader` to estimate number of stepping batches"),
)
_SUMMARY_DROP = ("Total Flops", "Modules in train mode", "Modules in eval mode")


class _LightningNoise(logging.Filter):
    """Drops ``LOG_MESSAGES`` and trims the model summary's FLOPs column on Lightning's loggers."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(record.name.startswith(name) and re.search(pattern, message) for name, pattern in LOG_MESSAGES):
            return False
        if "Total Flops" in message:
            record.msg, record.args = trim_model_summary(message), None
        return True


def trim_model_summary(table: str) -> str:
    """Lightning's model summary without the FLOPs column and the FLOPs / module-mode totals.

    Args:
        table: the summary as Lightning logs it (rows ``i | Name | Type | Params | Mode | FLOPs``).
    """
    lines = [line for line in table.split("\n") if not line.rstrip().endswith(_SUMMARY_DROP)]
    header = next((line for line in lines if line.rstrip().endswith("FLOPs")), None)
    if header is None:
        return "\n".join(lines)
    cut = header.rstrip().rfind("|")
    out = []
    for line in lines:
        if "|" in line and len(line) > cut:
            line = line[:cut].rstrip()
        elif set(line.strip()) == {"-"}:
            line = line[:cut]
        out.append(line)
    return "\n".join(out)


@contextlib.contextmanager
def quiet(verbose: bool = False) -> Iterator[None]:
    """Within the block, hide the third-party noise listed in the module docstring (nothing when ``verbose``)."""
    if verbose:
        yield
        return
    noise = _LightningNoise()
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    # Lightning's records propagate from child loggers to these handlers: filter at the handlers.
    handlers = [h for lg in loggers for h in lg.handlers]
    saved = os.environ.get("WANDB_SILENT")
    os.environ.setdefault("WANDB_SILENT", "true")
    for h in handlers:
        h.addFilter(noise)
    try:
        with warnings.catch_warnings():
            for pattern, category in WARNINGS:
                warnings.filterwarnings("ignore", message=f".*{pattern}", category=category)
            yield
    finally:
        for h in handlers:
            h.removeFilter(noise)
        if saved is None:
            os.environ.pop("WANDB_SILENT", None)
