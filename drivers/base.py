"""The one interface every driver implements, and the sink it emits events into."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from gateway.core.errors import DeviceError
from gateway.core.model import ConnectionState, DeviceStatus, Event, new_id, now_ns
from gateway.core.stats import DriverStats


class CommandRefused(DeviceError):
    """The device (or the driver, before sending) refused the command: certainly not executed."""


class OutcomeUnknown(DeviceError):
    """The command may or may not have been executed (e.g. the link dropped after sending)."""


def link_status(device_id: str, connection: ConnectionState, **fields: Any) -> DeviceStatus:
    """A DeviceStatus of a driver's link, now (fields: battery_pct, rssi_dbm, errors, detail)."""
    return DeviceStatus(new_id(), device_id, connection, now_ns(), **fields)


class EventSink(Protocol):
    """Where drivers put decoded events.  `emit` may wait: that wait is the backpressure."""

    async def emit(self, event: Event) -> None: ...

    def emit_nowait(self, event: Event) -> None:
        """For rare, must-not-block events (status on disconnect); never drops, never waits."""


def no_op() -> None:
    """The default `Driver.on_healthy`: a driver run outside a supervisor reports health to no one."""


class Driver(Protocol):
    """A connection to one device.  `run` returns or raises when the link ends; the supervisor restarts it.

    `on_healthy` is called each time the link is doing its job (connected and streaming); whoever supervises
    the driver sets it (the supervisor's `health_reporter`), so a driver never imports what supervises it.
    """

    device_id: str
    stats: DriverStats
    on_healthy: Callable[[], None]

    async def run(self, sink: EventSink) -> None: ...

    @property
    def command_target(self) -> CommandTarget | None:
        """What carries out verified commands on this device; None when the transport takes none."""
        ...


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


@dataclass(frozen=True)
class Settlement:
    """What a device's own history says about a command whose outcome was unknown.

    outcome: "delivered" (the device acted on it), "not-delivered" (its complete history since the command was
    sent has no trace of it) or "undecided" (anything less certain).  `reason` is safe to log (record kinds,
    counts and sequence numbers); `evidence` is the device's own record (ids, sequence numbers, amounts), for the
    audit log and the command result, never for logs.
    """

    outcome: Literal["delivered", "not-delivered", "undecided"]
    reason: str
    evidence: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class DeliveryHistory(CommandTarget, Protocol):
    """A command target whose device keeps its own record of what it delivered (an insulin pump's IDD History)."""

    def watch_connections(self, listener: Callable[[str], None]) -> None:
        """Call listener(device_id) each time the link to the device is ready (at every reconnection)."""
        ...

    async def history_position(self, timeout_s: float) -> int | None:
        """The sequence number the device's next history record will carry at the earliest, read now; None when
        the device keeps no such history or cannot say (the command can still be sent, only not settled later)."""
        ...

    async def settle_from_history(
        self, command_type: str, parameters: dict[str, int | str], since: int, timeout_s: float
    ) -> Settlement:
        """What the device's history from sequence number `since` on says about this command, sent after `since`
        was read.  Never raises for a device or link problem: that is an undecided settlement."""
        ...
