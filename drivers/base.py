"""The one interface every driver implements, and the sink it emits events into."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.model import Event


@dataclass
class DriverStats:
    """What a driver saw on its link; nothing a device sent disappears without being counted here."""

    notifications: int = 0  # frames received from the device and decoded (or rejected)
    invalid_frames: int = 0  # frames that failed decoding (logged, typed error)
    dropped_notifications: int = 0  # frames lost because the driver's queue was full


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
