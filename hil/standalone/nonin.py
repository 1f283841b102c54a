"""`hil sim nonin`: a Nonin OEM oximeter streaming data format #2 or #7 on a serial port, or on a new pty."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from drivers.serial.nonin import FRAMES_PER_PACKET
from hil.standalone.options import add_fault_options, add_serial_options, faults, serial_config

if TYPE_CHECKING:
    from hil.rig import SerialPortConfig
    from hil.serial_sim import Faults, NoninOximeter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        metavar="PATH",
        help="serial port (/dev/ttyUSB0) or pyserial URL (socket://HOST:PORT); default: a new pty, its path printed",
    )
    parser.add_argument("--format", type=int, choices=[2, 7], default=2, help="Nonin data format (default 2)")
    parser.add_argument("--spo2", type=int, default=97, help="SpO2 %% reported (default 97)")
    parser.add_argument("--pulse-rate", type=int, default=72, help="pulse rate reported, per minute (default 72)")
    add_serial_options(parser, baudrate=9600, parity="N")  # the OEM III module's serial format: 9600 8N1
    add_fault_options(parser)


class NoninSimulator:
    name = "nonin"

    def __init__(self, line: SerialPortConfig, data_format: int, spo2: int, pulse_rate: int, faults: Faults) -> None:
        self.line = line
        self.data_format = data_format
        self.spo2 = spo2
        self.pulse_rate = pulse_rate
        self.faults = faults
        self.where = line.path or "pty"
        self.oximeter: NoninOximeter | None = None

    async def run(self, announce: Callable[[str], None]) -> None:
        from drivers.serial.nonin import DataFormat  # noqa: PLC0415
        from hil.rig import open_serial  # noqa: PLC0415
        from hil.serial_sim import NoninOximeter  # noqa: PLC0415

        data_format = DataFormat.DF2 if self.data_format == 2 else DataFormat.DF7
        async with open_serial(self.line) as port:
            self.where = port.where
            self.oximeter = NoninOximeter(
                port,
                data_format=data_format,
                faults=self.faults,
                spo2=self.spo2,
                pulse_rate=self.pulse_rate,
                record_sent=False,  # counted, not kept: a rig runs for days
            )
            kind = "new pty" if self.line.path is None else "serial port"
            announce(f"Nonin data format #{self.data_format} on {kind} {port.where} ({port.settings})")
            announce(f'gateway device: address = "{port.where}", profile = "nonin_df{self.data_format}"')
            await self.oximeter.run()

    def summary(self) -> dict[str, Any]:
        packets = self.oximeter.packets if self.oximeter else 0
        return {
            "port": self.where,
            "settings": self.line.settings,
            "data_format": self.data_format,
            "packets_sent": packets,
            "frames_sent": packets * FRAMES_PER_PACKET,
            "intact_packets": self.oximeter.intact_packets if self.oximeter else 0,
        }

    def failure(self) -> str | None:
        return None


def build(args: argparse.Namespace) -> NoninSimulator:
    return NoninSimulator(serial_config(args, args.port), args.format, args.spo2, args.pulse_rate, faults(args))
