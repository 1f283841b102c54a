"""Command-line options the standalone simulators share: a serial line's settings and the fault switches."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hil.rig import SerialPortConfig
    from hil.serial_sim import Faults


def add_serial_options(parser: argparse.ArgumentParser, *, baudrate: int, parity: str) -> None:
    line = parser.add_argument_group("serial line")
    line.add_argument("--baudrate", type=int, default=baudrate, help=f"(default {baudrate})")
    line.add_argument("--bytesize", type=int, choices=[5, 6, 7, 8], default=8, help="data bits (default 8)")
    line.add_argument("--parity", choices=["N", "E", "O", "M", "S"], default=parity, help=f"(default {parity})")
    line.add_argument("--stopbits", type=float, choices=[1, 1.5, 2], default=1, help="(default 1)")
    line.add_argument("--rtscts", action="store_true", help="RTS/CTS hardware flow control")


def serial_config(args: argparse.Namespace, path: str | None) -> SerialPortConfig:
    """The serial line the options describe, on `path` (None: a new pty)."""
    from hil.rig import SerialPortConfig, validated  # noqa: PLC0415

    return validated(
        "serial line",
        SerialPortConfig,
        {
            "path": path,
            "baudrate": args.baudrate,
            "bytesize": args.bytesize,
            "parity": args.parity,
            "stopbits": args.stopbits,
            "rtscts": args.rtscts,
        },
    )


def add_fault_options(parser: argparse.ArgumentParser) -> None:
    faults = parser.add_argument_group("faults")
    faults.add_argument(
        "--garbage-every", type=int, default=0, metavar="N", help="random bytes before every N-th frame"
    )
    faults.add_argument("--truncate-every", type=int, default=0, metavar="N", help="every N-th frame cut short")
    faults.add_argument("--corrupt-every", type=int, default=0, metavar="N", help="a bad checksum/trailer every N-th")


def faults(args: argparse.Namespace) -> Faults:
    from hil.serial_sim import Faults  # noqa: PLC0415

    return Faults(
        garbage_every=args.garbage_every, truncate_every=args.truncate_every, corrupt_every=args.corrupt_every
    )
