"""Preemption: SIGTERM, SIGUSR1, SIGHUP (terminal closed, ssh dropped) or Ctrl-C stop a run at the
end of the current step with a resumable checkpoint, and the process exits with ``128 + signal``
so a scheduler requeues it.

Lightning's own SIGTERM handling sets ``trainer.received_sigterm`` and leaves ``fit`` through
``SIGTERMException``, a ``SystemExit`` with status 0, without saving anything; its
``OnExceptionCheckpoint`` saves on *every* exception (a NaN stop too) and deletes the file again at
teardown. ``Preemption`` keeps Lightning's shape (a flag set by the handler, acted on between steps,
the ``on_exception`` path for the way out) and adds the save, the one-line hint and the exit status.
A signal before the first training step (noted by ``run/signal_note.py`` from the start of ``fit``)
stops the run before that step, saving nothing, with the same exit status and a line saying so.
"""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint

from ssl_toolkit.errors import Preempted
from ssl_toolkit.run.signal_note import SignalNote, stopped_before_training


class Preemption(Checkpoint):
    """Turns SIGTERM / SIGUSR1 / SIGHUP / SIGINT into "finish this step, save ``path``, raise ``Preempted``",
    and a signal that came before training started into "stop before the first step, save nothing".

    The signals are noted by ``note`` (a ``SignalNote`` that ``fit``, or the CLI, installed when the
    run started); Lightning puts its own SIGTERM handler in front of it while ``fit`` sets up, so
    ``note`` is installed again at ``on_train_start``. A signal noted before training stops the run
    at ``on_sanity_check_start`` or ``on_train_start`` (``train`` in ``run/fit.py`` also turns
    Lightning's ``SIGTERMException`` from inside the sanity check into the same stop), with
    ``Preempted`` naming ``not_started``: what was and was not saved (a resumed run's checkpoints are
    left as they are). Once training runs, at the end of each step (``on_train_batch_end``, after
    the step's other checkpoints, as Lightning orders ``Checkpoint`` callbacks last) the processes
    agree on the signal (a max-reduction under DDP, so all stop at the same step), every process
    takes part in ``trainer.save_checkpoint(path)`` (the same loop state as a periodic mid-epoch
    checkpoint, so ``resume`` continues exactly), and ``Preempted`` is raised. A second Ctrl-C quits
    at once without saving. On SLURM, send the signal to the job step (``#SBATCH --signal=TERM@120``
    or ``USR1@120``); see docs/cluster.md.

    Args:
        path: the checkpoint to write (``<run>/checkpoints/last.ckpt``: always the newest state).
        resume_command: the command line that continues the run, printed with the stop.
        note: the run's ``SignalNote`` (installed; ``fit`` restores the handlers when it ends).
        not_started: what a stop before the first training step says after "before training
            started; " (e.g. ``no checkpoint written; start again with: ...``).
    """

    def __init__(self, path: Path, resume_command: str, note: SignalNote, not_started: str) -> None:
        self.path, self.resume_command = Path(path), resume_command
        self.note, self.not_started = note, not_started

    def _agreed(self, trainer: pl.Trainer) -> int:
        """The signal noted by any process (0: none); a collective under DDP."""
        received = self.note.received
        if trainer.world_size > 1:  # one tiny collective per step; Lightning's own check costs the same
            flag = torch.tensor(received, device=trainer.strategy.root_device)
            received = int(trainer.strategy.reduce(flag, reduce_op="max"))
        return received

    def stop_before_training(self, trainer: pl.Trainer) -> None:
        """Raise ``Preempted`` if a signal was noted (or reached Lightning's handler) before training."""
        if trainer.received_sigterm and not self.note.received:  # Lightning's handler alone saw it
            self.note.received = signal.SIGTERM
        received = self._agreed(trainer)
        if received:
            raise stopped_before_training(received, self.not_started)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop_before_training(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop_before_training(trainer)
        self.note.install()  # over Lightning's SIGTERM handler (and SLURM's SIGUSR1 one): ours decide
        self.note.training = True

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        received = self._agreed(trainer)
        if not received:
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # the full state resume needs
        name = signal.Signals(received).name
        raise Preempted(
            f"stopped by {name} after step {trainer.global_step}; checkpoint: {self.path}; "
            f"resume with: {self.resume_command}",
            exit_code=128 + received,
        )


def resume_command(argv: list[str] | None, run_dir: Path) -> str:
    """``ssl-toolkit fit RECIPE [overrides]`` of ``argv`` (default ``sys.argv``) with any ``resume=...``
    replaced by ``resume=<run_dir>`` (a run folder resumes from its newest readable checkpoint)."""
    words = (w for w in _fit_words(argv) if not w.startswith("resume="))
    return shlex.join(["ssl-toolkit", *words, f"resume={run_dir}"])


def start_command(argv: list[str] | None) -> str:
    """``ssl-toolkit fit RECIPE [overrides]`` of ``argv`` (default ``sys.argv``), as given."""
    return shlex.join(["ssl-toolkit", *_fit_words(argv)])


def _fit_words(argv: list[str] | None) -> list[str]:
    words = list(sys.argv if argv is None else argv)
    return words[words.index("fit") :] if "fit" in words else words
