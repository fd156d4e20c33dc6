"""The one error hierarchy of the command line: every problem a user can fix is a ``UserError``.

The CLI catches ``UserError`` (and nothing broader), prints ``ssl-toolkit: error: <message>`` and
exits with status 2; the message is one line that names the recipe key, the argument or the file.
``TrainingStopped`` is different: the run started and stopped on its own (non-finite loss), exit 1.
"""

from __future__ import annotations

import errno

# The errors of a write the user fixes by freeing space or choosing another place.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class UserError(Exception):
    """A problem the user can fix; the message is one line naming the key, argument or file.

    Exported as ``ssl_toolkit.UserError``: the one type to catch around the Python API
    (``RecipeError``, ``CheckpointError``, ``ArgumentError`` and ``DataError`` are its kinds).

    Example:
        >>> from ssl_toolkit import UserError, load_backbone
        >>> try:
        ...     load_backbone("runs/nowhere/last.ckpt")
        ... except UserError as e:
        ...     print(e)
        checkpoint: runs/nowhere/last.ckpt does not exist
    """


class RecipeError(UserError):
    """A bad recipe or override (``<section>.<key>: ...``), found before any training."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read or rebuilt (names the file).

    Attributes:
        reason: for a file that does not read at all, the short reason (``empty file``,
            ``truncated (...)``, ...) that resume and select list beside skipped files; else None.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class ArgumentError(UserError):
    """A bad command-line argument of an offline tool (names the ``--option`` or the positional)."""


class DataError(UserError):
    """Data that cannot serve the request (an unlabelled split for a probe, different data sets)."""


class WriteError(UserError):
    """A file could not be written (no space left, quota, read-only file system); names the file and
    what was kept."""


class TrainingStopped(RuntimeError):
    """Training stopped on a non-finite loss; the message is one line naming the step and the last
    good checkpoint."""


class Preempted(Exception):
    """Training stopped on a signal (SIGTERM, SIGUSR1, SIGHUP, Ctrl-C) after saving a resumable checkpoint;
    the message is one line naming the step, the checkpoint and the command that resumes;
    ``exit_code`` is ``128 + signal`` (143 for SIGTERM) so schedulers see a killed job and requeue."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
