"""DataLoader workers leave the stop signals to the training process.

A scheduler's stop signal often reaches every process of the job, not only the one that trains:
``timeout``, a terminal's Ctrl-C and SLURM (which signals all processes of a job step) signal the
whole process group. A DataLoader worker that dies of SIGTERM makes the training process raise
"DataLoader worker ... is killed by signal" in the middle of its step, before ``Preemption``
(``ssl_toolkit.run.signals``) can finish the step and save. Every loader the data modules build
therefore starts its workers with :func:`ignore_stop_signals`; the training process alone handles
the signal and shuts its workers down as usual (an end-of-data sentinel, and the workers' own
check that their parent is alive).

One way out does not shut them down: a process that leaves on an exception while a loader is still
being iterated (an error inside evaluation) reaches ``multiprocessing``'s exit hook with its workers
alive. That hook ends daemonic children with SIGTERM, which these workers ignore, and then waits
for them forever. So importing this module registers :func:`kill_daemonic_children` at exit, which
runs before ``multiprocessing``'s hook (exit hooks run last-registered first) and ends those
children with SIGKILL, as the hook would have ended them with SIGTERM.
"""

from __future__ import annotations

import atexit
import multiprocessing
import signal

# The signals ``Preemption`` turns into "finish the step, save, exit 128 + signal".
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT, signal.SIGHUP)


def ignore_stop_signals(worker_id: int) -> None:
    """``worker_init_fn`` of every DataLoader the toolkit builds: ignore SIGTERM, SIGUSR1, SIGINT and
    SIGHUP in this worker (``worker_id`` is unused; the signature is DataLoader's)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def kill_daemonic_children() -> None:
    """Exit hook of the main process: SIGKILL every daemonic ``multiprocessing`` child still alive
    (the DataLoader workers of a loader that was never shut down), since they ignore SIGTERM."""
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()


atexit.register(kill_daemonic_children)
