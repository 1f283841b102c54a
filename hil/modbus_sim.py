"""Simulated Modbus devices on a real pymodbus server (TCP), with fault injection.

Each `SimModbusDevice` is one unit id with a profile (drivers.modbus.profile): its values come from a model
function of time, encoded into the registers exactly as the profile says (type, word and byte order, scale,
offset), so the gateway's driver decodes real register images.  Writes to writable points update the model.

Faults per device: `dead` (the unit never answers), `slow_s` (each answer delayed),
`exception` (answer every read with that Modbus exception code).  `MedicationFridge` is a refrigerator that
drifts around its setpoint and warms up while its door is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus.profile import ModbusProfile, Point, load_profile
from drivers.modbus.registers import encode_value, engineering_value

_FUNCTION_TABLE = {
    1: "coil",
    2: "discrete",
    3: "holding",
    4: "input",
    5: "coil",
    6: "holding",
    15: "coil",
    16: "holding",
}


@dataclass
class SimModbusDevice:
    """One unit on the bus: a profile, the value of each point as a function of elapsed seconds, and faults."""

    unit_id: int
    profile: ModbusProfile
    values: dict[str, Callable[[float], float]] = field(default_factory=dict)
    dead: bool = False
    slow_s: float = 0.0
    exception: int | None = None
    reads: int = 0
    writes: list[tuple[str, float]] = field(default_factory=list)
    _t0: float = field(default_factory=time.monotonic)
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    def value(self, point: Point) -> float:
        model = self.values.get(point.name)
        return model(time.monotonic() - self._t0) if model is not None else 0.0

    def _table_size(self, table: str) -> int:
        ends = [p.address + p.width for p in self.profile.points if p.table == table]
        return max(ends, default=0) + 8

    def sim_device(self) -> SimDevice:
        def block(table: str, bits: bool) -> list[SimData]:
            datatype = DataType.BITS if bits else DataType.REGISTERS
            return [SimData(0, count=self._table_size(table), values=False if bits else 0, datatype=datatype)]

        return SimDevice(
            id=self.unit_id,
            simdata=(block("coil", True), block("discrete", True), block("holding", False), block("input", False)),
            action=self._action,
        )

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self.dead:
            await self._released.wait()  # never answers (a unit that is off or unplugged) until the server stops
            return ExcCodes.DEVICE_FAILURE
        if self.slow_s:
            await asyncio.sleep(self.slow_s)
        if self.exception is not None:
            return ExcCodes(self.exception)
        table = _FUNCTION_TABLE.get(function_code)
        if set_values is not None and table is not None:
            self._written(table, address, [int(v) for v in set_values])
            return None
        self.reads += 1
        for point in self.profile.points:
            if point.table != table:
                continue
            words = encode_value(point, self._representable(point, self.value(point)))
            for i, word in enumerate(words):
                index = point.address + i - start_address
                if 0 <= index < len(current_registers):
                    current_registers[index] = word
        return None

    @staticmethod
    def _representable(point: Point, value: float) -> float:
        if point.type in ("float32", "bool"):
            return value
        steps = round((value - point.offset) / point.scale)
        return steps * point.scale + point.offset

    def _written(self, table: str, address: int, words: list[int]) -> None:
        for point in self.profile.points:
            if point.table == table and point.address == address and point.writable:
                value = engineering_value(point, words[: point.width])
                self.writes.append((point.name, value))
                self.values[point.name] = _constant(value)


def _constant(value: float) -> Callable[[float], float]:
    return lambda _t: value


class MedicationFridge(SimModbusDevice):
    """A medication refrigerator: cabinet temperature follows its setpoint, and warms while the door is open."""

    def __init__(self, unit_id: int = 1, setpoint_c: float = 5.0) -> None:
        super().__init__(unit_id, load_profile("medication_fridge"))
        self.door_open_at: float | None = None
        self.values.update(
            {
                "setpoint": lambda _t: setpoint_c,
                "cabinet_temperature": self._cabinet,
                "battery_charge": lambda _t: 100.0,
                "door_open": lambda _t: 1.0 if self.door_open_at is not None else 0.0,
                "temperature_alarm": lambda t: 1.0 if not 2.0 <= self._cabinet(t) <= 8.0 else 0.0,
                "mains_power_lost": lambda _t: 0.0,
            }
        )

    def _cabinet(self, t: float) -> float:
        setpoint = self.values["setpoint"](t)
        warming = 0.0 if self.door_open_at is None else min(10.0, 0.5 * (time.monotonic() - self.door_open_at))
        return setpoint + 0.3 * math.sin(t / 20.0) + warming


class ModbusSimServer:
    """A pymodbus TCP server on loopback hosting simulated units."""

    def __init__(self, devices: Sequence[SimModbusDevice], port: int = 0, host: str = "127.0.0.1") -> None:
        self.devices = devices
        self.host = host
        self.port = port
        self._server: ModbusTcpServer | None = None

    async def start(self) -> None:
        if not self.port:
            self.port = _free_port(self.host)
        for device in self.devices:
            device._released.clear()  # started again after a stop: the units answer again
        units = [d.sim_device() for d in self.devices]
        self._server = ModbusTcpServer(units, address=(self.host, self.port))
        await self._server.serve_forever(background=True)

    async def stop(self) -> None:
        for device in self.devices:
            device._released.set()  # the server owns its units' life cycle
        await asyncio.sleep(0.05)
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    async def __aenter__(self) -> ModbusSimServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    @property
    def address(self) -> str:
        return f"tcp://{self.host}:{self.port}"


class ModbusRtuSimServer:
    """A pymodbus RTU server on a serial device (e.g. one end of hil.serial_sim.NullModem): a multi-drop line."""

    def __init__(self, devices: Sequence[SimModbusDevice], path: str, baudrate: int = 19200, parity: str = "N") -> None:
        self.devices = devices
        self.path = path
        self.baudrate = baudrate
        self.parity = parity  # ptys refuse parity settings; a real RS-485 line usually runs even parity
        self._server: ModbusSerialServer | None = None

    async def __aenter__(self) -> ModbusRtuSimServer:
        units = [d.sim_device() for d in self.devices]
        self._server = ModbusSerialServer(units, port=self.path, baudrate=self.baudrate, parity=self.parity)
        await self._server.serve_forever(background=True)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for device in self.devices:
            device._released.set()
        await asyncio.sleep(0.05)
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]


def _free_port(host: str) -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wave_values(profile: ModbusProfile) -> dict[str, Callable[[float], float]]:
    """A slow sine per quantity point (each at its own phase), for a device that only has to produce values."""
    values: dict[str, Callable[[float], float]] = {}
    for index, point in enumerate(profile.points):
        if point.quantity is not None:
            values[point.name] = _wave(20.0 + index % 10, index)
    return values


def _wave(mean: float, phase: int) -> Callable[[float], float]:
    return lambda t: mean + 2.0 * math.sin(t / 5.0 + phase)


async def _serve(profile_name: str, port: int, unit_id: int) -> None:
    profile = load_profile(profile_name)
    device = SimModbusDevice(unit_id, profile, wave_values(profile))
    async with ModbusSimServer([device], port=port):
        await asyncio.Event().wait()


def main() -> None:
    """`python -m hil.modbus_sim --profile NAME --port N`: serve one simulated unit until killed."""
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="medication_fridge")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--unit", type=int, default=1)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.profile, args.port, args.unit))


if __name__ == "__main__":
    main()
