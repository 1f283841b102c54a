"""`hil sim modbus`: medication fridges (config/modbus/medication_fridge.toml) as a Modbus TCP server, or as RTU
units on a serial line (an RS-485 adapter, or a new pty pair whose gateway end is printed)."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hil.standalone.options import add_serial_options, serial_config

if TYPE_CHECKING:
    from hil.modbus_sim import MedicationFridge
    from hil.rig import ModbusAddress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen", metavar="HOST:PORT", help="Modbus TCP: listen there (0.0.0.0:5020, every interface)")
    where.add_argument("--port", metavar="PATH", help="Modbus RTU on this serial port (a USB-RS485 adapter)")
    where.add_argument("--pty", action="store_true", help="Modbus RTU on a new pty pair; the gateway's end is printed")
    parser.add_argument(
        "--unit", type=int, action="append", metavar="ID", help="a fridge's unit id (repeatable; default 1)"
    )
    parser.add_argument("--setpoint", type=float, default=5.0, metavar="C", help="cabinet setpoint (default 5.0 °C)")
    parser.add_argument("--door-open-after", type=float, metavar="S", help="open every fridge's door after S seconds")
    parser.add_argument("--door-open-for", type=float, default=30.0, metavar="S", help="and close it after S (30)")
    add_serial_options(parser, baudrate=19200, parity="E")  # the usual RS-485 Modbus line: 19200 8E1


class ModbusSimulator:
    name = "modbus"

    def __init__(
        self, address: ModbusAddress, units: list[int], setpoint_c: float, door: tuple[float, float] | None
    ) -> None:
        from hil.modbus_sim import MedicationFridge  # noqa: PLC0415

        self.address = address
        self.fridges: list[MedicationFridge] = [MedicationFridge(unit_id=u, setpoint_c=setpoint_c) for u in units]
        self.door = door
        self.door_openings = 0
        self.where = ""
        self.gateway_address = ""

    async def run(self, announce: Callable[[str], None]) -> None:
        from hil.rig import ModbusTcpAddress, serve_modbus  # noqa: PLC0415

        async with serve_modbus(self.address, self.fridges) as serving:
            self.where, self.gateway_address = serving.where, serving.gateway_address
            units = ", ".join(str(f.unit_id) for f in self.fridges)
            kind = "Modbus TCP" if isinstance(self.address, ModbusTcpAddress) else "Modbus RTU"
            announce(f"medication fridge unit(s) {units} on {kind} {serving.where}")
            announce(f'gateway device: address = "{serving.gateway_address}", profile = "medication_fridge"')
            await self._door_schedule(announce)

    async def _door_schedule(self, announce: Callable[[str], None]) -> None:
        if self.door is None:
            await asyncio.Event().wait()
            return
        after_s, for_s = self.door
        await asyncio.sleep(after_s)
        for fridge in self.fridges:
            fridge.door_open_at = time.monotonic()  # the fridge's own clock
        self.door_openings += 1
        announce("doors open")
        await asyncio.sleep(for_s)
        for fridge in self.fridges:
            fridge.door_open_at = None
        announce("doors closed")
        await asyncio.Event().wait()

    def summary(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "gateway_address": self.gateway_address,
            "units": [
                {
                    "unit_id": f.unit_id,
                    "reads": f.reads,
                    "writes": [{"point": point, "value": value} for point, value in f.writes],
                }
                for f in self.fridges
            ],
            "reads": sum(f.reads for f in self.fridges),
            "door_openings": self.door_openings,
        }

    def failure(self) -> str | None:
        return None


def build(args: argparse.Namespace) -> ModbusSimulator:
    from gateway.core.errors import ConfigError  # noqa: PLC0415
    from hil.rig import ModbusRtuAddress, ModbusTcpAddress, validated  # noqa: PLC0415

    units: list[int] = args.unit or [1]
    if len(set(units)) != len(units) or not all(1 <= u <= 247 for u in units):
        raise ConfigError("--unit: distinct unit ids from 1 to 247")
    address: ModbusAddress
    if args.listen:
        host, _, port = str(args.listen).rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--listen {args.listen!r}: use HOST:PORT, e.g. 0.0.0.0:5020")
        address = validated("Modbus TCP address", ModbusTcpAddress, {"host": host.strip("[]"), "port": int(port)})
    else:
        address = ModbusRtuAddress(serial=serial_config(args, None if args.pty else args.port))
    door = None
    if args.door_open_after is not None:
        if args.door_open_after < 0 or not args.door_open_for > 0:
            raise ConfigError("--door-open-after must be 0 or more, --door-open-for more than 0")
        door = (args.door_open_after, args.door_open_for)
    return ModbusSimulator(address, units, args.setpoint, door)
