"""Thin script form of ``ssl-toolkit knn``: ``python tools/knn.py CKPT [--k 200] [data.KEY=VALUE ...]``."""

from __future__ import annotations

import sys

from ssl_toolkit.run.cli import main

if __name__ == "__main__":
    sys.exit(main(["knn", *sys.argv[1:]]))
