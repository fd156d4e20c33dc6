"""The stop signals a ``fit`` receives, noted from its first line on (standard library only).

Python's default SIGTERM / SIGUSR1 / SIGHUP action ends the process on the spot, silently, with status
128 + signal, and Ctrl-C raises ``KeyboardInterrupt`` wherever the program is. ``SignalNote`` replaces
both by "note the signal and go on": the CLI installs it before it imports torch (the slow part of a
start), and ``fit`` acts on what was noted at defined points (``run/signals.py``): before anything is
written, before the sanity check, before the first training step, and after every step once
training runs.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

from ssl_toolkit.errors import Preempted

# SIGHUP: the terminal closed or the ssh connection dropped; saved like SIGTERM.
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT, signal.SIGHUP)


class SignalNote:
    """Installs note-only handlers for SIGTERM, SIGUSR1, SIGHUP and SIGINT; ``received`` is the first one.

    Use as a context manager (the previous handlers come back at the end). A second Ctrl-C raises
    ``KeyboardInterrupt`` at once. ``training`` (set by ``Preemption`` once training starts) only
    changes what the first Ctrl-C prints. Handlers can only be installed from the main thread; in
    another thread nothing is installed and nothing is noted.
    """

    def __init__(self) -> None:
        self.received: int = 0
        self.training = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.received:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, save nothing
        if signum == signal.SIGINT:
            what = "saving a checkpoint after this step" if self.training else "stopping before training starts"
            print(f"\nssl-toolkit: Ctrl-C: {what} (Ctrl-C again to quit without saving)", file=sys.stderr, flush=True)
        self.received = self.received or signum

    def install(self) -> None:
        """Put the note-only handlers in place (again: over any handler installed since, e.g. Lightning's)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in SIGNALS:
            previous = signal.signal(signum, self._handler)
            self._previous.setdefault(signum, previous)  # the handlers from before the first install

    def restore(self) -> None:
        """Put back the handlers that were in place before the first ``install``."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def stop_if_received(self, outcome: str) -> None:
        """Raise ``Preempted`` ("stopped by SIG... before training started; <outcome>") if a signal
        was noted; ``outcome`` says what was and was not saved and how to go on."""
        if self.received:
            raise stopped_before_training(self.received, outcome)

    def __enter__(self) -> SignalNote:
        self.install()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.restore()


def stopped_before_training(signum: int, outcome: str) -> Preempted:
    """The stop of a run that a signal ended before its first training step (exit ``128 + signum``)."""
    name = signal.Signals(signum).name
    return Preempted(f"stopped by {name} before training started; {outcome}", exit_code=128 + signum)
