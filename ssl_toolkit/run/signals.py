"""Preemption: SIGTERM, SIGUSR1 or Ctrl-C stop a run at the end of the current step with a
resumable checkpoint, and the process exits with ``128 + signal`` so a scheduler requeues it.

Lightning's own SIGTERM handling sets ``trainer.received_sigterm`` and leaves ``fit`` through
``SIGTERMException``, a ``SystemExit`` with status 0, without saving anything; its
``OnExceptionCheckpoint`` saves on *every* exception (a NaN stop too) and deletes the file again at
teardown. ``Preemption`` keeps Lightning's shape (a flag set by the handler, acted on between steps,
the ``on_exception`` path for the way out) and adds the save, the one-line hint and the exit status.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint

from ssl_toolkit.run.errors import Preempted

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preemption(Checkpoint):
    """Turns SIGTERM / SIGUSR1 / SIGINT into "finish this step, save ``path``, raise ``Preempted``".

    The handlers are installed at ``on_train_start`` (after Lightning's own) and only note the
    signal; at the end of the step (``on_train_batch_end``, after the step's other checkpoints, as
    Lightning orders ``Checkpoint`` callbacks last) the processes agree on it (a max-reduction under
    DDP, so all stop at the same step), every process takes part in ``trainer.save_checkpoint(path)``
    (the same loop state as a periodic mid-epoch checkpoint, so ``resume`` continues exactly), and
    ``Preempted`` is raised. A second Ctrl-C quits at once without saving. On SLURM, send the signal
    to the job step (``#SBATCH --signal=TERM@120`` or ``USR1@120``); see docs/cluster.md.

    Args:
        path: the checkpoint to write (``<run>/checkpoints/last.ckpt``: always the newest state).
        resume_command: the command line that continues the run, printed with the stop.
    """

    def __init__(self, path: Path, resume_command: str) -> None:
        self.path, self.resume_command = Path(path), resume_command
        self.received: int = 0
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.received:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, save nothing
        if signum == signal.SIGINT:
            print("\nssl-toolkit: Ctrl-C: saving a checkpoint after this step (Ctrl-C again to quit without saving)",
                  file=sys.stderr, flush=True)  # fmt: skip
        self.received = self.received or signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.received_sigterm:  # a SIGTERM during setup went to Lightning's handler: ours now
            self.received = signal.SIGTERM
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handler)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        received = self.received
        if trainer.world_size > 1:  # one tiny collective per step; Lightning's own check costs the same
            flag = torch.tensor(received, device=trainer.strategy.root_device)
            received = int(trainer.strategy.reduce(flag, reduce_op="max"))
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
    words = list(sys.argv if argv is None else argv)
    words = words[words.index("fit") :] if "fit" in words else words
    return shlex.join(["ssl-toolkit", *(w for w in words if not w.startswith("resume=")), f"resume={run_dir}"])
