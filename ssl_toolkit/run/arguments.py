"""The argument parser of every command (``ssl-toolkit`` and the scripts in ``tools/``): a missing or
wrong argument is one line and exit status 2, like every other user error."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line, ``PROG: error: MESSAGE (see PROG
    --help)``, instead of the usage block and the message; ``--help`` is unchanged. Sub-parsers made
    with ``add_subparsers().add_parser`` are of the same class."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)
