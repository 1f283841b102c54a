"""`iomt-gateway hil run`: being built (issue 19)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenarios", nargs="+")


def run(args: argparse.Namespace) -> int:
    print("iomt-gateway hil run: not built yet", file=sys.stderr)
    return 2
