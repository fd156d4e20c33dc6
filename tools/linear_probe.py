"""Thin script form of ``ssl-toolkit probe``: ``python tools/linear_probe.py CKPT [data.KEY=VALUE ...]``."""

from __future__ import annotations

import sys

from ssl_toolkit.run.cli import main

if __name__ == "__main__":
    sys.exit(main(["probe", *sys.argv[1:]]))
