"""``fit``: one training run from a validated recipe, in one pass down.

    validate and build the parts -> build the trainer -> lock and prepare the run folder (new or
    resumed) -> train -> summarize

Every check happens in the first two steps, before anything is written. While training, the run
folder is locked (``run/lock.py``); SIGTERM / SIGUSR1 / Ctrl-C save ``last.ckpt`` at the current
step and stop (``run/signals.py``); before the first step they stop the run there, saving nothing.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import math
import signal
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ssl_toolkit.callbacks.curves import Curves
from ssl_toolkit.callbacks.finite_loss import FiniteLoss, NonFiniteLossError
from ssl_toolkit.callbacks.recipe_in_checkpoint import RecipeInCheckpoint
from ssl_toolkit.callbacks.rng_state import RNGState
from ssl_toolkit.callbacks.throughput import Throughput
from ssl_toolkit.errors import CheckpointError, RecipeError, TrainingStopped, WriteError
from ssl_toolkit.recipe.build import Parts, build_parts, build_trainer, load_recipe, recipe_to_store
from ssl_toolkit.run.checkpoint_io import AtomicCheckpointIO
from ssl_toolkit.run.last_checkpoint import LastCheckpoint
from ssl_toolkit.run.lock import RunLock
from ssl_toolkit.run.quiet import quiet
from ssl_toolkit.run.resume import ResumePoint, check_resume, find_resume, newest_checkpoint
from ssl_toolkit.run.resume_changes import ResumeChanges
from ssl_toolkit.run.resume_recipe import differences
from ssl_toolkit.run.signal_note import SignalNote, stopped_before_training
from ssl_toolkit.run.signals import Preemption, resume_command, start_command
from ssl_toolkit.run_folder import agreed_run_dir, check_out_dir, resume_name, write_run_files


@dataclass
class FitResult:
    """What ``fit`` reports: where the run went, its last loss and speed, and the final ``val/`` metrics.

    ``seconds`` is the whole ``trainer.fit``; ``train_seconds`` the training loop without
    evaluation; ``eval_seconds`` the ``eval_runs`` validation loops (``sanity_seconds`` the sanity
    check). ``images_per_sec`` (training, evaluation excluded) is None when no step after the
    warm-up was measured (``measured_steps`` 0).
    """

    run_dir: Path
    checkpoint: Path | None
    final_loss: float
    seconds: float
    images_per_sec: float | None
    steps: int
    val_metrics: dict[str, float]
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    eval_runs: int = 0
    sanity_seconds: float = 0.0
    measured_steps: int = 0
    best: dict[str, Path] = field(default_factory=dict)  # monitored metric -> its best checkpoint, by score
    logs: list[Path] = field(default_factory=list)  # the metrics.csv files this run wrote (none: logging off)
    fast_dev_run: bool = False  # trainer.fast_dev_run: Lightning turned logging and checkpoints off


def fit(
    recipe: dict[str, Any],
    argv: list[str] | None = None,
    note: SignalNote | None = None,
    stored: dict[str, Any] | None = None,
) -> FitResult:
    """Train from a validated recipe (``load_recipe``); see the module docstring for the order.

    ``recipe["resume"]`` (``none`` by default, ``auto``, a checkpoint or a run folder) continues a
    run in its own folder: optimizer, scheduler, EMA teacher, head buffers, callback states, RNG
    states and the loader position come from the checkpoint; earlier files are kept (the resumed
    part logs to ``csv/resume-N/``, the resume is recorded in ``resume-N.json``).

    ``note`` holds the stop signals noted so far (the CLI installs it before its imports); without
    one, ``fit`` installs its own. Either way the handlers in place before are back when ``fit`` ends.
    ``stored`` is the recipe as written to the run folder and the checkpoints (default ``recipe``;
    the CLI passes ``recipe_to_store``'s, where values from the environment stay expressions).

    Raises:
        RecipeError: anything wrong with the recipe, the data or the resume point (nothing written).
        TrainingStopped: a non-finite loss; names the step and the last good checkpoint.
        Preempted: a signal stopped training after saving ``last.ckpt``; names the resume command.
            A signal before the first training step stops the run there, saving nothing (a resumed
            run's checkpoints are left as they were); the message says so.
    """
    note = note or SignalNote()
    note.install()
    try:
        return _fit(recipe, argv, note, stored)
    finally:
        note.restore()


def fit_file(
    path: str | Path,
    overrides: Sequence[str] = (),
    argv: list[str] | None = None,
    note: SignalNote | None = None,
    verbose: bool = False,
    store_env: bool = False,
) -> FitResult:
    """What ``ssl-toolkit fit PATH [key=value ...] [--verbose]`` runs (the CLI calls this, and so
    does ``ssl_toolkit.fit``): ``load_recipe(path, overrides)``, then ``fit`` with the third-party
    messages of ``run/quiet.py`` held back unless ``verbose``.

    Args:
        path: the recipe YAML.
        overrides: dot-list ``key=value`` strings, as on the command line.
        argv: the command recorded in ``run.json`` and used in the resume hint (default ``sys.argv``).
        note: see ``fit``.
        verbose: show every third-party message.
        store_env: write values taken from the environment (``${oc.env:NAME}``) in clear into
            ``recipe.yaml`` and the checkpoints; by default the expression is stored, never the
            value, and one line says which keys came from the environment.

    Raises:
        RecipeError: the recipe, an override or the data is wrong (nothing written); and what
            ``fit`` raises.
    """
    recipe = load_recipe(path, overrides)
    stored, from_env = recipe_to_store(path, overrides, recipe)
    if from_env and not store_env:
        print(f"note: {', '.join(from_env)} come(s) from the environment: recipe.yaml and the checkpoints "
              "store the ${oc.env:...} expression, not the value (--store-env stores the value)")  # fmt: skip
    with quiet(verbose=verbose):
        return fit(recipe, argv=argv, note=note, stored=recipe if store_env else stored)


def _fit(recipe: dict[str, Any], argv: list[str] | None, note: SignalNote, stored: dict[str, Any] | None) -> FitResult:
    """``fit`` with the signals noted by ``note``."""
    pl.seed_everything(int(recipe.get("seed", 0)), workers=True, verbose=False)
    check_out_dir(recipe.get("out_dir", "runs/run"))
    parts = build_parts(recipe)
    point = find_resume(recipe.get("resume", "none"), recipe.get("out_dir", "runs/run"))
    if point is not None and rank_zero_only.rank == 0:
        for path, why in point.skipped:  # never pass over a checkpoint silently
            print(f"ssl-toolkit: resume: skipped {path} ({why})", file=sys.stderr)
    out_dir = recipe.get("out_dir", "runs/run")
    if point is None and recipe.get("resume") == "auto" and rank_zero_only.rank == 0:  # a mistyped out_dir shows
        print(
            f"ssl-toolkit: resume: auto: no checkpoint in {out_dir} (or {out_dir}_N); a new run starts", file=sys.stderr
        )
    run_dir = point.run_dir if point is not None else agreed_run_dir(out_dir, rank_zero_only.rank)
    resolved = {**recipe, "out_dir": str(run_dir)}
    stored = stored if stored is not None else recipe
    # The run folder is recorded, unless out_dir came from the environment (then its expression).
    kept = {**stored, "out_dir": stored["out_dir"] if "${oc.env:" in str(stored.get("out_dir")) else str(run_dir)}
    throughput = Throughput()
    last = run_dir / "checkpoints" / "last.ckpt"
    again = f"start again with: {start_command(argv)}"
    if point is None:
        not_started = f"no checkpoint written ({run_dir} holds the recipe and logs only); {again}"
    else:
        not_started = (f"checkpoints unchanged ({point.checkpoint} is at step {point.step}); "
                       f"resume with: {resume_command(argv, run_dir)}")  # fmt: skip
    preemption = Preemption(last, resume_command(argv, run_dir), note, not_started)
    own = [throughput, LastCheckpoint(last), preemption]
    if point is not None:  # the recipe's optimizer/schedule values over the checkpoint's, said and recorded
        own.append(ResumeChanges(run_dir / f"{resume_name(run_dir)}.json"))
    trainer = build_run_trainer(resolved, run_dir, parts, point, own, stored=kept)
    if point is not None:  # checked: let go of the mapped file (last.ckpt is replaced while training)
        point = replace(point, saved={})
    note.stop_if_received(f"nothing written; {again}")  # a signal during the checks: stop before any write
    lock = RunLock(run_dir) if rank_zero_only.rank == 0 else None  # DDP: rank 0 speaks for the run
    if lock is not None:
        lock.acquire()  # a second process training into run_dir stops here, before writing anything
    try:
        prepare_run_folder(trainer, run_dir, kept, argv, point, parts)
        seconds = train(trainer, parts, point, run_dir, preemption)
    finally:
        if lock is not None:
            lock.release()
    return summarize(trainer, run_dir, seconds, throughput)


def build_run_trainer(
    recipe: dict[str, Any],
    run_dir: Path,
    parts: Parts,
    point: ResumePoint | None,
    own: list[pl.Callback],
    stored: dict[str, Any] | None = None,
) -> pl.Trainer:
    """The recipe's trainer plus the callbacks every run has (and ``own``, those ``fit`` reads back:
    throughput, preemption); checks that need the trainer. ``stored`` (default ``recipe``) is the
    recipe each checkpoint carries."""
    extra = [
        *own,
        RecipeInCheckpoint(recipe if stored is None else stored),
        Curves(run_dir / "curves.png"),
        RNGState(int(recipe.get("seed", 0))),
    ]
    if "finite_loss" not in (recipe.get("callbacks") or {}):
        extra.append(FiniteLoss())
    with held_logs("lightning.pytorch"):  # Lightning's device banner only once the checks pass
        trainer = build_trainer(recipe, run_dir, extra_callbacks=extra)
        check_batch_per_process(parts.datamodule, trainer)
        if point is not None:
            check_resume(point, parts, recipe, trainer)
            changed = differences(point.saved.get("recipe"), stored if stored is not None else recipe)
            if changed and rank_zero_only.rank == 0:  # a key the user forgot to repeat shows
                print(f"ssl-toolkit: resume: this recipe differs from the checkpoint's in {changed}", file=sys.stderr)
    trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    return trainer


def prepare_run_folder(
    trainer: pl.Trainer,
    run_dir: Path,
    resolved: dict[str, Any],
    argv: list[str] | None,
    point: ResumePoint | None,
    parts: Parts,
) -> None:
    """Write the run folder's own files (rank 0 only) and point a resumed run's CSV at ``csv/resume-N/``."""
    if point is not None:
        # Lightning's CSV writer would replace csv/metrics.csv: the resumed part goes to csv/resume-N/.
        version = resume_name(run_dir)
        trainer.loggers = [
            CSVLogger(save_dir=str(run_dir), name="csv", version=version) if isinstance(lg, CSVLogger) else lg
            for lg in trainer.loggers
        ]
    if rank_zero_only.rank == 0:  # DDP: only rank 0 writes (loggers and checkpoints do the same)
        resumed_from = None if point is None else (point.checkpoint, point.step, point.epoch)
        write_run_files(run_dir, resolved, argv, resumed_from, parts.datamodule.skipped)


def train(trainer: pl.Trainer, parts: Parts, point: ResumePoint | None, run_dir: Path, preemption: Preemption) -> float:
    """``trainer.fit`` (from the resume point, if any); returns the wall time in seconds.

    A SIGTERM during the sanity check reaches Lightning's handler too, which leaves ``fit`` through
    ``SIGTERMException`` (a ``SystemExit`` with status 0): it becomes ``preemption``'s stop before
    training (exit 143), as a SIGTERM at any other point before the first step."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        # SSLModule owns on_after_batch_transfer on purpose (augmentation on the device).
        warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
        # The loader position is in the DataModule's checkpointed state (ResumableSampler), which
        # Lightning's mid-epoch warning does not know about; a resumed run reuses checkpoints/.
        warnings.filterwarnings("ignore", message=".*ended before the epoch ended.*")
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        try:
            ckpt_path = None if point is None else point.checkpoint
            trainer.fit(parts.module, datamodule=parts.datamodule, ckpt_path=ckpt_path, weights_only=True)
        except NonFiniteLossError as e:
            try:
                last = newest_checkpoint(run_dir)
            except CheckpointError:
                last = None
            kept = f"last good checkpoint: {last.checkpoint} (step {last.step})" if last else "no checkpoint written"
            raise TrainingStopped(f"{e}; {kept}") from None
        except WriteError as e:  # a checkpoint save on a full disk: the earlier files are intact
            try:
                last = newest_checkpoint(run_dir)
            except CheckpointError:
                last = None
            kept = f"last good checkpoint: {last.checkpoint} (step {last.step})" if last else "no checkpoint written"
            raise WriteError(f"{e}; {kept}; free space, then resume with: {preemption.resume_command}") from None
        except ValueError as e:
            if "`val_check_interval`" not in str(e):
                raise
            # Lightning checks it against the epoch's batch count only once the loaders exist.
            raise RecipeError(f"trainer.val_check_interval: {str(e).replace('`', '')}") from None
        except SIGTERMException:  # raised by Lightning's loops, which only saw it before on_train_start
            if preemption.note.training:
                raise
            raise stopped_before_training(signal.SIGTERM, preemption.not_started) from None
    seconds = time.perf_counter() - start
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish()  # flush the offline run before the summary is printed
    return seconds


def summarize(trainer: pl.Trainer, run_dir: Path, seconds: float, throughput: Throughput) -> FitResult:
    """The run's outcome as printed by ``ssl-toolkit fit``."""
    loss = trainer.callback_metrics.get("train/loss")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    return FitResult(
        run_dir=run_dir,
        checkpoint=ckpt if ckpt.exists() else None,
        final_loss=float(loss) if loss is not None else math.nan,
        seconds=seconds,
        images_per_sec=throughput.images_per_sec,
        steps=trainer.global_step,
        val_metrics={k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("val/")},
        best={
            cb.monitor: Path(cb.best_model_path)
            for cb in trainer.checkpoint_callbacks
            if isinstance(cb, ModelCheckpoint) and cb.monitor and Path(cb.best_model_path or "/nonexistent").is_file()
        },
        fast_dev_run=bool(trainer.fast_dev_run),
        logs=[
            Path(lg.log_dir) / "metrics.csv"
            for lg in trainer.loggers
            if isinstance(lg, CSVLogger) and (Path(lg.log_dir) / "metrics.csv").is_file()
        ],
        train_seconds=throughput.train_seconds,
        eval_seconds=throughput.eval_seconds,
        eval_runs=throughput.eval_runs,
        sanity_seconds=throughput.sanity_seconds,
        measured_steps=throughput.measured_steps,
    )


@contextlib.contextmanager
def held_logs(name: str) -> Iterator[None]:
    """Hold the records of logger ``name``; pass them on if the block succeeds, drop them if it
    raises (a failed check then prints its one-line error and nothing else)."""
    logger = logging.getLogger(name)
    handlers, held = logger.handlers[:], logging.handlers.BufferingHandler(capacity=10**6)
    logger.handlers = [held]
    try:
        yield
    finally:
        logger.handlers = handlers
    for record in held.buffer:  # reached only without an exception
        logger.handle(record)


def check_batch_per_process(datamodule: pl.LightningDataModule, trainer: pl.Trainer) -> None:
    """``data.batch_size`` is per process: every process needs a full batch of its own each step (and
    gradients are accumulated over at least one batch)."""
    if trainer.accumulate_grad_batches < 1:  # Lightning would divide by it
        raise RecipeError(
            f"trainer.accumulate_grad_batches: must be an int >= 1, got {trainer.accumulate_grad_batches}"
        )
    processes = trainer.num_devices * trainer.num_nodes
    images, batch = datamodule.num_train_samples, datamodule.batch_size
    if images // processes < batch:
        raise RecipeError(
            f"data.batch_size: {batch} per process x {processes} processes needs {batch * processes} "
            f"training images per step; the train split has {images}"
        )
    limit, batches = trainer.limit_train_batches, images // (processes * batch)
    if isinstance(limit, float) and int(limit * batches) < 1:  # Lightning would raise inside fit
        raise RecipeError(
            f"trainer.limit_train_batches: {limit} of the {batches} batches per epoch is less than one batch; "
            f"give at least {1 / batches:.3g}, or a whole number of batches"
        )
