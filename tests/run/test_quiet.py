"""run/quiet.py: exactly the listed third-party messages are hidden, and --verbose shows them."""

from __future__ import annotations

import io
import logging
import warnings

import lightning.pytorch  # noqa: F401  (installs Lightning's stream handler)

from ssl_toolkit.run.quiet import quiet, trim_model_summary

LEAF = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead."
TABLE = """
  | Name     | Type          | Params | Mode  | FLOPs
-----------------------------------------------------------
0 | backbone | ResNet        | 4.9 M  | train | 0    
1 | head     | SimCLRHead    | 656 K  | train | 0    
-----------------------------------------------------------
5.6 M     Trainable params
22.316    Total estimated model params size (MB)
84        Modules in train mode
0         Modules in eval mode
0         Total Flops"""  # noqa: W291 (Lightning's trailing spaces)


def emit(verbose: bool) -> list[str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet(verbose=verbose):
            warnings.warn(LEAF, FutureWarning, stacklevel=1)
            warnings.warn(LEAF, UserWarning, stacklevel=1)  # same text, other category: not ours to hide
            warnings.warn("your run's own warning", UserWarning, stacklevel=1)
    return [f"{w.category.__name__}: {w.message}" for w in seen]


def test_warnings_filtered_by_message_and_category_unless_verbose() -> None:
    assert emit(verbose=False) == [f"UserWarning: {LEAF}", "UserWarning: your run's own warning"]
    assert len(emit(verbose=True)) == 3


def test_short_epoch_logging_interval_warning_filtered_unless_verbose() -> None:
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    text = ("The number of training batches (4) is smaller than the logging interval Trainer(log_every_n_steps=5). "
            "Set a lower value for log_every_n_steps if you want to see logs for the training epoch.")  # fmt: skip
    for verbose, shown in ((False, 0), (True, 1)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with quiet(verbose=verbose):
                warnings.warn(text, PossibleUserWarning, stacklevel=1)
        assert len(seen) == shown


def test_sync_dist_advice_filtered_for_val_metrics_only() -> None:
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    def advice(name: str) -> str:
        return (f"It is recommended to use `self.log({name!r}, ..., sync_dist=True)` when logging on epoch level in "
                "distributed setting to accumulate the metric across devices.")  # fmt: skip

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet(verbose=False):
            warnings.warn(advice("val/knn_top1"), PossibleUserWarning, stacklevel=1)  # gathered by our callbacks
            warnings.warn(advice("train/images_per_sec"), PossibleUserWarning, stacklevel=1)  # all processes' images
            warnings.warn(advice("train/my_metric"), PossibleUserWarning, stacklevel=1)  # a user's own: kept
    assert [str(w.message) for w in seen] == [advice("train/my_metric")]


def test_all_gather_deprecation_filtered_unless_verbose() -> None:
    text = ("torch.distributed.nn.functional.all_gather is deprecated, "
            "use torch.distributed._functional_collectives.all_gather_tensor_autograd instead.")  # fmt: skip
    other = "torch.distributed.nn.functional.broadcast is deprecated"  # not used by the toolkit: kept
    for verbose, shown in ((False, 0), (True, 1)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with quiet(verbose=verbose):
                warnings.warn(text, FutureWarning, stacklevel=1)
                warnings.warn(other, FutureWarning, stacklevel=1)
        assert [str(w.message) for w in seen] == [text][:shown] + [other]


def test_lightning_tip_dropped_and_summary_trimmed_on_lightning_handlers() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # stands for Lightning's own console handler
    root = logging.getLogger("lightning.pytorch")
    root.addHandler(handler)
    log = logging.getLogger("lightning.pytorch.trainer.connectors.logger_connector")
    try:
        with quiet():
            log.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
            log.info("GPU available: False, used: False")
            logging.getLogger("lightning.pytorch.callbacks.model_summary").info(TABLE)
        err = stream.getvalue()
        assert "Tip" not in err and "GPU available: False" in err
        assert "FLOPs" not in err and "Total Flops" not in err and "| backbone | ResNet        | 4.9 M  | train" in err
        with quiet(verbose=True):
            log.info("💡 Tip: shown with --verbose")
        log.info("💡 Tip: shown outside the block")
        assert stream.getvalue().count("Tip: shown") == 2
    finally:
        root.removeHandler(handler)


def test_trim_model_summary_drops_the_flops_column_only() -> None:
    lines = trim_model_summary(TABLE).splitlines()
    assert lines[1] == "  | Name     | Type          | Params | Mode"
    assert lines[3] == "0 | backbone | ResNet        | 4.9 M  | train"
    assert "5.6 M     Trainable params" in lines and not any("Modules in" in line for line in lines)
    assert trim_model_summary("no table here") == "no table here"
