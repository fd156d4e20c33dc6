"""Thin script form of ``ssl-toolkit fit``: ``python tools/train.py RECIPE [key=value ...]``."""

from __future__ import annotations

import sys

from ssl_toolkit.run.cli import main

if __name__ == "__main__":
    sys.exit(main(["fit", *sys.argv[1:]]))
