"""Score distributions, ROC-AUC, alignment / uniformity / tolerance on fixed image pairs, per evaluation."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from ssl_toolkit.callbacks.diagnostics_plot import plot_run
from ssl_toolkit.callbacks.eval_features import EvalCallback, check_outputs
from ssl_toolkit.callbacks.eval_plan import FeatureRequest
from ssl_toolkit.checks import check_int
from ssl_toolkit.data.subset import fixed_subset
from ssl_toolkit.diagnostics import BINS, MAX_IMAGES, SpaceDiagnostics, diagnose, project_pairs
from ssl_toolkit.embedding import EmbeddedSplit, gather_split


class Diagnostics(EvalCallback):
    """How positive and negative similarities move while a contrastive method trains.

    At every evaluation (Lightning's validation loop: ``val_check_interval``,
    ``check_val_every_n_epoch``, ``limit_val_batches``) two augmented views of the same fixed
    ``num_images`` images (a seeded random subset of the held-out split, or of the train split
    when the data has none; :func:`pairs_request`) are embedded with the module's own training
    augmentation under a fixed seed: the same draw at every evaluation, so evaluations are
    comparable, drawn from a generator of its own, so the training run's random stream does not
    move. The work is one eval-mode forward of 2 x ``num_images`` images per evaluation. Backbone
    features and projector embeddings (and each AMCL projection head) are gathered over processes
    and scored by :func:`ssl_toolkit.diagnostics.diagnose` on every process alike.

    Logs ``val/diag_<space>_<name>`` for space ``proj``, ``feat`` (and ``proj_head<c>``) and name
    ``auc``, ``mean_rank``, ``alignment``, ``uniformity``, ``tolerance`` (labelled data only),
    ``pos_median``, ``neg_median``. Writes, on global rank 0, into ``<run>/diagnostics/``
    (``trainer.default_root_dir``): ``quantiles.csv`` (one row per evaluation and space: step,
    epoch, the scalars and the positive / negative quantiles; a resumed run appends to it) and
    ``scores.png`` (every evaluation's positive and negative score distributions overlaid,
    coloured by step, and the AUC per step; redrawn after each evaluation). With a wandb logger
    the histograms also go to wandb (``diag/<space>_pos``, ``diag/<space>_neg``). The history
    of the PNG is in the checkpoint (``state_dict``), so a resumed run redraws all of it. The
    sanity check's evaluation is not recorded.

    Args:
        num_images: N, the fixed images (at most 4096: N (N - 1) negative scores are kept).
        seed: seed of the image subset and of the views.
    """

    def __init__(self, num_images: int = 1024, seed: int = 0) -> None:
        super().__init__()
        check_int("num_images", num_images, minimum=2)
        if num_images > MAX_IMAGES:
            raise ValueError(f"num_images: at most {MAX_IMAGES}, got {num_images}")
        check_int("seed", seed, minimum=0)
        self.num_images, self.seed = num_images, seed
        self.history: list[dict[str, Any]] = []  # per recorded evaluation: step, epoch, space -> diagnostics
        self._parts: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        self.last: dict[str, SpaceDiagnostics] = {}  # the latest evaluation's result (set by score)
        self.folder: Path | None = None

    def requests(self, datamodule: Any) -> Mapping[str, FeatureRequest]:
        request = pairs_request(datamodule, self.num_images, self.seed)
        return {} if request.rows is None or len(request.rows) < 2 else {"pairs": request}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.folder = Path(trainer.default_root_dir) / "diagnostics"

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._parts.clear()

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if "pairs" not in self.served.get(dataloader_idx, ()):
            return
        check_outputs(outputs, self)
        feats = outputs["feats"]  # (c, 2, F): the chunk's two seeded views (``EvalBatch``)
        self._parts.append((feats, project_pairs(pl_module, feats), outputs["labels"], outputs["index"]))

    def compute(self, pl_module: pl.LightningModule, datamodule: Any) -> dict[str, float]:
        results = self.score(pl_module)
        return {f"val/diag_{space}_{k}": v for space, d in results.items() for k, v in d.scalars().items()}

    def score(self, pl_module: Any) -> dict[str, SpaceDiagnostics]:
        """Gather this evaluation's pairs over processes (sorted by index, padding repeats dropped)
        and diagnose them; ``{}`` when the loop produced none. Every process must call it."""
        if not self._parts:
            return {}
        feats, proj, labels, index = (torch.cat(p) for p in zip(*self._parts))
        n, f = feats.shape[0], feats.shape[-1]
        split = gather_split(EmbeddedSplit(feats.reshape(n, -1), proj.reshape(n, -1), labels, index))
        feats, proj = split.feats.view(-1, 2, f), split.proj.view(split.feats.shape[0], 2, -1)
        labels = split.labels if bool((split.labels >= 0).any()) else None
        self.last = diagnose(feats, proj, labels, pl_module.projection_parts)
        return self.last

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.last = {}
        super().on_validation_epoch_end(trainer, pl_module)  # compute + log
        self._parts.clear()
        if not self.last or trainer.sanity_checking:
            return
        record = {"step": int(trainer.global_step), "epoch": int(trainer.current_epoch),
                  "spaces": {k: d.as_dict() for k, d in self.last.items()}}  # fmt: skip
        self.history.append(record)
        if trainer.is_global_zero:
            self.write(record)
            log_histograms(trainer, self.last)

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record``'s rows to ``quantiles.csv`` (header only in a new file) and redraw
        ``scores.png`` from the whole history."""
        assert self.folder is not None, "setup() sets the run folder"
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "quantiles.csv"
        rows = [{"step": record["step"], "epoch": record["epoch"], "space": space,
                 **SpaceDiagnostics(**d).row()} for space, d in record["spaces"].items()]  # fmt: skip
        new = not path.exists()
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            if new:
                writer.writeheader()
            writer.writerows(rows)
        plot_run(self.history, self.folder / "scores.png", title=self.folder.parent.name)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._parts.clear()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._parts.clear()

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))


def pairs_request(datamodule: Any, num_images: int, seed: int) -> FeatureRequest:
    """The diagnostics' images: ``min(num_images, N)`` seeded rows (:func:`fixed_subset`) of the
    training data's held-out split (its train split when it has none), 2 views seeded by ``seed``.
    The callback and ``ssl-toolkit diagnose`` both read them."""
    split = "val" if datamodule.has_val else "train"
    rows = fixed_subset(int(datamodule.split_size(split)), num_images, seed)
    return FeatureRequest(split, FeatureRequest.rows_of(rows), views=2, seed=seed)


def log_histograms(trainer: pl.Trainer, results: dict[str, SpaceDiagnostics]) -> None:
    """Positive / negative score histograms to every wandb logger (``diag/<space>_pos`` / ``_neg``)."""
    loggers = [lg for lg in trainer.loggers if type(lg).__name__ == "WandbLogger"]
    if not loggers:
        return
    import numpy as np
    import wandb

    edges = np.linspace(-1.0, 1.0, BINS + 1)
    data = {}
    for space, d in results.items():
        for kind, hist in (("pos", d.pos_hist), ("neg", d.neg_hist)):
            data[f"diag/{space}_{kind}"] = wandb.Histogram(np_histogram=(np.asarray(hist), edges))
    for logger in loggers:
        logger.log_metrics(data, step=trainer.global_step)
