"""The one interface every driver implements, and the sink it emits events into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from gateway.errors import DeviceError
from gateway.model import ConnectionState, DeviceStatus, Event, new_id, now_ns


class CommandRefused(DeviceError):
    """The device (or the driver, before sending) refused the command: certainly not executed."""


class OutcomeUnknown(DeviceError):
    """The command may or may not have been executed (e.g. the link dropped after sending)."""


@dataclass
class DriverStats:
    """What a driver saw on its link; nothing a device sent disappears without being counted here."""

    notifications: int = 0  # frames received from the device and decoded (or rejected)
    invalid_frames: int = 0  # frames that failed decoding (logged, typed error)
    dropped_notifications: int = 0  # frames lost because the driver's queue was full
    unmapped_codes: dict[str, int] = field(default_factory=dict)  # observations with codes the gateway does not map


def link_status(device_id: str, connection: ConnectionState, **fields: Any) -> DeviceStatus:
    """A DeviceStatus of a driver's link, now (fields: battery_pct, rssi_dbm, errors, detail)."""
    return DeviceStatus(new_id(), device_id, connection, now_ns(), **fields)


class EventSink(Protocol):
    """Where drivers put decoded events.  `emit` may wait: that wait is the backpressure."""

    async def emit(self, event: Event) -> None: ...

    def emit_nowait(self, event: Event) -> None:
        """For rare, must-not-block events (status on disconnect); never drops, never waits."""


class Driver(Protocol):
    """A connection to one device.  `run` returns or raises when the link ends; the supervisor restarts it."""

    device_id: str
    stats: DriverStats

    async def run(self, sink: EventSink) -> None: ...


@runtime_checkable
class CommandTarget(Protocol):
    """A driver that can execute verified commands on its device."""

    device_id: str

    @property
    def connected(self) -> bool: ...

    def validate(self, command_type: str, parameters: dict[str, int | str]) -> None:
        """Raise CommandRefused if the device could not carry out this command exactly (nothing is sent)."""
        ...

    async def execute(self, command_type: str, parameters: dict[str, int | str], timeout_s: float) -> dict[str, str]:
        """Run a command; details on confirmation.  Raises CommandRefused or OutcomeUnknown."""
        ...
