"""The GATT client interface the BLE driver uses, so the transport behind it can be swapped.

Production uses bleak; tests and HIL rigs plug in simulated peripherals through the same interface
(bleak's `backend=` idea, one level up), so the driver under test is the production driver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

NotifyCallback = Callable[[str, bytes], None]


class GattLink(Protocol):
    """A connection to one peripheral.  Methods raise gateway.errors.TransportError on link failure."""

    disconnected: asyncio.Event

    async def connect(self, timeout_s: float) -> None: ...

    async def disconnect(self) -> None: ...

    async def read(self, uuid: str) -> bytes: ...

    async def write(self, uuid: str, data: bytes, *, response: bool = True) -> None: ...

    async def start_notify(self, uuid: str, callback: NotifyCallback) -> None: ...

    def has_characteristic(self, uuid: str) -> bool: ...


GattLinkFactory = Callable[[str], GattLink]
