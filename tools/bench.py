"""Where the time of a recipe's training step goes on the current device (docs/benchmarking.md).

    .venv/bin/python tools/bench.py recipes/fashion_mnist/simclr.yaml [key=value ...] [--steps N] [--warmup N]
        [--json FILE] [--markdown FILE]

Same as ``ssl-toolkit bench``; the last line printed is JSON (backbone_img_s, step_img_s,
loader_img_s, overhead_ratio, ...).
"""

from __future__ import annotations

import sys

from ssl_toolkit.run.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
