"""`iomt-gateway hil sim`: being built (issue 19)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("simulator", choices=["ble", "hl7", "nonin", "modbus", "dicom"])


def run(args: argparse.Namespace) -> int:
    print("iomt-gateway hil sim: not built yet", file=sys.stderr)
    return 2
