"""The one interface every driver implements, and the sink it emits events into."""

from __future__ import annotations

from typing import Protocol

from gateway.model import Event


class EventSink(Protocol):
    """Where drivers put decoded events.  `emit` may wait: that wait is the backpressure."""

    async def emit(self, event: Event) -> None: ...

    def emit_nowait(self, event: Event) -> None:
        """For rare, must-not-block events (status on disconnect); never drops, never waits."""


class Driver(Protocol):
    """A connection to one device.  `run` returns or raises when the link ends; the supervisor restarts it."""

    device_id: str

    async def run(self, sink: EventSink) -> None: ...
