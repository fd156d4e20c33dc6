"""Thin script form of ``ssl-toolkit select``: ``python tools/select_checkpoint.py RUN_DIR [...] [--with-labels]``.

Not ``tools/select.py``: scripts run from ``tools/`` have it first on ``sys.path``, so a file of
that name would shadow the standard library's ``select`` (imported by ``subprocess``) for all of them.
"""

from __future__ import annotations

import sys

from ssl_toolkit.run.cli import main

if __name__ == "__main__":
    sys.exit(main(["select", *sys.argv[1:]]))
