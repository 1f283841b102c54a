"""The Modbus device driver: poll a device's profile at a fixed rate, in the fewest requests it allows.

One driver, one connection, one task per configured device: a dead or slow device costs only its own task
(its timeouts never sit in front of another device's requests).  Polls run on a fixed-rate schedule (the
next poll is due one interval after the previous was *due*, not after it finished), so a healthy device's
interval does not drift; a poll that overruns skips the ticks it missed rather than bursting to catch up.

Per request: a Modbus exception response (illegal address, device busy, ...) costs that request's points
and is reported as a DeviceStatus error while it lasts; a timeout counts towards `max_failed_polls`, after
which the driver raises TransportError and the supervisor reconnects with backoff.  Writes (setpoints) are
commands: they arrive only through the verified command path (`CommandTarget`), are checked against the
profile's limits, written, and read back.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from drivers.base import CommandRefused, EventSink, OutcomeUnknown, link_status, no_op
from drivers.modbus.plan import Read, plan_reads
from drivers.modbus.profile import ModbusProfile, Point
from drivers.modbus.registers import decoder, encode_value, engineering_value, raw_value
from gateway.core.errors import ConfigError, TransportError
from gateway.core.logs import get_logger
from gateway.core.model import CONDITIONS_KEY, ConnectionState, Event, Observation, new_id, now_ns
from gateway.core.nomenclature import quantity
from gateway.core.stats import DriverStats

log = get_logger(__name__)
logging.getLogger("pymodbus").setLevel(logging.WARNING)  # its debug output dumps every frame

SHORT_RESPONSE = -1  # not a Modbus code: the answer had fewer registers than asked for
# Modbus exception codes that say the device did not act on a write (anything else: it may have).
_NOT_EXECUTED = {1: "illegal_function", 2: "illegal_data_address", 3: "illegal_data_value"}
_EXCEPTION_NAMES = {
    **_NOT_EXECUTED,
    4: "device_failure",
    5: "acknowledge",
    6: "device_busy",
    10: "gateway_path",
    11: "gateway_no_response",
    SHORT_RESPONSE: "short_response",
}

ClientFactory = Callable[[str, float], Any]


@dataclass
class PollStats:
    polls: int = 0
    requests: int = 0
    values: int = 0
    exceptions: int = 0
    timeouts: int = 0
    overruns: int = 0  # ticks skipped because a poll took longer than the interval


class RtuBus:
    """One RS-485 line: one pymodbus serial client shared by every unit on it, one request at a time.

    Units on a multi-drop line cannot talk at once, so their drivers share this bus's lock; a dead unit costs
    the line its timeout on each try until its driver gives up (`max_failed_polls`) and the supervisor backs it
    off.  Opened with the first unit, closed with the last.
    """

    def __init__(self, key: str, client: AsyncModbusSerialClient) -> None:
        self.key = key
        self.client = client
        self.lock = asyncio.Lock()
        self.users = 0

    @classmethod
    def handle(cls, key: str, make: Callable[[], AsyncModbusSerialClient]) -> RtuBusHandle:
        bus = _BUSES.get(key)
        if bus is None:
            bus = _BUSES[key] = cls(key, make())
        return RtuBusHandle(bus)


_BUSES: dict[str, RtuBus] = {}  # open RTU lines by device path


class RtuBusHandle:
    """One unit's view of a shared RTU bus: connect/close are reference-counted, requests go to the bus client."""

    def __init__(self, bus: RtuBus) -> None:
        self.bus = bus
        self.lock = bus.lock
        self._open = False

    @property
    def connected(self) -> bool:
        return bool(self.bus.client.connected)

    async def connect(self) -> bool:
        if not self._open:
            self._open = True
            self.bus.users += 1
        async with self.bus.lock:  # one unit opens the line; the others find it open
            return bool(self.bus.client.connected or await self.bus.client.connect())

    def close(self) -> None:
        if self._open:
            self._open = False
            self.bus.users -= 1
            if self.bus.users == 0:
                self.bus.client.close()
                _BUSES.pop(self.bus.key, None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus.client, name)  # read_holding_registers, write_registers, ...


def _reraise_if_cancelled() -> None:
    """A stop must stop: pymodbus can turn a cancellation inside a request into its own exception, or swallow it
    and answer normally, so after every request the driver checks whether its task is being cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _fault_aware(point: Point) -> Callable[[Sequence[int], int], float]:
    """The point's decoder, returning NaN when the raw value is one of the point's sensor-fault codes."""
    faults, width, decode = frozenset(point.fault_values), point.width, decoder(point)

    def decode_or_fault(words: Sequence[int], at: int) -> float:
        if raw_value(point, words[at : at + width]) in faults:
            return math.nan
        return decode(words, at)

    return decode_or_fault


def make_client(address: str, timeout_s: float) -> AsyncModbusTcpClient | RtuBusHandle:
    """A pymodbus client for `tcp://host:port`, or a handle on the shared bus of `rtu:///dev/ttyX?baudrate=...`."""
    url = urlsplit(address)
    if url.scheme == "tcp":
        if not url.hostname:
            raise ConfigError(f"Modbus address {address}: no host")
        return AsyncModbusTcpClient(url.hostname, port=url.port or 502, timeout=timeout_s, retries=0, reconnect_delay=0)
    if url.scheme == "rtu":
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}

        def serial_client() -> AsyncModbusSerialClient:
            return AsyncModbusSerialClient(
                url.path,
                timeout=timeout_s,
                retries=0,
                reconnect_delay=0,
                baudrate=int(query.get("baudrate", "19200")),
                parity=query.get("parity", "E"),
                stopbits=int(query.get("stopbits", "1")),
                bytesize=int(query.get("bytesize", "8")),
            )

        return RtuBus.handle(url.path, serial_client)
    raise ConfigError(f"Modbus address {address}: use tcp://HOST:PORT or rtu:///dev/PATH")


class ModbusDeviceDriver:
    """Polls one Modbus device (one unit id behind one address) according to its profile."""

    def __init__(
        self,
        device_id: str,
        address: str,
        profile: ModbusProfile,
        *,
        unit_id: int = 1,
        interval_s: float = 1.0,
        timeout_s: float = 0.5,
        max_failed_polls: int = 3,
        client_factory: ClientFactory = make_client,
    ) -> None:
        self.device_id = device_id
        self.address = address
        self.profile = profile
        self.unit_id = unit_id
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_failed_polls = max_failed_polls
        self.stats = DriverStats()
        self.on_healthy: Callable[[], None] = no_op  # set by whoever supervises this driver
        self.poll_stats = PollStats()
        self.poll_started: collections.deque[float] = collections.deque(maxlen=1000)  # loop time of each poll
        self.reads: list[Read] = plan_reads(profile, tuple(p for p in profile.points if p.quantity or p.status))
        # Per read, per reported point: (register index in the response, decoder, quantity, status flag).  A point
        # with sensor-fault codes reports its fault as the status flag sensor_fault.<name> when it reads one.
        self._layouts = [
            [
                (
                    p.address - read.start,
                    _fault_aware(p) if p.fault_values else decoder(p),
                    quantity(p.quantity) if p.quantity else None,
                    p.status or (f"sensor_fault.{p.name}" if p.fault_values else None),
                )
                for p in read.points
                if p.quantity or p.status
            ]
            for read in self.reads
        ]
        self._read_flags = [{status for _, _, _, status in layout if status} for layout in self._layouts]
        self._client_factory = client_factory
        self._client: Any = None
        self._lock = asyncio.Lock()  # one request at a time on the connection (polls and writes)
        self._flags: tuple[str, ...] | None = None
        # A device's own status flags carry the profile's priority; Modbus exception responses are low.
        self._priority = {p.status: p.priority for p in profile.points if p.status is not None}
        self._priority |= {f"sensor_fault.{p.name}": "medium" for p in profile.points if p.fault_values}

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    @property
    def command_target(self) -> ModbusDeviceDriver:
        """This driver carries out setpoint writes itself."""
        return self

    async def run(self, sink: EventSink) -> None:
        client = self._client_factory(self.address, self.timeout_s)
        sink.emit_nowait(link_status(self.device_id, ConnectionState.CONNECTING))
        reason = "link_lost"
        try:
            try:
                async with asyncio.timeout(max(self.timeout_s * 4, 2.0)):
                    connected = await client.connect()
            except (TimeoutError, OSError, ModbusException):
                connected = False
            _reraise_if_cancelled()
            if not connected:
                raise TransportError("Modbus connect failed", device_id=self.device_id)
            self._client = client
            self._lock = getattr(client, "lock", None) or self._lock  # units on one RTU line share its lock
            self._flags = None  # the first complete poll reports the conditions, whatever they were before
            await sink.emit(link_status(self.device_id, ConnectionState.CONNECTED))
            log.info("device connected", device_id=self.device_id, requests_per_poll=len(self.reads))
            await self._poll_forever(client, sink)
        except asyncio.CancelledError:
            reason = "stopped"
            raise
        finally:
            self._client = None
            client.close()
            sink.emit_nowait(link_status(self.device_id, ConnectionState.DISCONNECTED, detail={"reason": reason}))

    async def _poll_forever(self, client: Any, sink: EventSink) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        failed_in_row = 0
        while True:
            _reraise_if_cancelled()
            self.poll_started.append(loop.time())
            events, answered = await self._poll(client)
            for event in events:
                await sink.emit(event)
            if answered:
                failed_in_row = 0
                self.on_healthy()
            else:
                failed_in_row += 1
                if failed_in_row >= self.max_failed_polls:
                    raise TransportError("device not answering", device_id=self.device_id, polls=failed_in_row)
            due += self.interval_s
            now = loop.time()
            if now > due:
                missed = int((now - due) // self.interval_s) + 1
                self.poll_stats.overruns += missed
                due += missed * self.interval_s
            await asyncio.sleep(due - now)

    async def _poll(self, client: Any) -> tuple[list[Event], bool]:
        """One poll: every planned read.  Returns the events and whether the device answered at all."""
        stats = self.poll_stats
        stats.polls += 1
        poll_time = now_ns()
        base = new_id()[:28]
        events: list[Event] = []
        flags: list[str] = []
        answered = False
        complete = True  # every read answered with data: only then is the set of conditions known
        index = 0
        for read_index, read in enumerate(self.reads):
            stats.requests += 1
            words = await self._read(client, read)
            if words is None:
                complete = False
                continue
            answered = True
            if isinstance(words, int):  # a Modbus exception response: the device answered "no"
                flags.append(f"modbus_exception_{_EXCEPTION_NAMES.get(words, words)}")
                if any(status for _, _, _, status in self._layouts[read_index]):
                    # Its status flags are unknown this poll: keep the ones reported last (no alarm flapping).
                    flags.extend(f for f in (self._flags or ()) if f in self._read_flags[read_index])
                continue
            for at, decode, q, status in self._layouts[read_index]:
                value = decode(words, at)
                if status is not None and q is None:
                    if value:
                        flags.append(status)
                    continue
                if q is None:
                    continue
                if status is not None and math.isnan(value):  # a sensor-fault code: a condition, not a value
                    flags.append(status)
                    continue
                index += 1
                events.append(Observation(f"{base}{index:04x}", self.device_id, q, value, None, poll_time))
        stats.values += len(events)
        self.stats.notifications += len(self.reads)
        flag_tuple = tuple(sorted(set(flags)))
        if answered and complete and flag_tuple != self._flags:
            self._flags = flag_tuple
            detail = {CONDITIONS_KEY: "complete", **{f"priority.{f}": self._priority.get(f, "low") for f in flag_tuple}}
            events.append(link_status(self.device_id, ConnectionState.CONNECTED, errors=flag_tuple, detail=detail))
            if flag_tuple:
                log.warning("device reports a problem", device_id=self.device_id, conditions=",".join(flag_tuple))
        return events, answered

    async def _read(self, client: Any, read: Read) -> Sequence[int] | int | None:
        """Registers (or bits as 0/1) of one read; the exception code for an exception response; None on timeout."""
        call: Callable[..., Awaitable[ModbusPDU]] = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }[read.table]
        try:
            async with self._lock, asyncio.timeout(self.timeout_s):
                response = await call(read.start, count=read.count, device_id=self.unit_id)
        except (TimeoutError, ModbusException) as err:
            _reraise_if_cancelled()
            if not client.connected:
                raise TransportError("Modbus connection lost", device_id=self.device_id) from err
            self.poll_stats.timeouts += 1
            return None
        _reraise_if_cancelled()  # pymodbus may also swallow a cancellation and answer normally
        if response.isError():
            self.poll_stats.exceptions += 1
            self.stats.invalid_frames += 1
            return int(getattr(response, "exception_code", 0))
        if read.table in ("coil", "discrete"):
            return [1 if b else 0 for b in response.bits[: read.count]]
        registers: Sequence[int] = response.registers
        if len(registers) < read.count:
            self.stats.invalid_frames += 1
            log.warning("short Modbus response", device_id=self.device_id, got=len(registers), expected=read.count)
            return SHORT_RESPONSE
        return registers

    # -- commands: setpoint writes -----------------------------------------------------------------------------
    def _writable(self, command_type: str, parameters: dict[str, int | str]) -> tuple[Point, float, list[int]]:
        if command_type != "set_point":
            raise CommandRefused(f"command type {command_type} not supported by this device; nothing was sent")
        name, milli = parameters.get("point"), parameters.get("value_milli")
        if not isinstance(name, str) or not isinstance(milli, int):
            raise CommandRefused("set_point needs point (name) and value_milli (integer); nothing was sent")
        try:
            point = self.profile.point(name)
        except KeyError:
            raise CommandRefused(f"no point {name} in the device profile; nothing was sent") from None
        value = milli / 1000
        if not point.writable or point.min is None or point.max is None:
            raise CommandRefused(f"point {name} is not writable; nothing was sent")
        if not point.min <= value <= point.max:
            raise CommandRefused(f"value outside the point's limits [{point.min}, {point.max}]; nothing was sent")
        try:
            words = encode_value(point, value)
        except ValueError as err:
            raise CommandRefused(f"value not representable by the register ({err}); nothing was sent") from None
        return point, value, words

    def validate(self, command_type: str, parameters: dict[str, int | str]) -> None:
        self._writable(command_type, parameters)

    async def execute(self, command_type: str, parameters: dict[str, int | str], timeout_s: float) -> dict[str, str]:
        """Write the setpoint, then read it back: the read-back value is the command's outcome."""
        point, value, words = self._writable(command_type, parameters)
        client = self._client
        if client is None or not client.connected:
            raise CommandRefused("device not connected; nothing was sent")
        try:
            async with self._lock, asyncio.timeout(timeout_s):
                if point.table == "coil":
                    response = await client.write_coil(point.address, bool(words[0]), device_id=self.unit_id)
                else:
                    response = await client.write_registers(point.address, words, device_id=self.unit_id)
                if response.isError():
                    code = int(getattr(response, "exception_code", 0))
                    if code in _NOT_EXECUTED:
                        raise CommandRefused(f"device refused the write: {_NOT_EXECUTED[code]}")
                    raise OutcomeUnknown(f"device answered exception {code}: the write may have happened")
                read = Read(point.table, point.address, point.width, (point,))
                words_back = await self._read_unlocked(client, read)
        except (TimeoutError, ModbusException):
            _reraise_if_cancelled()
            raise OutcomeUnknown("no answer to the write in time: it may have happened") from None
        _reraise_if_cancelled()
        if words_back is None or isinstance(words_back, int):
            raise OutcomeUnknown("the write was acknowledged but could not be read back")
        back = engineering_value(point, words_back)
        if abs(back - value) > abs(point.scale) / 2:
            raise OutcomeUnknown(f"read back {back}, not the value written")
        return {"point": point.name, "value": repr(back)}

    async def _read_unlocked(self, client: Any, read: Read) -> Sequence[int] | int | None:
        call = client.read_coils if read.table == "coil" else client.read_holding_registers
        response = await call(read.start, count=read.count, device_id=self.unit_id)
        if response.isError():
            return int(getattr(response, "exception_code", 0))
        if read.table == "coil":
            return [1 if b else 0 for b in response.bits[: read.count]]
        return list(response.registers)
